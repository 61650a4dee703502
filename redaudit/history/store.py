"""The history API: :class:`HistoryStore`, one object per database, as Optuna's ``RDBStorage``.

A store owns one SQLAlchemy engine (and its connection pool) for its whole life: a CLI command,
the NAS loop or the service opens it once and calls it many times, instead of building and
disposing an engine per call. Each operation is one session and one transaction: it commits as
a whole or rolls back as a whole, so a failure while recording leaves no model, version, scan
or layer row. The schema revision is checked on the first operation (created on the first
write into an empty database) and not again.

The module-level functions (``record_scan(db, ...)``, ``model_history(db, ...)``) are thin
wrappers for one-off calls: ``db`` is a URL, a bare SQLite path, ``None`` (``$REDAUDIT_DB`` or
the default file), an open ``Engine`` or a ``HistoryStore``; a store they open is closed again.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from redaudit.core.result import ScanResult
from redaudit.history import reads, writes
from redaudit.history.baseline import Baseline, latest_comparable_in
from redaudit.history.db import display_url, make_engine, translated_errors, writer
from redaudit.history.diff import ScanDiff, diff_scans
from redaudit.history.schema import downgrade, ensure_schema, revision_status, upgrade
from redaudit.history.errors import SameScanError
from redaudit.history.models import PruneVerification
from redaudit.history.records import ModelHistory, StoredScan
from redaudit.history.writes import Recorded


class HistoryStore:
    """The scan history in one database; create once, use for every operation, then ``close``.

    Also a context manager. Thread-safe as SQLAlchemy engines are (one session per call).
    """

    def __init__(self, db: str | Engine | None = None) -> None:
        self._owns_engine = not isinstance(db, Engine)
        self.engine: Engine = make_engine(db) if self._owns_engine else db
        self._schema_checked = False

    @property
    def url(self) -> str:
        """The database URL with any password hidden, for messages."""
        return display_url(self.engine)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Session]:
        """One session in one transaction (schema checked first), for composing history writes
        with other tables that must commit together (the service's job rows): e.g.
        ``writes.record_in_session(session, result, writes.prepare_rows(result), name, label, None)``.
        ``write=True`` takes SQLite's write lock up front (``BEGIN IMMEDIATE``)."""
        if not self._schema_checked:
            ensure_schema(self.engine, create=write)
            self._schema_checked = True
        with unit_of_work(self.engine, write=write) as session:
            yield session


    # ------------------------------------------------------------------ writing

    def record(self, result: ScanResult, name: str, label: str | None = None,
               parent_sha256: str | None = None) -> Recorded:
        """Store ``result`` under model ``name`` in one transaction.

        The version is found (or created) by the file's sha256: scanning an unchanged file again
        adds a scan to the same version. A ``label`` names a new version; on an existing version
        it becomes an alias (``Recorded.version_status == "alias"``) unless it already is one of
        its labels; a label that names another version of ``name`` raises ``LabelInUseError``.
        ``parent_sha256`` (a version recorded earlier, under any model) marks the version as
        derived from it, e.g. pruned.
        """
        writes.validate_name(name)
        if label is not None:
            writes.validate_name(label, "label")
        rows = writes.prepare_rows(result)
        with self.transaction(write=True) as session:
            return writes.record_in_session(session, result, rows, name, label, parent_sha256)

    def record_pruned(self, before: ScanResult, after: ScanResult, name: str,
                      label: str | None = None, parent_sha256: str | None = None,
                      verification: Mapping[str, Any] | None = None) -> Recorded:
        """Record a pruned model's scan ``after`` as a child of the original, in ONE transaction.

        The original (``parent_sha256``, default ``before.model.sha256``) is recorded first, from
        its scan ``before`` under ``name``, when the history does not know those bytes under any
        model; ``Recorded.original_scan_id`` is then its scan id. Either both rows are committed
        or neither. ``verification`` (the columns of ``PruneVerification`` but the ids and time)
        is stored beside the pruned scan in the same transaction.
        """
        writes.validate_name(name)
        if label is not None:
            writes.validate_name(label, "label")
        parent = parent_sha256 or before.model.sha256
        before_rows, after_rows = writes.prepare_rows(before), writes.prepare_rows(after)
        with self.transaction(write=True) as session:
            original = None
            if not writes.known_sha256(session, parent):
                original = writes.record_in_session(session, before, before_rows, name, None, None)
            recorded = writes.record_in_session(session, after, after_rows, name, label, parent)
            if verification is not None:
                session.add(PruneVerification(scan_id=recorded.scan_id, created_at=datetime.now(timezone.utc),
                                              **verification))
        if original is None:
            return recorded
        return replace(recorded, original_scan_id=original.scan_id)

    # ------------------------------------------------------------------ reading

    def prune_verification(self, scan_id: int) -> dict[str, Any] | None:
        """What ``prune --record`` verified for the pruned model's scan ``scan_id`` (None if nothing)."""
        with self.transaction() as session:
            row = session.scalar(select(PruneVerification).where(PruneVerification.scan_id == scan_id))
            if row is None:
                return None
            return {column.name: getattr(row, column.name) for column in PruneVerification.__table__.columns}

    def model_history(self, name: str) -> ModelHistory:
        with self.transaction() as session:
            return reads.model_history(session, name)

    def resolve(self, name: str, reference: str) -> reads.Reference:
        with self.transaction() as session:
            return reads.resolve(session, name, reference)

    def load_scan(self, scan_id: int) -> StoredScan:
        with self.transaction() as session:
            return reads.load_scan(session, scan_id)

    def diff(self, name: str, before: str, after: str, *, force: bool = False) -> ScanDiff:
        """Diff two scans of ``name`` named by label, alias, hash prefix or scan id.

        Refuses (``SameScanError``) when both references are one scan, or two names of one
        version (e.g. a label and its alias): that would present a scan compared with itself
        as a diff. Two different scans of one version are compared (a rescan: the difference
        is measurement noise, and a note says so).
        """
        with self.transaction() as session:
            first, second = reads.resolve(session, name, before), reads.resolve(session, name, after)
            _refuse_self_comparison(name, first, second)
            stored = reads.load_scan(session, first.scan_id), reads.load_scan(session, second.scan_id)
        return diff_scans(*stored, force=force)

    def latest_comparable(self, name: str, result: ScanResult, *, force: bool = False,
                          any_probe: bool = False) -> Baseline:
        return latest_comparable_in(self.model_history(name), result, force=force, any_probe=any_probe)

    # ------------------------------------------------------------------ schema

    def upgrade(self, revision: str = "head") -> tuple[str | None, str | None]:
        self._schema_checked = False
        return upgrade(self.engine, revision)

    def downgrade(self, revision: str = "base") -> tuple[str | None, str | None]:
        self._schema_checked = False
        return downgrade(self.engine, revision)

    def revision_status(self) -> tuple[str | None, str]:
        return revision_status(self.engine)


def _refuse_self_comparison(name: str, first: reads.Reference, second: reads.Reference) -> None:
    if first.scan_id == second.scan_id and not (first.names_version and second.names_version):
        raise SameScanError(f"{first.text!r} and {second.text!r} are both scan {first.scan_id} of "
                            f"{name!r}: a scan compared with itself is no diff; name two scans")
    if first.sha256 == second.sha256 and first.names_version and second.names_version:
        raise SameScanError(
            f"{first.text!r} and {second.text!r} name the same version of {name!r} (sha256 "
            f"{first.sha256[:12]}: the same file under two labels), so there is nothing to diff; "
            f"to compare two of its scans, name them by id (see `redaudit history {name} --scans`)")


DbRef = str | Engine | HistoryStore | None


@contextmanager
def unit_of_work(engine: Engine, *, write: bool = False) -> Iterator[Session]:
    """A session in one transaction on ``engine`` (no schema check); commits or rolls back whole,
    and driver errors become one-line ``DatabaseUnavailableError``."""
    bind = writer(engine) if write else engine
    with translated_errors(engine), Session(bind) as session, session.begin():
        yield session


@contextmanager
def open_store(db: DbRef) -> Iterator[HistoryStore]:
    """``db`` as a store: a given store is used as is, anything else opens one and closes it."""
    if isinstance(db, HistoryStore):
        yield db
        return
    store = HistoryStore(db)
    try:
        yield store
    finally:
        store.close()


def record_scan(db: DbRef, result: ScanResult, name: str, label: str | None = None,
                parent_sha256: str | None = None) -> int:
    """:meth:`HistoryStore.record` for one call; returns the new scan id."""
    with open_store(db) as store:
        return store.record(result, name, label, parent_sha256).scan_id


def record_pruned(db: DbRef, before: ScanResult, after: ScanResult, name: str,
                  label: str | None = None, parent_sha256: str | None = None,
                  verification: Mapping[str, Any] | None = None) -> Recorded:
    """:meth:`HistoryStore.record_pruned` for one call."""
    with open_store(db) as store:
        return store.record_pruned(before, after, name, label, parent_sha256, verification)


def model_history(db: DbRef, name: str) -> ModelHistory:
    with open_store(db) as store:
        return store.model_history(name)


def resolve_scan(db: DbRef, name: str, reference: str) -> int:
    """A scan id from a reference (see :func:`reads.resolve`); a version means its latest scan."""
    with open_store(db) as store:
        return store.resolve(name, reference).scan_id


def load_scan(db: DbRef, scan_id: int) -> StoredScan:
    with open_store(db) as store:
        return store.load_scan(scan_id)


def diff_references(db: DbRef, name: str, before: str, after: str, *, force: bool = False) -> ScanDiff:
    """:meth:`HistoryStore.diff` for one call."""
    with open_store(db) as store:
        return store.diff(name, before, after, force=force)
