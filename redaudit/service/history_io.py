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
from dataclasses import replace

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from redaudit.core.progress import ScanProgress
from redaudit.core.result import LayerInfo, ModelInfo, ScanResult
from redaudit.core.spec import ScanSpec
from redaudit.errors import ScanCancelled  # noqa: F401 - the runner catches it from here
from redaudit.history import store, writes
from redaudit.history.check import CheckOutcome, check_result
from redaudit.history.diff import ScanDiff
from redaudit.history.errors import UnknownReferenceError
from redaudit.history.models import Model, ModelVersion
from redaudit.history.records import ModelHistory, StoredScan
from redaudit.history.store import HistoryStore, diff_references, load_scan, model_history
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
          max_increase: float | None, significant: bool = False, any_probe: bool = False) -> CheckOutcome:
    """Gate ``result`` against the latest comparable recorded scan of ``name`` (if it has one)."""
    against = name if max_increase is not None else None
    if against is not None and not has_scans(engine, name):
        if max_msrs is None:
            return CheckOutcome(True, f"no recorded scan of {name!r} to compare with yet; this one "
                                      "becomes the baseline", float(result.msrs))
        against, max_increase, significant = None, None, False
    return check_result(result, max_msrs=max_msrs, against=against, max_increase=max_increase, db=engine,
                        significant=significant, any_probe=any_probe)


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


def parent_sha256(engine: Engine, parent: str) -> str:
    """The version ``NAME@LABEL`` names (a label, a hash prefix or scan:ID, as ``diff`` takes):
    the parent a pushed model is recorded under (lineage)."""
    name, _, reference = parent.rpartition("@")
    return load_scan(engine, resolve(engine, name, reference)).version.sha256


class _HistoryBefore(HistoryStore):
    """The history as it stood when scan ``before`` was recorded.

    A recorded scan is gated against what was recorded before it — never against itself (it is
    the latest scan of its own model) nor against later scans — so its verdict is the one
    ``redaudit check`` would have given then, and stays the same as newer scans arrive.
    """

    def __init__(self, engine: Engine, before: int) -> None:
        super().__init__(engine)
        self.before = before

    def model_history(self, name: str) -> ModelHistory:
        history = super().model_history(name)
        return replace(history, versions=tuple(
            replace(version, scans=tuple(scan for scan in version.scans if scan.scan_id < self.before))
            for version in history.versions))


def result_of_stored(stored: StoredScan) -> ScanResult:
    """A recorded scan as a ``ScanResult``, holding what the history keeps: its settings, layers,
    matrix, MSRS per batch and input facts. What the history does not keep (timings, the model's
    opset, producer and input specs) is empty, so only gates on the kept values — MSRS and its
    batches, measurable layers, comparability — may read it."""
    settings = stored.settings
    by_name = {layer.name: layer for layer in stored.layers}
    order = stored.layer_order or tuple(layer.name for layer in sorted(stored.layers, key=lambda layer: layer.position))
    layers = [LayerInfo(name=name, op=by_name[name].op if name in by_name else "",
                        shape=tuple(by_name[name].shape) if name in by_name else ()) for name in order]
    summary, version = stored.summary, stored.version

    def number(value: float | None) -> float:
        return float("nan") if value is None else float(value)
    return ScanResult(
        model=ModelInfo(path=version.path, sha256=version.sha256, size_bytes=version.size_bytes,
                        parameter_count=version.parameter_count, opset=0, producer="", inputs=()),
        layers=layers, similarity=np.asarray(stored.similarity, dtype=np.float64), msrs=number(summary.msrs),
        msrs_std=number(summary.msrs_std), msrs_batches=np.array([number(v) for v in summary.msrs_batches]),
        config=ScanSpec.from_dict(settings, ignore_unknown=True), samples=int(settings.get("samples_used", 0)),
        batches=int(settings.get("batches", 0)), dropped_samples=0, nan_batches=0,
        inputs_real=bool(settings.get("inputs_real")), input_hash=str(settings.get("input_hash", "")),
        provider=str(settings.get("provider", "")), backend=str(settings.get("backend_used", "")),
        redaudit_version=summary.redaudit_version, unit=summary.unit or "", micro_batch=summary.micro_batch or 0)


def check_stored(engine: Engine, scan_id: int, *, max_msrs: float | None, against: str | None,
                 max_increase: float | None, force: bool = False, significant: bool = False,
                 any_probe: bool = False) -> CheckOutcome:
    """``redaudit check``'s gate on a scan already in the history, without scanning again:
    ``--max-msrs`` and/or ``--against NAME --max-increase PCT``, the baseline being NAME's latest
    comparable scan recorded before this one (see :class:`_HistoryBefore`)."""
    from redaudit.history.check import validate_limits

    validate_limits(max_msrs, against, max_increase, significant)  # before any read: a bad request reads nothing
    result = result_of_stored(load_scan(engine, scan_id))
    with _HistoryBefore(engine, scan_id) as store:
        if against is not None and not store.model_history(against).scans():
            raise UnknownReferenceError(f"{against!r} has no scan recorded before scan {scan_id} to compare "
                                        "with; record a baseline first")
        return check_result(result, max_msrs=max_msrs, against=against, max_increase=max_increase,
                            db=store, force=force, significant=significant, any_probe=any_probe)


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: an undefined number is null."""
    return None if value is None or not math.isfinite(float(value)) else float(value)
