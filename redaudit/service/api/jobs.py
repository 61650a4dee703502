"""Submitting scans, checks and prunes as jobs; job status, cancel, and results.

A request is validated completely before a job row exists: the model and inputs must be stored
blobs of the right kind and the options must make a valid ``ScanSpec`` — so a bad request is a
4xx with one message and leaves no job behind.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from redaudit.core.spec import ScanSpec
from redaudit.errors import ConfigError
from redaudit.prune.heal import HEAL_METHODS
from redaudit.prune.policies import POLICIES
from redaudit.service.api.deps import Caller, caller, get_state, require_read, require_write
from redaudit.service.models import SUCCEEDED
from redaudit.service import history_io
from redaudit.service.state import ServiceState

router = APIRouter(tags=["jobs"])
SHA256 = r"^[0-9a-f]{64}$"


class JobRequest(BaseModel):
    model: str = Field(min_length=1, max_length=200, pattern=r"^\S", description="model name in the history")
    blob: str = Field(pattern=SHA256, description="sha256 of an uploaded model or bundle")
    label: str | None = Field(None, min_length=1, max_length=200, description="version label, e.g. a git tag")
    inputs: str | None = Field(None, pattern=SHA256, description="sha256 of uploaded .npz probe inputs")
    spec: dict[str, Any] = Field(default_factory=dict, description="ScanSpec options (level, samples, ...)")
    record: bool = Field(True, description="record the scan in the history")
    queue: Literal["cpu", "gpu"] | None = Field(None, description="default: gpu when spec.device is cuda")
    parent: str | None = Field(None, min_length=3, max_length=401, pattern=r"^[^@]+@[^@]+$",
                               description="NAME@LABEL of the recorded version this model was derived from "
                                           "(pruned, distilled, fine-tuned): recorded as its parent (lineage)")


class CheckRequest(JobRequest):
    max_msrs: float | None = Field(None, ge=0, description="fail above this MSRS")
    max_increase: float | None = Field(None, ge=0, description="fail above this % over the latest comparable scan")
    significant: bool = Field(False, description="with max_increase: fail only when the 95% bootstrap interval "
                                                 "of the increase lies above it (beyond batch noise)")
    any_probe: bool = Field(False, description="with max_increase: the baseline may have used other probe inputs "
                                               "or samples (default: only a scan on the same probe)")


class PruneRequest(JobRequest):
    list_only: bool = Field(False, description="only rank removable blocks")
    remove: int | None = Field(None, ge=1, le=10_000)
    target_params: float | None = Field(None, gt=0, le=100)
    max_drift: float | None = Field(None, ge=0, le=2)
    blocks: list[str] | None = None
    iterative: bool = False
    min_cosine: float | None = Field(None, ge=-1, le=1, description="the output cosine a pruned model must keep "
                                     "against the original (default: prune's, 0.9)")
    force: bool = Field(False, description="write and record the pruned model even below min_cosine")
    policy: Literal[tuple(POLICIES)] | None = Field(  # type: ignore[valid-type]
        None, description="how blocks are chosen (default: prune's, bi — never worse than cka in docs/prune.md)")
    heal: Literal[tuple(HEAL_METHODS)] | None = Field(  # type: ignore[valid-type]
        None, description="put a fitted map in place of each removed span, calibrated on the probe inputs "
                          "(default: prune's, none; attention: also mixing tokens through the upstream "
                          "attention; transformers)")


class JobOut(BaseModel):
    id: str
    kind: str
    state: str
    queue: str
    model_name: str
    label: str | None
    blob_sha256: str
    inputs_sha256: str | None
    options: dict[str, Any]
    record: bool
    progress_stage: str | None
    progress_done: int
    progress_total: int | None
    attempts: int
    worker: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    scan_id: int | None
    outcome: dict[str, Any] | None
    output_sha256: str | None
    token_id: int | None = Field(description="the token that submitted the job (see GET /tokens, admin)")
    spec: dict[str, Any]


def _out(view: dict[str, Any]) -> JobOut:
    import json

    return JobOut(**{**view, "spec": json.loads(view["spec"])})


def _submit(state: ServiceState, request: JobRequest, kind: str, options: dict, token) -> JobOut:
    blob = state.jobs.blob(request.blob)
    if blob is None or blob.kind not in ("model", "bundle", "pruned"):
        raise HTTPException(404, f"no uploaded model with sha256 {request.blob}; upload it to /uploads/model first")
    if request.inputs is not None:
        inputs = state.jobs.blob(request.inputs)
        if inputs is None or inputs.kind != "inputs":
            raise HTTPException(404, f"no uploaded inputs with sha256 {request.inputs}; upload them to "
                                     "/uploads/inputs first")
    if "inputs" in request.spec:
        raise ConfigError("give probe inputs as the 'inputs' field (an uploaded .npz's sha256), not in spec")
    if request.spec.get("text") is not None or request.spec.get("tokenizer") is not None:  # server-side paths
        raise ConfigError("text and tokenizer are paths on the client; tokenize the text and upload the token "
                          "ids as an .npz to /uploads/inputs")
    spec = ScanSpec.from_dict(request.spec)
    if request.parent is not None:
        if kind == "prune":
            raise ConfigError("a prune records its own lineage (the pruned model under this one); leave parent out")
        options = {**options, "parent_sha256": history_io.parent_sha256(state.engine, request.parent)}
    queue = request.queue or ("gpu" if spec.device == "cuda" else "cpu")
    job_id = state.jobs.submit(kind=kind, queue=queue, model_name=request.model, label=request.label,
                               blob_sha256=request.blob, inputs_sha256=request.inputs,
                               spec_json=spec.to_json(), options=options, record=request.record,
                               token_id=token.id if token is not None else None)
    state.dispatch(job_id, queue)
    return _out(state.jobs.get(job_id))


@router.post("/scans", status_code=202, response_model=JobOut, summary="Queue a scan of an uploaded model")
def submit_scan(request: JobRequest, state: ServiceState = Depends(get_state),
                token=Depends(require_write)) -> JobOut:
    return _submit(state, request, "scan", {}, token)


@router.post("/checks", status_code=202, response_model=JobOut,
             summary="Queue a check: scan, then gate MSRS (absolute and/or vs the latest comparable scan)")
def submit_check(request: CheckRequest, state: ServiceState = Depends(get_state),
                 token=Depends(require_write)) -> JobOut:
    if request.max_msrs is None and request.max_increase is None:
        raise ConfigError("a check needs max_msrs and/or max_increase")
    if request.significant and request.max_increase is None:
        raise ConfigError("significant qualifies an increase: give max_increase with it")
    options = {"max_msrs": request.max_msrs, "max_increase": request.max_increase}
    if request.any_probe and request.max_increase is None:
        raise ConfigError("any_probe qualifies the baseline of an increase: give max_increase with it")
    if request.significant:  # absent otherwise: jobs queued before the option read the same
        options["significant"] = True
    if request.any_probe:
        options["any_probe"] = True
    return _submit(state, request, "check", options, token)


@router.post("/prunes", status_code=202, response_model=JobOut,
             summary="Queue a prune: list candidates, or remove blocks (verified; recorded as a child version)")
def submit_prune(request: PruneRequest, state: ServiceState = Depends(get_state),
                 token=Depends(require_write)) -> JobOut:
    if not request.list_only and request.remove is None and request.target_params is None \
            and request.max_drift is None and not request.blocks:
        raise ConfigError("a prune needs list_only, or remove, target_params, max_drift or blocks")
    options = request.model_dump(include={"list_only", "remove", "target_params", "max_drift", "blocks",
                                          "iterative", "policy", "heal", "min_cosine"}, exclude_none=True)
    if request.force:  # absent otherwise: jobs queued before the field read the same
        options["force"] = True
    return _submit(state, request, "prune", options, token)


@router.get("/jobs", response_model=list[JobOut], summary="Jobs, newest first")
async def list_jobs(state_: str | None = Query(None, alias="state",
                                              pattern="^(queued|running|succeeded|failed|cancelled)$"),
                    model: str | None = Query(None, max_length=200), limit: int = Query(100, ge=1, le=1000),
                    state: ServiceState = Depends(get_state), who: Caller = Depends(caller)) -> list[JobOut]:
    def read() -> list[JobOut]:
        who.authorize(state, "read")
        return [_out(view) for view in state.jobs.list(state=state_, model_name=model, limit=limit)]
    return await run_in_threadpool(read)


def _job(state: ServiceState, job_id: str) -> dict[str, Any]:
    view = state.jobs.get(job_id) if len(job_id) <= 32 else None
    if view is None:
        raise HTTPException(404, f"no job {job_id[:40]!r}")
    return view


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job's state and progress")
async def get_job(job_id: str, state: ServiceState = Depends(get_state), who: Caller = Depends(caller)) -> JobOut:
    # The path clients poll. Async, with the token check and the read as its one trip to the
    # thread pool: a sync auth dependency is a trip of its own, and FastAPI validates a sync
    # endpoint's response in the pool too — each trip a wait for a free thread under load.
    def read() -> JobOut:
        who.authorize(state, "read")
        return _out(_job(state, job_id))
    return await run_in_threadpool(read)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut,
             summary="Cancel a queued job, or ask a running one to stop at its next batch (its submitter or admin)")
def cancel_job(job_id: str, state: ServiceState = Depends(get_state), token=Depends(require_write)) -> JobOut:
    job = _job(state, job_id)
    if job["token_id"] != token.id and not token.allows("admin"):
        raise HTTPException(403, f"job {job_id} was submitted with another token; only that token or an "
                                 "admin token may cancel it")
    state.jobs.cancel(job_id)
    return _out(_job(state, job_id))


def _result(state: ServiceState, job_id: str):
    view = _job(state, job_id)
    if view["state"] != SUCCEEDED:
        raise HTTPException(409, f"job {job_id} is {view['state']}; results exist once it has succeeded")
    text = state.jobs.result(job_id)
    if text is None:
        raise HTTPException(404, f"job {job_id} produced no scan (a prune --list job): see its outcome")
    return text


@router.get("/jobs/{job_id}/result", summary="The scan's JSON report (as `redaudit scan --json` writes it)",
            responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}})
def job_result(job_id: str, state: ServiceState = Depends(get_state), _token=Depends(require_read)) -> Response:
    return Response(_result(state, job_id), media_type="application/json")


def _scan_result(state: ServiceState, job_id: str):
    import json

    from redaudit.report.json_report import scan_from_dict

    return scan_from_dict(json.loads(_result(state, job_id)))


@router.get("/jobs/{job_id}/heatmap.png", summary="The similarity heatmap",
            responses={200: {"content": {"image/png": {}}}}, response_class=Response)
def job_heatmap(job_id: str, state: ServiceState = Depends(get_state), _token=Depends(require_read)) -> Response:
    from redaudit.report.heatmap import default_title, heatmap_png_bytes

    result = _scan_result(state, job_id)
    png = heatmap_png_bytes(result.similarity, result.layer_names, default_title(result))
    return Response(png, media_type="image/png")


@router.get("/jobs/{job_id}/report.html", response_class=Response, summary="The HTML report",
            responses={200: {"content": {"text/html": {}}}})
def job_report(job_id: str, state: ServiceState = Depends(get_state), _token=Depends(require_read)) -> HTMLResponse:
    from redaudit.report.html import render_html

    return HTMLResponse(render_html(_scan_result(state, job_id)))
