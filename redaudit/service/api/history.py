"""The history over HTTP: models, versions with their scans, one stored scan, diffs.

Numbers come from the same history functions the CLI's ``history`` and ``diff`` use (through
``service.history_io``), so the API and the CLI cannot disagree.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from redaudit.report.json_report import scan_from_dict
from redaudit.service import history_io
from redaudit.service.api.deps import get_state, require_read
from redaudit.service.state import ServiceState

router = APIRouter(tags=["history"])


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf to None, datetimes to ISO strings, tuples to lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _version(version) -> dict[str, Any]:
    """A version as clients see it: no ``path`` (where the file lay when it was recorded: a path
    on a worker or a CI machine, which is nobody's business; the sha256 names the file)."""
    return {key: value for key, value in asdict(version).items() if key != "path"}


@router.get("/models", summary="Every model in the history with its latest MSRS")
def list_models(state: ServiceState = Depends(get_state), _token=Depends(require_read)) -> list[dict[str, Any]]:
    rows = []
    for name in history_io.model_names(state.engine):
        history = history_io.history(state.engine, name)
        scans = history.scans()
        latest = scans[-1][1] if scans else None
        rows.append({"name": name, "versions": len(history.versions), "scans": len(scans),
                     "latest_msrs": _clean(latest.msrs) if latest else None,
                     "latest_scan_id": latest.scan_id if latest else None,
                     "msrs_trend": [_clean(scan.msrs) for _, scan in scans]})
    return rows


@router.get("/models/{name}", summary="A model's versions (oldest first), each with its scans")
def model_history(name: str, state: ServiceState = Depends(get_state),
                  _token=Depends(require_read)) -> dict[str, Any]:
    history = history_io.history(state.engine, name)
    return {"name": history.name,
            "versions": [_clean({**_version(version), "scans": [asdict(scan) | {"msrs_ci": scan.msrs_interval.to_dict()}
                                                              for scan in version.scans]})
                         for version in history.versions]}


@router.get("/models/{name}/versions", summary="A model's versions without their scans")
def model_versions(name: str, state: ServiceState = Depends(get_state),
                   _token=Depends(require_read)) -> list[dict[str, Any]]:
    history = history_io.history(state.engine, name)
    return [_clean({key: value for key, value in _version(version).items() if key != "scans"}
                   | {"scan_count": len(version.scans)}) for version in history.versions]


@router.get("/models/{name}/diff", summary="Layer-aligned diff of two versions or scans (labels, hash prefixes, scan:ID)")
def model_diff(name: str, before: str = Query(..., min_length=1, max_length=200),
               after: str = Query(..., min_length=1, max_length=200), force: bool = False,
               state: ServiceState = Depends(get_state), _token=Depends(require_read)) -> dict[str, Any]:
    return _clean(history_io.diff(state.engine, name, before, after, force=force).to_dict())


@router.get("/scans/{scan_id}", summary="One recorded scan: settings, per-layer rows, similarity matrix")
def stored_scan(scan_id: int, state: ServiceState = Depends(get_state),
                _token=Depends(require_read)) -> dict[str, Any]:
    scan = history_io.stored_scan(state.engine, scan_id)
    report = state.jobs.result_of_scan(scan_id)
    reading = history_io.stored_reading(scan, scan_from_dict(json.loads(report)) if report is not None else None)
    return _clean({"scan_id": scan.scan_id, "model_name": scan.model_name, "version": _version(scan.version),
                   "summary": asdict(scan.summary), "msrs_ci": reading.interval.to_dict(),
                   "reading": reading.to_dict(), "settings": scan.settings,
                   "layers": [asdict(layer) for layer in scan.layers], "layer_order": scan.layer_order,
                   "similarity": scan.similarity.astype(float).tolist()})


@router.get("/scans/{scan_id}/heatmap.png", response_class=Response, summary="A recorded scan's heatmap",
            responses={200: {"content": {"image/png": {}}}})
def stored_heatmap(scan_id: int, state: ServiceState = Depends(get_state),
                   _token=Depends(require_read)) -> Response:
    return Response(state.heatmaps.png(history_io.stored_scan(state.engine, scan_id)), media_type="image/png")


#: Scan ids are 32-bit integers in every database the history runs on.
SCAN_ID = Path(ge=1, le=2**31 - 1, description="a scan id (see /models/{name})")


class CheckOut(BaseModel):
    """A gate's verdict, as a check job's ``outcome`` and `redaudit check` report it."""

    scan_id: int = Field(description="the scan that was gated")
    passed: bool
    reason: str = Field(description="one line: why it passed or failed (what `redaudit check` prints)")
    msrs: float | None = Field(description="the scan's MSRS; null when undefined")
    increase_pct: float | None = Field(None, description="% change vs the baseline (with max_increase)")
    baseline_scan_id: int | None = Field(None, description="the scan compared with (with max_increase)")
    increase_ci: list[float | None] | None = Field(
        None, description="95% bootstrap interval of the % change over batches (with significant); "
                          "null bounds when a scan has too few batches to tell (fewer than 10)")


@router.get("/scans/{scan_id}/check", response_model=CheckOut,
            summary="Gate a recorded scan as `redaudit check` does, without scanning again")
def check_stored_scan(scan_id: int = SCAN_ID,
                      max_msrs: float | None = Query(None, ge=0, description="fail above this MSRS"),
                      against: str | None = Query(None, min_length=1, max_length=200,
                                                  description="model whose latest comparable scan recorded "
                                                              "before this one is the baseline"),
                      max_increase: float | None = Query(None, ge=0, description="fail above this % over the baseline"),
                      force: bool = Query(False, description="compare even if the baseline's settings differ"),
                      significant: bool = Query(False, description="with max_increase: fail only when the "
                                                "increase is beyond batch noise (as `check --significant`)"),
                      any_probe: bool = Query(False, description="the baseline may have used other probe inputs "
                                              "or samples (default: only a scan on the same probe)"),
                      state: ServiceState = Depends(get_state), _token=Depends(require_read)) -> CheckOut:
    """Reads only: the verdict is computed, not stored (a check *job* scans and records)."""
    outcome = history_io.check_stored(state.engine, scan_id, max_msrs=max_msrs, against=against,
                                      max_increase=max_increase, force=force, significant=significant,
                                      any_probe=any_probe)
    interval = outcome.increase_interval
    return CheckOut(scan_id=scan_id, passed=outcome.passed, reason=outcome.reason,
                    msrs=history_io.finite(outcome.msrs), increase_pct=history_io.finite(outcome.increase_pct),
                    baseline_scan_id=outcome.baseline.scan.scan_id if outcome.baseline else None,
                    increase_ci=None if interval is None or not interval.defined
                    else [history_io.finite(interval.low), history_io.finite(interval.high)])
