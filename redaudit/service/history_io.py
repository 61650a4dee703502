"""The service's one door into the history and the scan engine (so API changes stay local).

Scans run through ``redaudit.scan(model, spec, progress=, cancel=)``; the history is reached
only from here.
Recording happens inside the caller's session, because a job's completion and its scan must
commit together (see :meth:`JobStore.finish`); ``record_scan`` opens its own transaction, so the
same steps are composed here from the store's parts.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from redaudit.core.result import ScanResult
from redaudit.core.spec import ScanSpec
from redaudit.core.engine import ScanProgress
from redaudit.errors import ScanCancelled  # noqa: F401 - the runner catches it from here
from redaudit.history import store, writes
from redaudit.history.check import CheckOutcome, check_result
from redaudit.history.diff import ScanDiff, diff_references
from redaudit.history.errors import UnknownReferenceError
from redaudit.history.models import Model, ModelVersion
from redaudit.history.records import ModelHistory, StoredScan
from redaudit.history.store import load_scan, model_history
from redaudit.report.reading import MsrsReading, read_msrs, reading_of_result


def scan_with_spec(model_path: str, spec: ScanSpec, progress: Callable[[ScanProgress], None],
                   cancelled: Callable[[], bool]) -> ScanResult:
    """Run one scan as ``spec`` says, reporting each stage and stopping when ``cancelled()``."""
    import redaudit

    return redaudit.scan(model_path, spec, progress=progress, cancel=cancelled)


def record_in_session(session: Session, result: ScanResult, name: str, label: str | None,
                      parent_sha256: str | None = None) -> int:
    """Record ``result`` inside the caller's transaction (a job's completion and its scan
    commit together); returns the new scan id."""
    writes.validate_name(name)
    return writes.record_in_session(session, result, writes.prepare_rows(result), name, label, parent_sha256).scan_id


def stored_reading(scan: StoredScan, result: ScanResult | None) -> MsrsReading:
    """How to read a recorded scan's MSRS (the dashboard's scan page and ``GET /scans/{id}``):
    from its JSON report when the service ran it (float64, as the report itself shows), else
    from the stored matrix and per-batch MSRS of a scan the CLI recorded."""
    if result is not None:
        return reading_of_result(result)
    summary = scan.summary
    return read_msrs(scan.similarity, math.nan if summary.msrs is None else summary.msrs, summary.msrs_batches,
                     float(scan.settings.get("epsilon", math.nan)), summary.msrs_interval)


def version_known(session: Session, sha256: str) -> bool:
    return session.scalar(select(ModelVersion.id).where(ModelVersion.sha256 == sha256).limit(1)) is not None


def check(engine: Engine, result: ScanResult, *, name: str, max_msrs: float | None,
          max_increase: float | None, significant: bool = False) -> CheckOutcome:
    """Gate ``result`` against the latest comparable recorded scan of ``name`` (if it has one)."""
    against = name if max_increase is not None else None
    if against is not None and not has_scans(engine, name):
        if max_msrs is None:
            return CheckOutcome(True, f"no recorded scan of {name!r} to compare with yet; this one "
                                      "becomes the baseline", float(result.msrs))
        against, max_increase, significant = None, None, False
    return check_result(result, max_msrs=max_msrs, against=against, max_increase=max_increase, db=engine,
                        significant=significant)


def has_scans(engine: Engine, name: str) -> bool:
    try:
        return any(version.scans for version in model_history(engine, name).versions)
    except UnknownReferenceError:
        return False


def model_names(engine: Engine) -> list[str]:
    with store.unit_of_work(engine) as session:
        return list(session.scalars(select(Model.name).order_by(Model.name)))


def history(engine: Engine, name: str) -> ModelHistory:
    return model_history(engine, name)


def stored_scan(engine: Engine, scan_id: int) -> StoredScan:
    return load_scan(engine, scan_id)


def diff(engine: Engine, name: str, before: str, after: str, force: bool = False) -> ScanDiff:
    return diff_references(engine, name, before, after, force=force)


def resolve(engine: Engine, name: str, reference: str) -> int:
    return store.resolve_scan(engine, name, reference)
