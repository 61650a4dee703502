"""Job state in the history database: submit, claim, heartbeat, finish — each one transaction.

Every state change is a conditional UPDATE whose WHERE clause states the transition it expects
(``state = 'queued'``, ``lease_token = :mine``); its row count says whether it happened. That
is what makes several workers, on several machines, safe without any lock service: two workers
claiming one job, a worker finishing a job that was meanwhile handed to another (its lease
expired), or a cancel racing a completion — exactly one UPDATE matches, the others see 0 rows.
On PostgreSQL the UPDATE's row lock serialises them; on SQLite ``BEGIN IMMEDIATE`` does.
"""
from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from redaudit.history.db import translated_errors
from redaudit.history.errors import DatabaseUnavailableError
from redaudit.history.store import unit_of_work
from redaudit.service.models import (CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Blob, Job)

PUBLIC_FIELDS = ("id", "kind", "state", "queue", "model_name", "label", "blob_sha256", "inputs_sha256",
                 "options", "record", "progress_stage", "progress_done", "progress_total", "attempts",
                 "worker", "cancel_requested", "created_at", "started_at", "finished_at", "error",
                 "scan_id", "outcome", "output_sha256", "token_id")


def now() -> datetime:
    return datetime.now(timezone.utc)


class LeaseLost(Exception):
    """This worker's claim on the job is gone (lease expired and reassigned, or job finished)."""


@dataclass(frozen=True)
class Claim:
    """A job this worker now runs, and the fencing token every later write must present."""

    job_id: str
    token: str
    attempt: int


#: What a status read selects: the public fields and the spec, never ``result`` (a scan's JSON
#: report, with its L x L matrix: megabytes for a big model, and not what a poll asks for).
_VIEW_COLUMNS = tuple(getattr(Job, name) for name in (*PUBLIC_FIELDS, "spec"))


def job_view(job) -> dict[str, Any]:
    """A job (ORM object or a row of ``_VIEW_COLUMNS``) as the API shows it."""
    view = {name: getattr(job, name) for name in PUBLIC_FIELDS}
    for key in ("created_at", "started_at", "finished_at"):
        if view[key] is not None and view[key].tzinfo is None:  # SQLite drops the zone; we store UTC
            view[key] = view[key].replace(tzinfo=timezone.utc)
    view["spec"] = job.spec
    return view


class JobStore:
    """Jobs and blobs of one service database. Owns no engine: the caller's lives as long as it."""

    def __init__(self, engine: Engine, lease_s: float = 60.0, max_attempts: int = 2) -> None:
        self.engine, self.lease_s, self.max_attempts = engine, lease_s, max_attempts

    # -- blobs ----------------------------------------------------------------------------------
    def add_blob(self, sha256: str, kind: str, size: int, filename: str, model_sha256: str | None) -> Blob:
        with unit_of_work(self.engine, write=True) as session:
            blob = session.get(Blob, sha256)
            if blob is None:
                blob = Blob(sha256=sha256, kind=kind, size_bytes=size, filename=filename[:255],
                            model_sha256=model_sha256, created_at=now())
                session.add(blob)
            session.flush()
            session.expunge(blob)
            return blob

    def blob(self, sha256: str) -> Blob | None:
        with unit_of_work(self.engine) as session:
            blob = session.get(Blob, sha256)
            if blob is not None:
                session.expunge(blob)
            return blob

    # -- submission and reading -----------------------------------------------------------------
    def submit(self, *, kind: str, queue: str, model_name: str, label: str | None, blob_sha256: str,
               inputs_sha256: str | None, spec_json: str, options: dict, record: bool,
               token_id: int | None) -> str:
        job_id = uuid.uuid4().hex
        with unit_of_work(self.engine, write=True) as session:
            session.add(Job(id=job_id, kind=kind, state=QUEUED, queue=queue, model_name=model_name,
                            label=label, blob_sha256=blob_sha256, inputs_sha256=inputs_sha256,
                            spec=spec_json, options=options, record=record, progress_done=0,
                            attempts=0, max_attempts=self.max_attempts, cancel_requested=False,
                            created_at=now(), token_id=token_id))
        return job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        # Core, not an ORM session: the path every status poll takes (see _VIEW_COLUMNS).
        with translated_errors(self.engine), self.engine.connect() as connection:
            row = connection.execute(select(*_VIEW_COLUMNS).where(Job.id == job_id)).first()
        return job_view(row) if row is not None else None

    def result(self, job_id: str) -> str | None:
        with unit_of_work(self.engine) as session:
            return session.scalar(select(Job.result).where(Job.id == job_id))

    def result_of_scan(self, scan_id: int) -> str | None:
        """The JSON report of the job that recorded scan ``scan_id`` (None: recorded elsewhere)."""
        with unit_of_work(self.engine) as session:
            return session.scalar(select(Job.result).where(Job.scan_id == scan_id))

    def list(self, *, kind: str | None = None, state: str | None = None, model_name: str | None = None,
             limit: int = 100) -> list[dict]:
        query = select(*_VIEW_COLUMNS).order_by(Job.created_at.desc(), Job.id).limit(limit)
        if state:
            query = query.where(Job.state == state)
        if kind:
            query = query.where(Job.kind == kind)
        if model_name:
            query = query.where(Job.model_name == model_name)
        with translated_errors(self.engine), self.engine.connect() as connection:
            return [job_view(row) for row in connection.execute(query)]

    def counts(self) -> dict[str, int]:
        with unit_of_work(self.engine) as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        return {state: count for state, count in rows}

    # -- the worker's side ----------------------------------------------------------------------
    def _claimable(self, at: datetime):
        expired = (Job.state == RUNNING) & (Job.lease_until < at)
        return ((Job.state == QUEUED) | expired) & (Job.attempts < Job.max_attempts) & \
            (Job.cancel_requested.is_(False))

    def claim(self, worker: str, *, job_id: str | None = None, queues: Sequence[str] | None = None) -> Claim | None:
        """Take ``job_id`` (or the oldest queued job of ``queues``) if it is free; None if not."""
        at = now()
        with unit_of_work(self.engine, write=True) as session:
            if job_id is None:
                query = select(Job.id).where(Job.state == QUEUED).order_by(Job.created_at, Job.id).limit(1)
                if queues:
                    query = query.where(Job.queue.in_(list(queues)))
                job_id = session.scalar(query)
                if job_id is None:
                    return None
            token = secrets.token_hex(16)
            changed = session.execute(
                update(Job).where(Job.id == job_id, self._claimable(at))
                .values(state=RUNNING, worker=worker[:200], lease_token=token, attempts=Job.attempts + 1,
                        lease_until=at + timedelta(seconds=self.lease_s), started_at=at, error=None,
                        progress_stage="starting", progress_done=0, progress_total=None)
                .execution_options(synchronize_session=False)).rowcount
            if changed != 1:
                return None
            attempt = session.scalar(select(Job.attempts).where(Job.id == job_id))
            return Claim(job_id, token, attempt)

    def heartbeat(self, claim: Claim, stage: str | None = None, done: int | None = None,
                  total: int | None = None) -> bool:
        """Extend the lease (and record progress); returns whether a cancel was requested.

        Raises :class:`LeaseLost` when the job is no longer ours: the worker must stop at once
        and write nothing more.
        """
        values: dict[str, Any] = {"lease_until": now() + timedelta(seconds=self.lease_s)}
        if stage is not None:
            values.update(progress_stage=stage[:40], progress_done=int(done or 0),
                          progress_total=None if total is None else int(total))
        with unit_of_work(self.engine, write=True) as session:
            changed = session.execute(update(Job).where(Job.id == claim.job_id, Job.state == RUNNING,
                                                        Job.lease_token == claim.token)
                                      .values(**values).execution_options(synchronize_session=False)).rowcount
            if changed != 1:
                raise LeaseLost(claim.job_id)
            return bool(session.scalar(select(Job.cancel_requested).where(Job.id == claim.job_id)))

    def finish(self, claim: Claim, *, result: str | None, outcome: dict | None,
               output_sha256: str | None = None,
               record: Callable[[Session], int | None] | None = None) -> bool:
        """Mark the job succeeded and record its scan, both or neither (one transaction).

        The guarded UPDATE runs first: if this worker's lease is gone, nothing is recorded and
        False is returned — so a job is never recorded twice, even when two workers ran it.
        A succeeded job's progress reads complete (done = total), and an outcome with a
        ``recorded_scan_id`` key gets the id of the scan recorded with it.
        """
        for attempt in range(5):
            try:
                return self._finish_once(claim, result, outcome, output_sha256, record)
            except DatabaseUnavailableError as error:
                # Two workers creating the same model or version at once: one insert loses on a
                # unique constraint (PostgreSQL). The whole transaction rolled back; run it
                # again, and this time the row is there to be found.
                if not isinstance(error.__cause__, IntegrityError) or attempt == 4:
                    raise
        return False

    def _finish_once(self, claim, result, outcome, output_sha256, record) -> bool:
        with unit_of_work(self.engine, write=True) as session:
            changed = session.execute(
                update(Job).where(Job.id == claim.job_id, Job.state == RUNNING, Job.lease_token == claim.token)
                .values(state=SUCCEEDED, finished_at=now(), result=result, outcome=outcome,
                        output_sha256=output_sha256, lease_until=None, progress_stage="done",
                        progress_done=func.coalesce(Job.progress_total, Job.progress_done))
                .execution_options(synchronize_session=False)).rowcount
            if changed != 1:
                return False
            scan_id = record(session) if record is not None else None
            if scan_id is not None:
                values = {"scan_id": scan_id}
                if outcome is not None and "recorded_scan_id" in outcome:
                    values["outcome"] = {**outcome, "recorded_scan_id": scan_id}
                session.execute(update(Job).where(Job.id == claim.job_id).values(**values)
                                .execution_options(synchronize_session=False))
            return True

    def end(self, claim: Claim, state: str, error: str | None) -> bool:
        """Mark the claimed job failed or cancelled (only if it is still ours)."""
        with unit_of_work(self.engine, write=True) as session:
            return session.execute(
                update(Job).where(Job.id == claim.job_id, Job.state == RUNNING, Job.lease_token == claim.token)
                .values(state=state, finished_at=now(), error=error, lease_until=None)
                .execution_options(synchronize_session=False)).rowcount == 1

    # -- the API's side -------------------------------------------------------------------------
    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued job at once; ask a running one to stop. Returns the state after."""
        with unit_of_work(self.engine, write=True) as session:
            session.execute(update(Job).where(Job.id == job_id, Job.state == QUEUED)
                            .values(state=CANCELLED, finished_at=now(), error="cancelled before it started")
                            .execution_options(synchronize_session=False))
            session.execute(update(Job).where(Job.id == job_id, Job.state == RUNNING)
                            .values(cancel_requested=True).execution_options(synchronize_session=False))
            return session.scalar(select(Job.state).where(Job.id == job_id))

    def stale_queued(self, older_than_s: float) -> list[tuple[str, str]]:
        """(id, queue) of jobs queued for longer than ``older_than_s``: their wake-up message may
        have been lost (broker down at submission), so the reaper sends another."""
        cutoff = now() - timedelta(seconds=older_than_s)
        with unit_of_work(self.engine) as session:
            return [(row.id, row.queue) for row in
                    session.execute(select(Job.id, Job.queue).where(Job.state == QUEUED, Job.created_at < cutoff)
                                    .order_by(Job.created_at).limit(100))]

    def reap(self) -> list[str]:
        """Deal with running jobs whose lease expired (their worker died or hung).

        A cancelled one becomes cancelled; one with attempts left goes back to queued (returned,
        so the caller can wake a worker); the rest fail with a message saying why.
        """
        at = now()
        expired = (Job.state == RUNNING) & (Job.lease_until < at)
        with unit_of_work(self.engine, write=True) as session:
            session.execute(update(Job).where(expired, Job.cancel_requested.is_(True))
                            .values(state=CANCELLED, finished_at=at, lease_token=None, lease_until=None,
                                    error="cancelled; its worker stopped answering")
                            .execution_options(synchronize_session=False))
            session.execute(update(Job).where(expired, Job.attempts >= Job.max_attempts)
                            .values(state=FAILED, finished_at=at, lease_token=None, lease_until=None,
                                    error="its worker stopped answering (killed or lost) on every attempt; "
                                          "see the worker logs, then submit the job again")
                            .execution_options(synchronize_session=False))
            ids = list(session.scalars(select(Job.id).where(expired)))
            requeued = []
            for job_id in ids:
                if session.execute(update(Job).where(Job.id == job_id, expired)
                                   .values(state=QUEUED, worker=None, lease_token=None, lease_until=None,
                                           progress_stage=None, progress_done=0, progress_total=None)
                                   .execution_options(synchronize_session=False)).rowcount == 1:
                    requeued.append(job_id)
            return requeued
