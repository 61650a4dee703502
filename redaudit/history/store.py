"""The history API: record a scan, list a model's history, resolve and load scans.

Each operation is one session and one transaction (``unit_of_work``): it commits as a whole or
rolls back as a whole, so a failure while recording leaves no model, version, scan or layer row.
Functions take ``db`` as a URL, a bare SQLite path, ``None`` (``$REDAUDIT_DB`` or the default
file) or an open :class:`~sqlalchemy.engine.Engine` (left open for the caller).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, aliased

from redaudit.history.db import ensure_schema, make_engine, translated_errors, writer
from redaudit.history.errors import LabelInUseError, UnknownReferenceError
from redaudit.history.models import Model, ModelVersion, Scan, ScanLayer, SimilarityMatrix
from redaudit.history.records import (LayerRecord, ModelHistory, ScanSummary, StoredScan,
                                      VersionSummary, finite_or_none, matrix_to_npy,
                                      npy_to_matrix, result_config, utc)
from redaudit.core.result import ScanResult

DbRef = str | Engine | None
_NAME = re.compile(r"^[^\s].{0,199}$")


@contextmanager
def open_db(db: DbRef, *, create: bool = False) -> Iterator[Engine]:
    """An engine whose schema is at this redaudit's revision (created first when ``create``)."""
    engine = db if isinstance(db, Engine) else make_engine(db)
    try:
        ensure_schema(engine, create)
        yield engine
    finally:
        if not isinstance(db, Engine):
            engine.dispose()


@contextmanager
def unit_of_work(engine: Engine, *, write: bool = False) -> Iterator[Session]:
    with translated_errors(engine), Session(writer(engine) if write else engine) as session:
        with session.begin():
            yield session


def record_scan(db: DbRef, result: ScanResult, name: str, label: str | None = None,
                parent_sha256: str | None = None) -> int:
    """Store ``result`` under model ``name`` in one transaction; returns the new scan id.

    The version is found (or created) by the file's sha256, so scanning an unchanged file again
    adds a scan to the same version. ``label`` names the version when it is new (or unlabelled)
    and is always kept on the scan; ``parent_sha256`` (a version recorded earlier, under any
    model) marks this version as derived from it, e.g. pruned.
    """
    if not _NAME.match(name or ""):
        raise UnknownReferenceError(f"model name {name!r} must be 1-200 characters, not starting with a space")
    layer_rows = _layer_rows(result)
    npy = matrix_to_npy(result.similarity)
    now = datetime.now(timezone.utc)
    with open_db(db, create=True) as engine, unit_of_work(engine, write=True) as session:
        model = session.scalar(select(Model).where(Model.name == name))
        if model is None:
            model = Model(name=name, created_at=now)
            session.add(model)
            session.flush()
        version = _version_for(session, model, result, label, parent_sha256, now)
        scan = _scan_row(result, version.id, label, now)
        session.add(scan)
        session.flush()
        _insert_layers(session, scan.id, layer_rows)
        _insert_matrix(session, scan.id, result.layer_names, npy)
        return scan.id


def _version_for(session: Session, model: Model, result: ScanResult, label: str | None,
                 parent_sha256: str | None, now: datetime) -> ModelVersion:
    sha = result.model.sha256
    version = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id,
                                                        ModelVersion.sha256 == sha))
    if label:
        holder = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id,
                                                           ModelVersion.label == label))
        if holder is not None and holder.sha256 != sha and (version is None or version.label is None):
            raise LabelInUseError(f"label {label!r} already names version {holder.sha256[:12]} of "
                                  f"{model.name!r}; pick another label")
    parent_id = _parent_id(session, model, parent_sha256) if parent_sha256 else None
    if version is None:
        version = ModelVersion(model_id=model.id, sha256=sha, label=label or None,
                               size_bytes=result.model.size_bytes,
                               parameter_count=result.model.parameter_count, opset=result.model.opset,
                               producer=result.model.producer, path=result.model.path,
                               created_at=now, parent_id=parent_id)
        session.add(version)
        session.flush()
    else:
        if label and version.label is None:
            version.label = label
        if parent_id is not None and version.parent_id is None:
            version.parent_id = parent_id
    return version


def _parent_id(session: Session, model: Model, parent_sha256: str) -> int:
    rows = session.execute(select(ModelVersion.id, ModelVersion.model_id)
                           .where(ModelVersion.sha256 == parent_sha256)).all()
    if not rows:
        raise UnknownReferenceError(f"parent version {parent_sha256[:12]} is not in the history; "
                                    f"record the original model first")
    same_model = [row.id for row in rows if row.model_id == model.id]
    return same_model[0] if same_model else rows[0].id


def _scan_row(result: ScanResult, version_id: int, label: str | None, now: datetime) -> Scan:
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
        warnings=list(result.warnings),
        **{key: finite_or_none(timings.get(key)) for key in ("load_s", "tap_s", "run_s",
                                                            "similarity_s", "total_s")})


def _layer_rows(result: ScanResult) -> list[dict]:
    """Per-layer rows, computed before the transaction opens so it stays short."""
    redundancy = result.layer_redundancy() if len(result.layers) else np.zeros(0)
    nearest = result.most_similar()
    rows = []
    for position, layer in enumerate(result.layers):
        other, cka = nearest[position]
        rows.append(dict(position=position, name=layer.name, op=layer.op, shape=list(layer.shape),
                         node=layer.node, redundancy=finite_or_none(redundancy[position]),
                         most_similar=result.layers[other].name if other >= 0 else None,
                         most_similar_cka=finite_or_none(cka),
                         issue=result.layer_issues.get(layer.name)))
    return rows


def _insert_layers(session: Session, scan_id: int, rows: list[dict]) -> None:
    if rows:
        session.execute(insert(ScanLayer), [dict(row, scan_id=scan_id) for row in rows])


def _insert_matrix(session: Session, scan_id: int, layer_order: list[str], npy: bytes) -> None:
    session.add(SimilarityMatrix(scan_id=scan_id, layer_order=list(layer_order), npy=npy))
    session.flush()


# --------------------------------------------------------------------------- reading

_Parent = aliased(ModelVersion)
_SCAN_COLUMNS = (Scan.id, Scan.created_at, Scan.label, Scan.msrs, Scan.msrs_std, Scan.layer_count,
                 Scan.samples, Scan.seed, Scan.input_hash, Scan.redaudit_version, Scan.total_s,
                 Scan.level, Scan.reduce, Scan.cka_batch, Scan.estimator, Scan.aggregate,
                 Scan.epsilon, Scan.beta, Scan.taps, Scan.inputs_real)
_VERSION_COLUMNS = (ModelVersion.id.label("vid"), ModelVersion.sha256, ModelVersion.label.label("vlabel"),
                    ModelVersion.size_bytes, ModelVersion.parameter_count,
                    ModelVersion.created_at.label("vcreated"), ModelVersion.path,
                    _Parent.sha256.label("parent_sha256"))


def _summary(row) -> ScanSummary:
    return ScanSummary(scan_id=row.id, created_at=utc(row.created_at), label=row.label,
                       msrs=row.msrs, msrs_std=row.msrs_std, layer_count=row.layer_count,
                       samples=row.samples, seed=row.seed, input_hash=row.input_hash,
                       redaudit_version=row.redaudit_version, total_s=row.total_s,
                       config=result_config(row._mapping))


def _version(row, scans: tuple[ScanSummary, ...] = ()) -> VersionSummary:
    return VersionSummary(sha256=row.sha256, label=row.vlabel, size_bytes=row.size_bytes,
                          parameter_count=row.parameter_count, created_at=utc(row.vcreated),
                          path=row.path, parent_sha256=row.parent_sha256, scans=scans)


def _history_rows(session: Session, name: str):
    model_id = session.scalar(select(Model.id).where(Model.name == name))
    if model_id is None:
        known = session.scalars(select(Model.name).order_by(Model.name).limit(5)).all()
        hint = f" (known: {', '.join(known)})" if known else " (the history is empty)"
        raise UnknownReferenceError(f"no model named {name!r} in the history{hint}")
    query = (select(*_SCAN_COLUMNS, *_VERSION_COLUMNS)
             .join(ModelVersion, Scan.version_id == ModelVersion.id)
             .outerjoin(_Parent, ModelVersion.parent_id == _Parent.id)
             .where(ModelVersion.model_id == model_id)
             .order_by(ModelVersion.created_at, ModelVersion.id, Scan.created_at, Scan.id))
    return session.execute(query).all()


def model_history(db: DbRef, name: str) -> ModelHistory:
    """Every version of ``name`` (in the order first recorded) with its scans (oldest first)."""
    with open_db(db) as engine, unit_of_work(engine) as session:
        rows = _history_rows(session, name)
    versions: list[VersionSummary] = []
    grouped: dict[int, list] = {}
    for row in rows:
        grouped.setdefault(row.vid, []).append(row)
    for group in grouped.values():
        versions.append(_version(group[0], tuple(_summary(row) for row in group)))
    return ModelHistory(name=name, versions=tuple(versions))


def resolve_scan(db: DbRef, name: str, reference: str) -> int:
    """A scan id from a version label, a scan label, a sha256 prefix, ``scan:ID``/``#ID`` or ID.

    A version (label or hash) means its latest scan. Ambiguity is an error, never a guess.
    """
    with open_db(db) as engine, unit_of_work(engine) as session:
        rows = _history_rows(session, name)
    ref = reference.strip()
    explicit = re.fullmatch(r"(?:scan:|#)(\d+)", ref)
    if explicit:
        matches = [row for row in rows if row.id == int(explicit.group(1))]
        if not matches:
            raise UnknownReferenceError(f"{name!r} has no scan {explicit.group(1)}")
        return matches[0].id
    by_label = [row for row in rows if ref in (row.vlabel, row.label)]
    if by_label:
        return by_label[-1].id
    candidates: dict[str, int] = {}
    if ref.isdigit():
        candidates.update({f"scan {row.id}": row.id for row in rows if row.id == int(ref)})
    if len(ref) >= 4 and re.fullmatch(r"[0-9a-fA-F]+", ref):
        for row in rows:  # rows are oldest first: the last one kept per version is its latest
            if row.sha256.startswith(ref.lower()):
                candidates[f"version {row.sha256[:12]}"] = row.id
    if len(candidates) == 1:
        return next(iter(candidates.values()))
    if not candidates:
        raise UnknownReferenceError(f"{reference!r} matches no label, hash prefix (4+ hex digits) or "
                                    f"scan id of {name!r}; see `redaudit history {name}`")
    raise UnknownReferenceError(f"{reference!r} is ambiguous in {name!r}: "
                                f"{', '.join(sorted(candidates))}; use scan:ID or a longer prefix")


def load_scan(db: DbRef, scan_id: int) -> StoredScan:
    """One scan with its version, settings, layer rows and similarity matrix."""
    with open_db(db) as engine, unit_of_work(engine) as session:
        scan = session.get(Scan, scan_id)
        if scan is None:
            raise UnknownReferenceError(f"no scan {scan_id} in the history")
        version = scan.version
        parent = session.get(ModelVersion, version.parent_id) if version.parent_id else None
        row = session.execute(select(*_SCAN_COLUMNS).where(Scan.id == scan_id)).one()
        settings = dict(scan.config, samples_used=scan.samples, batches=scan.batches,
                        input_hash=scan.input_hash, inputs_real=scan.inputs_real,
                        provider=scan.provider, backend_used=scan.backend)
        layers = tuple(LayerRecord(position=layer.position, name=layer.name, op=layer.op,
                                   shape=tuple(layer.shape), redundancy=layer.redundancy,
                                   most_similar=layer.most_similar,
                                   most_similar_cka=layer.most_similar_cka, issue=layer.issue)
                       for layer in scan.layers)
        matrix = scan.matrix
        return StoredScan(
            model_name=version.model.name,
            version=VersionSummary(sha256=version.sha256, label=version.label,
                                   size_bytes=version.size_bytes,
                                   parameter_count=version.parameter_count,
                                   created_at=utc(version.created_at), path=version.path,
                                   parent_sha256=parent.sha256 if parent else None),
            summary=_summary(row), settings=settings, layers=layers,
            layer_order=tuple(matrix.layer_order) if matrix else (),
            similarity=npy_to_matrix(matrix.npy) if matrix else np.zeros((0, 0), np.float32))
