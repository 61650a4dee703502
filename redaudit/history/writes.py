"""Recording a scan inside an open session: get-or-create of model, version and label, then rows.

Every function here runs inside the caller's transaction (``HistoryStore`` opens one per
operation), so recording is all or nothing. Get-or-create is safe under concurrency: an insert
that loses a race to another process raises ``IntegrityError`` on a unique constraint; it is
rolled back to a savepoint and the row the other process committed is read instead. (SQLite
serialises writers with ``BEGIN IMMEDIATE``, so the race exists only on PostgreSQL, where 8
processes recording a new model name at once used to lose 2-3 scans to ``uq_models_name``.)
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from redaudit.core.result import ScanResult
from redaudit.history.errors import HistoryError, InvalidNameError, LabelInUseError, UnknownReferenceError
from redaudit.history.models import Model, ModelVersion, Scan, ScanLayer, SimilarityMatrix, VersionLabel
from redaudit.history.records import finite_or_none, matrix_to_npy

_NAME = re.compile(r"^\S(?:.{0,198}\S)?$", re.DOTALL)
_INT32 = 2**31 - 1
#: Get-or-create retries: each retry means another writer committed the row we wanted, so a
#: second read finds it; more than a few means something else is wrong.
_ATTEMPTS = 4
T = TypeVar("T")


def validate_name(name: str | None, what: str = "model name") -> str:
    """A model name or label: 1-200 characters, no leading/trailing space, one line."""
    if name is not None and any(not character.isprintable() for character in name):
        raise InvalidNameError(f"{what} {name.encode('unicode_escape').decode('ascii')!r} contains control "
                               "characters (terminal escape codes, tabs); use printable characters only")
    if name is None or not _NAME.match(name) or "\n" in name or "\r" in name:
        raise InvalidNameError(f"{what} {name!r} must be 1-200 characters on one line, without "
                               f"leading or trailing spaces (e.g. --record resnet-prod)")
    return name


def validate_result(result: ScanResult) -> None:
    """Refuse values one database stores and the other rejects, before any transaction.

    SQLite stores an integer of any size and ``inf``; PostgreSQL's INTEGER stops at 2^31-1.
    Checking here makes both databases accept and refuse exactly the same scans.
    """
    config = result.config
    for key, value in (("samples", config.samples), ("seed", config.seed),
                       ("cka batch", config.cka_batch or 0), ("samples used", result.samples)):
        if not -_INT32 <= int(value) <= _INT32:
            raise HistoryError(f"{key} {value} does not fit the history (at most {_INT32:,}); "
                               f"scan with a smaller value to record it")
    for key, value in (("epsilon", config.epsilon), ("beta", config.beta)):
        if not math.isfinite(float(value)):
            raise HistoryError(f"{key} {value} is not a finite number; the history records only "
                               f"finite settings")


@dataclass(frozen=True)
class Recorded:
    """What one recording did, so the caller can say it (``scan --record`` prints it).

    ``version_status``: "new" (first scan of these bytes under the model), "same" (an existing
    version, no new label), "alias" (``label`` became an alias of the existing version
    ``version_label``), or "named" (an unlabelled existing version got ``label`` as its name).
    """

    scan_id: int
    model_name: str
    sha256: str
    version_label: str | None
    version_status: str
    label: str | None = None
    original_scan_id: int | None = None  # record_pruned: the original's scan, when recorded too

    @property
    def version_display(self) -> str:
        return self.version_label or self.sha256[:12]


def _get_or_create(session: Session, find: Callable[[], T | None], make: Callable[[], T]) -> T:
    for _ in range(_ATTEMPTS):
        found = find()
        if found is not None:
            return found
        try:
            with session.begin_nested():
                created = make()
                session.add(created)
                session.flush()
            return created
        except IntegrityError:
            continue  # another writer committed it first: read theirs
    raise HistoryError("the history database kept changing under concurrent writers; retry")


def model_row(session: Session, name: str, now: datetime) -> Model:
    return _get_or_create(session, lambda: session.scalar(select(Model).where(Model.name == name)),
                          lambda: Model(name=name, created_at=now))


def _label_holder(session: Session, model: Model, label: str) -> VersionLabel | None:
    return session.scalar(select(VersionLabel).where(VersionLabel.model_id == model.id,
                                                     VersionLabel.label == label))


def _refuse_taken(session: Session, holder: VersionLabel | None, sha256: str, model: Model) -> None:
    """LabelInUseError when ``holder`` (the row of the label asked for) names other bytes."""
    if holder is None:
        return
    sha = session.scalar(select(ModelVersion.sha256).where(ModelVersion.id == holder.version_id))
    if sha != sha256:
        raise LabelInUseError(f"label {holder.label!r} already names version {sha[:12]} of "
                              f"{model.name!r} (a different file); pick another label")


def version_row(session: Session, model: Model, result: ScanResult, label: str | None,
                parent_sha256: str | None, now: datetime) -> tuple[ModelVersion, str]:
    """The version of ``result``'s file under ``model`` and what happened to it (see Recorded)."""
    sha = result.model.sha256
    parent_id = parent_version_id(session, model, parent_sha256) if parent_sha256 else None
    find = select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.sha256 == sha)
    for _ in range(_ATTEMPTS):
        # The label first, then the version: on PostgreSQL each statement sees the latest commits,
        # and a version and its first label commit together, so a label seen here implies its
        # version is seen by the next statement (the other order could see a label whose
        # version it missed a moment before).
        holder = _label_holder(session, model, label) if label else None
        _refuse_taken(session, holder, sha, model)
        version = session.scalar(find)
        if holder is not None and version is None:
            continue  # cannot happen (see above); re-read rather than guess
        try:
            with session.begin_nested():
                if version is None:
                    version = ModelVersion(
                        model_id=model.id, sha256=sha, label=label, size_bytes=result.model.size_bytes,
                        parameter_count=result.model.parameter_count, opset=result.model.opset,
                        producer=result.model.producer, path=result.model.path, created_at=now,
                        parent_id=parent_id)
                    session.add(version)
                    session.flush()
                    status = "new"
                else:
                    status = "same" if holder is not None or not label else (
                        "alias" if version.label else "named")
                    if status == "named" and not _name_unlabelled(session, version, label):
                        status = "alias"  # another writer named it a moment ago
                    if parent_id is not None and version.parent_id is None:
                        version.parent_id = parent_id
                if label and holder is None:
                    session.add(VersionLabel(model_id=model.id, version_id=version.id, label=label,
                                             created_at=now))
                session.flush()
            return version, status
        except IntegrityError:
            continue  # the version or the label was just created by another writer: re-read
    raise HistoryError("the history database kept changing under concurrent writers; retry")


def _name_unlabelled(session: Session, version: ModelVersion, label: str) -> bool:
    """Give an unlabelled version its first label; False if it has one by now. The condition
    is in the UPDATE so that of two concurrent writers only one names it (PostgreSQL re-checks
    the WHERE clause after waiting for the other's row lock)."""
    done = session.execute(update(ModelVersion).where(ModelVersion.id == version.id,
                                                      ModelVersion.label.is_(None))
                           .values(label=label).execution_options(synchronize_session=False))
    session.refresh(version)
    return done.rowcount == 1


def parent_version_id(session: Session, model: Model, parent_sha256: str) -> int:
    rows = session.execute(select(ModelVersion.id, ModelVersion.model_id)
                           .where(ModelVersion.sha256 == parent_sha256)).all()
    if not rows:
        raise UnknownReferenceError(f"parent version {parent_sha256[:12]} is not in the history; "
                                    f"record the original model first")
    same_model = [row.id for row in rows if row.model_id == model.id]
    return same_model[0] if same_model else rows[0].id


def known_sha256(session: Session, sha256: str) -> bool:
    return session.scalar(select(ModelVersion.id).where(ModelVersion.sha256 == sha256).limit(1)) is not None


@dataclass(frozen=True)
class PreparedRows:
    """Rows computed before the transaction opens, so the transaction stays short."""

    layers: list[dict]
    npy: bytes


def prepare_rows(result: ScanResult) -> PreparedRows:
    validate_result(result)
    rows = [dict(position=row.position, name=row.name, op=row.op, shape=list(row.shape), node=row.node,
                 redundancy=row.redundancy, most_similar=row.most_similar,
                 most_similar_cka=row.most_similar_cka, issue=row.issue)
            for row in result.layer_rows()]  # the one per-layer view every renderer shows
    return PreparedRows(rows, matrix_to_npy(result.similarity))


def record_in_session(session: Session, result: ScanResult, rows: PreparedRows, name: str,
                      label: str | None, parent_sha256: str | None) -> Recorded:
    """Model, version (and label), scan, layer rows and matrix, all in the caller's transaction."""
    now = datetime.now(timezone.utc)
    model = model_row(session, name, now)
    version, status = version_row(session, model, result, label, parent_sha256, now)
    scan = scan_row(result, version.id, label, now)
    session.add(scan)
    session.flush()
    insert_layers(session, scan.id, rows.layers)
    insert_matrix(session, scan.id, result.layer_names, rows.npy)
    return Recorded(scan_id=scan.id, model_name=name, sha256=version.sha256,
                    version_label=version.label, version_status=status, label=label)


def scan_row(result: ScanResult, version_id: int, label: str | None, now: datetime) -> Scan:
    config = result.config
    timings = result.timings or {}
    return Scan(
        version_id=version_id, label=label or None, created_at=now,
        redaudit_version=result.redaudit_version, level=config.level, reduce=config.reduce,
        cka_batch=config.cka_batch, estimator=config.estimator, aggregate=config.aggregate,
        epsilon=float(config.epsilon), beta=float(config.beta), taps=list(config.taps),
        samples_requested=config.samples, seed=config.seed, inputs_real=bool(result.inputs_real),
        input_hash=result.input_hash, device=config.device, backend=result.backend,
        provider=result.provider, config=config.to_dict(), samples=result.samples,
        batches=result.batches, dropped_samples=result.dropped_samples,
        nan_batches=result.nan_batches, layer_count=len(result.layers),
        msrs=finite_or_none(result.msrs), msrs_std=finite_or_none(result.msrs_std),
        msrs_batches=[finite_or_none(v) for v in np.asarray(result.msrs_batches, dtype=float).ravel()],
        warnings=list(result.warnings), micro_batch=result.micro_batch or None, unit=result.unit or None,
        **{key: finite_or_none(timings.get(key)) for key in ("load_s", "tap_s", "run_s",
                                                            "similarity_s", "total_s")})


def insert_layers(session: Session, scan_id: int, rows: list[dict]) -> None:
    if rows:
        session.execute(insert(ScanLayer), [dict(row, scan_id=scan_id) for row in rows])


def insert_matrix(session: Session, scan_id: int, layer_order: list[str], npy: bytes) -> None:
    session.add(SimilarityMatrix(scan_id=scan_id, layer_order=list(layer_order), npy=npy))
    session.flush()
