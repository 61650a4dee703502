"""The service's tables (jobs, API tokens, stored blobs) on the database's one metadata.

They live in the history database so that the API reads job state from the same place whatever
ran the job (a thread inside ``serve`` or a Celery worker on another machine), and so Alembic
revisions describe one schema. Importing this module registers the tables on
:class:`redaudit.orm.Base`'s metadata, beside history's (imported here: ``service_jobs.scan_id``
references ``scans``); Alembic's ``migrations/env.py`` imports both.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String,
                        Text)
from sqlalchemy.orm import Mapped, mapped_column

import redaudit.history.models  # noqa: F401 - scans, which jobs reference, on the same metadata
from redaudit.orm import Base

#: Job states; a job only moves forward: queued → running → succeeded | failed | cancelled, except
#: that a running job whose lease expired goes back to queued (another attempt) or to failed.
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)


class Blob(Base):
    """A stored upload, content-addressed by the sha256 of its bytes (file under the blob dir).

    ``kind`` is ``model`` (one .onnx), ``bundle`` (.zip/.tar of a model and its external data),
    ``inputs`` (.npz probe inputs) or ``pruned`` (a model written by a prune job).
    ``model_sha256`` is the history identity of a model: the hash of the .onnx file then its
    external-data files (core/model.py), which for a bundle differs from the archive's.
    """

    __tablename__ = "service_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(String(255))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Job(Base):
    """One unit of work: a scan, a check (scan + gate) or a prune of a stored model blob.

    ``spec`` is ``ScanSpec.to_json()`` exactly as validated at submission. ``lease_token`` is a
    fencing token: it changes on every claim, and heartbeats and completion are conditional
    UPDATEs on it, so a worker that lost its lease (presumed dead, job given to another) can
    neither extend it nor record a result. ``scan_id`` is unique: a job records at most one scan.
    """

    __tablename__ = "service_jobs"
    __table_args__ = (Index("ix_service_jobs_state_queue", "state", "queue"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(16))
    model_name: Mapped[str] = mapped_column(String(200))
    label: Mapped[str | None] = mapped_column(String(200))
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("service_blobs.sha256"))
    inputs_sha256: Mapped[str | None] = mapped_column(ForeignKey("service_blobs.sha256"))
    spec: Mapped[str] = mapped_column(Text)
    options: Mapped[dict] = mapped_column(JSON)
    record: Mapped[bool] = mapped_column(Boolean)
    progress_stage: Mapped[str | None] = mapped_column(String(40))
    progress_done: Mapped[int] = mapped_column(BigInteger)
    progress_total: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(200))
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    scan_id: Mapped[int | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"), unique=True)
    result: Mapped[str | None] = mapped_column(Text)  # the scan's JSON report
    outcome: Mapped[dict | None] = mapped_column(JSON)  # check / prune summary
    output_sha256: Mapped[str | None] = mapped_column(ForeignKey("service_blobs.sha256"))
    token_id: Mapped[int | None] = mapped_column(ForeignKey("service_tokens.id", ondelete="SET NULL"))


class ApiToken(Base):
    """An API token: only the sha256 of its secret is stored, never the secret itself.

    The secret is 32 random bytes, so a plain sha256 (no salt, no slow hash) is enough: there is
    nothing to brute-force. ``prefix`` (first characters of the token) lets people tell tokens
    apart in listings without revealing them.
    """

    __tablename__ = "service_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
