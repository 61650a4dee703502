"""Run one claimed job: fetch its blobs, scan / check / prune through the library, finish it.

The same code runs in an embedded worker thread and in a Celery worker on another machine; what
differs is the :class:`BlobAccess` (local store, or HTTP from the API by sha256). A heartbeat
thread extends the job's lease and publishes progress; losing the lease or a cancel request
stops the scan or prune at its next onnxruntime run.
"""
from __future__ import annotations

import json
import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from redaudit.core.spec import ScanSpec
from redaudit.errors import RedauditError
from redaudit.service import history_io
from redaudit.service.archives import ArchiveLimits, extract_bundle
from redaudit.service.jobs import Claim, JobStore, LeaseLost
from redaudit.service.models import CANCELLED, FAILED
from redaudit.service.wording import for_api

log = logging.getLogger("redaudit.service")


class BlobAccess(Protocol):
    def fetch(self, sha256: str) -> Path: ...
    def kind(self, sha256: str) -> str: ...
    def put_model(self, path: Path, filename: str) -> str: ...


@dataclass
class _Beat:
    """Progress shared between the scan (writer) and the heartbeat thread (reader)."""

    stage: str = "starting"
    done: int = 0
    total: int | None = None
    cancel: bool = False
    lost: bool = False
    stop: threading.Event = field(default_factory=threading.Event)


def _heartbeat(jobs: JobStore, claim: Claim, beat: _Beat, every: float) -> None:
    while not beat.stop.wait(every):
        try:
            beat.cancel = jobs.heartbeat(claim, beat.stage, beat.done, beat.total) or beat.cancel
        except LeaseLost:
            beat.lost = True
            return
        except Exception:  # a database hiccup: try again at the next beat, the lease has slack
            log.warning("heartbeat for job %s failed; retrying", claim.job_id, exc_info=True)


def _model_path(blobs: BlobAccess, sha256: str, workdir: Path, limits: ArchiveLimits) -> Path:
    path = blobs.fetch(sha256)
    if blobs.kind(sha256) != "bundle":
        return path
    folder = workdir / "bundle"
    folder.mkdir()
    files = extract_bundle(path, folder, limits)
    return next(file for file in files if file.suffix == ".onnx")


def run_claimed(jobs: JobStore, blobs: BlobAccess, claim: Claim, limits: ArchiveLimits,
                threads: int | None = None, own_process: bool = False) -> str:
    """Execute the claimed job to its end; returns the final state this worker wrote.

    ``threads``: onnxruntime threads for a job whose spec leaves them open — the worker's share
    of the usable cores (``workers.default_threads``). Not a result setting: MSRS does not
    depend on it, so scans with different thread counts stay comparable. ``own_process``: this
    process runs one job at a time (an embedded worker), so BLAS's process-wide thread count is
    set to the job's too; a Celery worker running several jobs in threads keeps its own limit."""
    job = jobs.get(claim.job_id)
    beat = _Beat()
    pulse = threading.Thread(target=_heartbeat, args=(jobs, claim, beat, max(0.2, min(jobs.lease_s / 3, 2.0))),
                             name=f"heartbeat-{claim.job_id[:8]}", daemon=True)
    pulse.start()
    try:
        with tempfile.TemporaryDirectory(prefix="redaudit-job-") as workdir:
            finished = _execute(jobs, blobs, claim, job, beat, Path(workdir), limits, threads, own_process)
            return "succeeded" if finished else "lost"
    except history_io.ScanCancelled:
        if beat.lost:
            return "lost"
        jobs.end(claim, CANCELLED, "cancelled while running")
        return CANCELLED
    except RedauditError as error:
        jobs.end(claim, FAILED, for_api(str(error).splitlines()[0]) if str(error) else type(error).__name__)
        return FAILED
    except LeaseLost:
        return "lost"
    except Exception as error:  # a bug: the job fails with its type, the traceback goes to the log
        log.exception("job %s failed", claim.job_id)
        jobs.end(claim, FAILED, f"internal error ({type(error).__name__}); see the worker log")
        return FAILED
    finally:
        beat.stop.set()
        pulse.join()


def _execute(jobs: JobStore, blobs: BlobAccess, claim: Claim, job: dict[str, Any], beat: _Beat,
             workdir: Path, limits: ArchiveLimits, threads: int | None, own_process: bool) -> bool:
    model_path = _model_path(blobs, job["blob_sha256"], workdir, limits)
    spec = ScanSpec.from_json(job["spec"])
    if spec.threads is None and threads is not None:
        spec = spec.with_options(threads=threads)
    if own_process and spec.threads is not None:
        # BLAS gets the job's threads too: OpenBLAS with more threads than the job was given waits
        # at every product for threads the machine gave to someone else (docs/service.md,
        # "2 workers vs 1").
        from threadpoolctl import threadpool_limits

        with threadpool_limits(spec.threads):
            return _run(jobs, blobs, claim, job, beat, workdir, spec, model_path)
    return _run(jobs, blobs, claim, job, beat, workdir, spec, model_path)


def _run(jobs, blobs, claim, job, beat, workdir, spec, model_path) -> bool:
    if job["inputs_sha256"]:
        spec = spec.with_options(inputs=str(blobs.fetch(job["inputs_sha256"])))

    def progress(update: history_io.ScanProgress) -> None:
        beat.stage = update.stage
        if update.total is not None:  # batches carry counts; other stages only name themselves
            beat.done, beat.total = update.done, update.total

    def cancelled() -> bool:
        return beat.cancel or beat.lost

    if job["kind"] == "prune":
        return _prune(jobs, blobs, claim, job, spec, model_path, workdir, progress, cancelled,
                      lambda: jobs.heartbeat(claim, beat.stage, beat.done, beat.total))
    result = _as_uploaded(history_io.scan_with_spec(str(model_path), spec, progress, cancelled), jobs, job)
    from redaudit.report.json_report import dumps

    outcome = None
    if job["kind"] == "check":
        options = job["options"]
        verdict = history_io.check(jobs.engine, result, name=job["model_name"], max_msrs=options.get("max_msrs"),
                                   max_increase=options.get("max_increase"),
                                   significant=bool(options.get("significant", False)),
                                   any_probe=bool(options.get("any_probe", False)))
        interval = verdict.increase_interval
        outcome = {"passed": verdict.passed, "reason": verdict.reason, "msrs": _finite(verdict.msrs),
                   "increase_pct": _finite(verdict.increase_pct),
                   "increase_ci": [_finite(interval.low), _finite(interval.high)]
                   if interval is not None and interval.defined else None,
                   "baseline_scan_id": verdict.baseline.scan.scan_id if verdict.baseline else None}
    record = None
    if job["record"]:
        def record(session):
            return history_io.record_in_session(session, result, job["model_name"], job["label"],
                                                parent_sha256=job["options"].get("parent_sha256"))
    beat.stage = "recording"
    jobs.heartbeat(claim, beat.stage, beat.done, beat.total)  # the final progress, and the lease is ours
    return jobs.finish(claim, result=dumps(result), outcome=outcome, record=record)


#: What ``prune_model`` reports, in order, without counts (list_only stops after the first four).
PRUNE_STEPS = ("load", "candidates", "probe arrays", "similarity scan", "surgery", "verification", "save")


def _prune(jobs, blobs, claim, job, spec, model_path, workdir, progress, cancelled, publish=lambda: None) -> bool:
    """``publish()`` writes the latest progress before the job finishes (a short job ends before
    the first heartbeat)."""
    from redaudit.prune.api import prune_model

    options = dict(job["options"])
    list_only = bool(options.pop("list_only", False))
    output = workdir / "pruned.onnx"
    steps = PRUNE_STEPS[:4] if list_only else PRUNE_STEPS

    def pruning(update: history_io.ScanProgress) -> None:
        """The library's stages as steps of the job (it reports them without counts)."""
        if update.total is None and update.stage in steps:
            update = history_io.ScanProgress(f"prune: {update.stage}", steps.index(update.stage), len(steps))
        progress(update)
    # cancelled() is polled before every onnxruntime run of the prune, as a scan polls it: a cancel
    # ends a long prune at its next run (ScanCancelled, which run_claimed ends as cancelled)
    pruned = prune_model(str(model_path), list_only=list_only, output=None if list_only else output,
                         measure_msrs=False, latency=False, spec=spec, progress=pruning, cancel=cancelled,
                         **options)
    if cancelled():  # asked after the prune's last poll: its file is in the job's folder, which goes
        raise history_io.ScanCancelled("cancelled while pruning")
    outcome = json.loads(json.dumps(pruned.to_dict(), default=str))
    for private in ("source", "output_path"):  # worker-local paths mean nothing to the client
        outcome.pop(private, None)
    if list_only:
        publish()
        return jobs.finish(claim, result=None, outcome=outcome)
    output_sha = blobs.put_model(output, f"{job['model_name']}-pruned.onnx")
    # MSRS before and after come from the two full scans the history records (the library's own
    # measure_msrs would scan the same twice more); the recorded scan's id is filled in by finish.
    before, after = (history_io.scan_with_spec(
        str(path), spec, lambda update, which=which: progress(
            history_io.ScanProgress(f"msrs {which}/{update.stage}", update.done, update.total)), cancelled)
        for which, path in (("before", model_path), ("after", output)))
    before, after = _as_uploaded(before, jobs, job), _as_uploaded(after, jobs, job, "-pruned")
    outcome["msrs"] = {"before": _finite(before.msrs), "after": _finite(after.msrs)}
    from redaudit.report.json_report import dumps

    record = None
    if job["record"]:
        def record(session):
            if not history_io.version_known(session, before.model.sha256):
                history_io.record_in_session(session, before, job["model_name"], None)
            return history_io.record_in_session(session, after, job["model_name"], job["label"],
                                                parent_sha256=before.model.sha256)
    publish()
    return jobs.finish(claim, result=dumps(after), outcome=outcome, output_sha256=output_sha, record=record)


def _as_uploaded(result, jobs: JobStore, job: dict[str, Any], suffix: str = ""):
    """``result`` with the model named as the client uploaded it, not by the worker's temporary
    path: the JSON report and the history are read by clients, and a server path is none of
    theirs."""
    from dataclasses import replace

    blob = jobs.blob(job["blob_sha256"])
    name = Path(blob.filename).name if blob is not None and blob.filename else f"{job['blob_sha256'][:12]}.onnx"
    if suffix:
        stem, dot, extension = name.rpartition(".")
        name = f"{stem}{suffix}.{extension}" if dot else f"{name}{suffix}"
    return replace(result, model=replace(result.model, path=name))


def _finite(value: float | None) -> float | None:
    import math

    return None if value is None or not math.isfinite(float(value)) else float(value)
