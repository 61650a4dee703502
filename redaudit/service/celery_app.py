"""Scale-out: jobs run by Celery workers on any number of machines (Redis or RabbitMQ broker).

A Celery message only *wakes* a worker for a job id; the job's truth stays in the database. The
worker claims the job with a conditional UPDATE, so duplicate deliveries (a redelivered message
after a crash, a reaper's re-dispatch) are harmless: one claim wins, the others return. Messages
are acknowledged late (after the task ran) and rejected when the worker process is lost, so the
broker hands them to another worker; the service's lease reaper covers brokers that only
redeliver much later (Redis: the visibility timeout). Workers get model bytes from the API by
sha256 (``HttpBlobs``), so no filesystem is shared.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from celery import Celery

from redaudit.service.archives import ArchiveLimits
from redaudit.service.jobs import JobStore

log = logging.getLogger("redaudit.service")
TASK = "redaudit.run_job"
QUEUES = ("cpu", "gpu")


def make_celery(broker: str, lease_s: float = 60.0) -> Celery:
    app = Celery("redaudit", broker=broker)
    app.conf.update(
        task_acks_late=True,                 # a task is acknowledged after it ran ...
        task_reject_on_worker_lost=True,     # ... and handed back if its worker process died
        worker_prefetch_multiplier=1,        # a busy worker does not hoard queued jobs
        task_ignore_result=True,             # results live in the history database
        task_default_queue="cpu",
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": max(300, int(4 * lease_s))},
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,  # no pidbox queue: jobs are cancelled through the database
    )
    return app


def dispatcher(broker: str):
    """What ``serve --broker`` calls after queueing a job: send a wake-up to the job's queue."""
    app = make_celery(broker)

    def dispatch(job_id: str, queue: str) -> None:
        app.send_task(TASK, args=[job_id], queue=queue if queue in QUEUES else "cpu")
    return dispatch


@dataclass
class WorkerContext:
    """Per worker process: database, blob access, limits (built once, used by every task)."""

    jobs: JobStore
    blobs: object
    limits: ArchiveLimits
    name: str
    threads: int | None = None


_CONTEXT: list[WorkerContext] = []


def worker_app(broker: str, db: str, server: str, token: str | None, lease_s: float,
               max_attempts: int, limits: ArchiveLimits, cache: Path | None = None,
               threads: int | None = None) -> Celery:
    """The Celery app a ``redaudit worker`` process runs, with the job task registered.

    ``threads``: onnxruntime and BLAS threads per job whose spec leaves them open (``redaudit
    worker`` passes ``workers.default_threads(--concurrency)``: the cores but one, shared)."""
    from redaudit.history.db import make_engine
    from redaudit.history.schema import ensure_schema
    from redaudit.service.blob_access import HttpBlobs
    from redaudit.service.runner import run_claimed
    from redaudit.service.workers import worker_name

    app = make_celery(broker, lease_s)
    engine = make_engine(db)
    ensure_schema(engine, create=False)
    cache = cache or Path(tempfile.gettempdir()) / f"redaudit-worker-cache-{os.getuid()}"
    _CONTEXT[:] = [WorkerContext(JobStore(engine, lease_s, max_attempts), HttpBlobs(server, token, cache),
                                 limits, worker_name("/celery"), threads)]
    if threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)

    @app.task(name=TASK, acks_late=True, reject_on_worker_lost=True)
    def run_job(job_id: str) -> str:
        context = _CONTEXT[0]
        claim = context.jobs.claim(context.name, job_id=job_id)
        if claim is None:  # done, cancelled, or being run by a live worker: nothing to do
            return "skipped"
        log.info("job %s: attempt %d on %s", job_id, claim.attempt, context.name)
        return run_claimed(context.jobs, context.blobs, claim, context.limits, threads=context.threads)

    return app
