"""Reading the history inside an open session: a model's versions and scans, references, a scan.

Plain functions of a ``Session`` that return detached records (``records.py``); the
``HistoryStore`` opens the session. The list query reads scan and version columns only (no
layers, no matrix), so 1,000 scans list in tens of milliseconds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from redaudit.history.errors import UnknownReferenceError
from redaudit.history.models import Model, ModelVersion, Scan, VersionLabel
from redaudit.history.records import (LayerRecord, ModelHistory, ScanSummary, StoredScan,
                                      VersionSummary, npy_to_matrix, result_config, utc)

_Parent = aliased(ModelVersion)
_SCAN_COLUMNS = (Scan.id, Scan.created_at, Scan.label, Scan.msrs, Scan.msrs_std, Scan.layer_count,
                 Scan.samples, Scan.seed, Scan.input_hash, Scan.redaudit_version, Scan.total_s,
                 Scan.level, Scan.reduce, Scan.cka_batch, Scan.estimator, Scan.aggregate,
                 Scan.epsilon, Scan.beta, Scan.taps, Scan.inputs_real, Scan.msrs_batches, Scan.micro_batch,
                 Scan.unit)
_VERSION_COLUMNS = (ModelVersion.id.label("vid"), ModelVersion.sha256, ModelVersion.label.label("vlabel"),
                    ModelVersion.size_bytes, ModelVersion.parameter_count,
                    ModelVersion.created_at.label("vcreated"), ModelVersion.path,
                    _Parent.sha256.label("parent_sha256"))


def _summary(row) -> ScanSummary:
    return ScanSummary(scan_id=row.id, created_at=utc(row.created_at), label=row.label,
                       msrs=row.msrs, msrs_std=row.msrs_std, layer_count=row.layer_count,
                       samples=row.samples, seed=row.seed, input_hash=row.input_hash,
                       redaudit_version=row.redaudit_version, total_s=row.total_s,
                       config=result_config(row._mapping),
                       msrs_batches=tuple(None if value is None else float(value)
                                          for value in row.msrs_batches or ()),
                       micro_batch=row.micro_batch, unit=row.unit)


def _version(row, scans: tuple[ScanSummary, ...] = (), aliases: tuple[str, ...] = ()) -> VersionSummary:
    return VersionSummary(sha256=row.sha256, label=row.vlabel, size_bytes=row.size_bytes,
                          parameter_count=row.parameter_count, created_at=utc(row.vcreated),
                          path=row.path, parent_sha256=row.parent_sha256, scans=scans,
                          aliases=aliases)


def _model_id(session: Session, name: str) -> int:
    model_id = session.scalar(select(Model.id).where(Model.name == name))
    if model_id is None:
        known = session.scalars(select(Model.name).order_by(Model.name).limit(5)).all()
        hint = f" (known: {', '.join(known)})" if known else " (the history is empty)"
        raise UnknownReferenceError(f"no model named {name!r} in the history{hint}")
    return model_id


def _history_rows(session: Session, model_id: int):
    query = (select(*_SCAN_COLUMNS, *_VERSION_COLUMNS)
             .join(ModelVersion, Scan.version_id == ModelVersion.id)
             .outerjoin(_Parent, ModelVersion.parent_id == _Parent.id)
             .where(ModelVersion.model_id == model_id)
             .order_by(ModelVersion.created_at, ModelVersion.id, Scan.created_at, Scan.id))
    return session.execute(query).all()


def _labels(session: Session, model_id: int) -> dict[int, list[str]]:
    """Every label per version id, oldest first."""
    rows = session.execute(select(VersionLabel.version_id, VersionLabel.label)
                           .where(VersionLabel.model_id == model_id)
                           .order_by(VersionLabel.created_at, VersionLabel.id)).all()
    labels: dict[int, list[str]] = {}
    for version_id, label in rows:
        labels.setdefault(version_id, []).append(label)
    return labels


def model_history(session: Session, name: str) -> ModelHistory:
    """Every version of ``name`` (in the order first recorded) with its scans (oldest first)."""
    model_id = _model_id(session, name)
    rows = _history_rows(session, model_id)
    labels = _labels(session, model_id)
    grouped: dict[int, list] = {}
    for row in rows:
        grouped.setdefault(row.vid, []).append(row)
    versions = [_version(group[0], tuple(_summary(row) for row in group),
                         tuple(label for label in labels.get(vid, []) if label != group[0].vlabel))
                for vid, group in grouped.items()]
    return ModelHistory(name=name, versions=tuple(versions))


@dataclass(frozen=True)
class Reference:
    """What a user's reference resolved to: a scan, and whether it named a version or a scan.

    A version reference (label, alias, hash prefix) means the version's latest scan;
    ``diff`` refuses two version references to the same version: that is no comparison.
    """

    text: str
    scan_id: int
    sha256: str
    version_label: str | None
    names_version: bool


def resolve(session: Session, name: str, reference: str) -> Reference:
    """A version label or alias, a scan label, a sha256 prefix, ``scan:ID``/``#ID`` or ID.

    Ambiguity is an error, never a guess.
    """
    model_id = _model_id(session, name)
    rows = _history_rows(session, model_id)
    ref = reference.strip()

    def scan_ref(row) -> Reference:
        return Reference(reference, row.id, row.sha256, row.vlabel, names_version=False)

    def version_ref(vid: int) -> Reference:
        latest = [row for row in rows if row.vid == vid][-1]  # rows are oldest first
        return Reference(reference, latest.id, latest.sha256, latest.vlabel, names_version=True)

    explicit = re.fullmatch(r"(?:scan:|#)(\d+)", ref)
    if explicit:
        matches = [row for row in rows if row.id == int(explicit.group(1))]
        if not matches:
            raise UnknownReferenceError(f"{name!r} has no scan {explicit.group(1)}")
        return scan_ref(matches[0])
    holder = session.scalar(select(VersionLabel.version_id).where(VersionLabel.model_id == model_id,
                                                                  VersionLabel.label == ref))
    if holder is not None and any(row.vid == holder for row in rows):
        return version_ref(holder)
    by_scan_label = [row for row in rows if row.label == ref]  # labels kept only on a scan (old data)
    if by_scan_label:
        return scan_ref(by_scan_label[-1])
    candidates: dict[str, Reference] = {}
    if ref.isdigit():
        candidates.update({f"scan {row.id}": scan_ref(row) for row in rows if row.id == int(ref)})
    if len(ref) >= 4 and re.fullmatch(r"[0-9a-fA-F]+", ref):
        for row in rows:
            if row.sha256.startswith(ref.lower()):
                candidates[f"version {row.sha256[:12]}"] = version_ref(row.vid)
    if len(candidates) == 1:
        return next(iter(candidates.values()))
    if not candidates:
        raise UnknownReferenceError(f"{reference!r} matches no label, hash prefix (4+ hex digits) or "
                                    f"scan id of {name!r}; see `redaudit history {name}`")
    raise UnknownReferenceError(f"{reference!r} is ambiguous in {name!r}: "
                                f"{', '.join(sorted(candidates))}; use scan:ID or a longer prefix")


def load_scan(session: Session, scan_id: int) -> StoredScan:
    """One scan with its version, settings, layer rows and similarity matrix."""
    scan = session.get(Scan, scan_id)
    if scan is None:
        raise UnknownReferenceError(f"no scan {scan_id} in the history")
    version = scan.version
    parent = session.get(ModelVersion, version.parent_id) if version.parent_id else None
    row = session.execute(select(*_SCAN_COLUMNS).where(Scan.id == scan_id)).one()
    settings = dict(scan.config, samples_used=scan.samples, batches=scan.batches,
                    input_hash=scan.input_hash, inputs_real=scan.inputs_real,
                    provider=scan.provider, backend_used=scan.backend, micro_batch=scan.micro_batch,
                    unit=scan.unit)
    layers = tuple(LayerRecord(position=layer.position, name=layer.name, op=layer.op,
                               shape=tuple(layer.shape), redundancy=layer.redundancy,
                               most_similar=layer.most_similar,
                               most_similar_cka=layer.most_similar_cka, issue=layer.issue)
                   for layer in scan.layers)
    aliases = tuple(label for label in _labels(session, version.model_id).get(version.id, [])
                    if label != version.label)
    matrix = scan.matrix
    return StoredScan(
        model_name=version.model.name,
        version=VersionSummary(sha256=version.sha256, label=version.label,
                               size_bytes=version.size_bytes,
                               parameter_count=version.parameter_count,
                               created_at=utc(version.created_at), path=version.path,
                               parent_sha256=parent.sha256 if parent else None, aliases=aliases),
        summary=_summary(row), settings=settings, layers=layers,
        layer_order=tuple(matrix.layer_order) if matrix else (),
        similarity=npy_to_matrix(matrix.npy) if matrix else np.zeros((0, 0), np.float32),
        warnings=tuple(scan.warnings or ()))
