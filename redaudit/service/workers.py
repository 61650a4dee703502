"""Where jobs run: embedded worker processes of ``serve``, and the lease reaper.

The embedded pool is the single-machine default: child processes that claim queued jobs from
the database, so ``serve`` alone is a complete service and the API's interpreter is left to
requests. The reaper runs in ``serve`` in every mode: it turns
jobs whose worker stopped sending heartbeats back into queued jobs (or failed ones) and wakes a
worker for them, so no job stays "running" after its worker died.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from redaudit.core.cores import usable_cores
from redaudit.service.blob_access import LocalBlobs
from redaudit.service.jobs import JobStore
from redaudit.service.runner import run_claimed
from redaudit.service.settings import ServiceSettings

log = logging.getLogger("redaudit.service")


def worker_name(suffix: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}{suffix}"


def default_threads(concurrency: int) -> int:
    """onnxruntime and BLAS threads per job when the spec leaves them open: the cores this process
    may use (its CPU affinity, ``core.cores.usable_cores``) but one (kept for the API, the
    database and the rest), shared among the jobs that run at once, at least one each.

    Why not every core: a job with more threads than it gets cores waits at every parallel op
    for a thread the scheduler gave to someone else. On this project's 2 shared cores, 20 scans
    on one worker took 7.2 s with 2 threads and 2.0 s with 1; two workers with 2 threads each
    took 7.5 s, with 1 each 1.4 s (benchmarks/service_load.py scaling; docs/service.md).
    """
    return max(1, (usable_cores() - 1) // max(1, concurrency))


class EmbeddedPool:
    """``count`` worker *processes* claiming jobs from the database until :meth:`stop`.

    Processes, not threads: a scan is Python between its numpy and onnxruntime calls, and in the
    API's process that Python holds the API's GIL, so status polls waited behind scans (p95 of
    204 ms under load). A child process has its own interpreter; the API keeps its GIL for
    requests. Each child opens its own engine on ``settings.db`` and its own blob store on the
    same folder; the database is the only thing they share with the API, as Celery workers do.
    """

    def __init__(self, settings: ServiceSettings, count: int, queues: tuple[str, ...] | None = None) -> None:
        import multiprocessing

        # spawn, not fork: the API process has threads (and a database pool) a fork would copy
        # in whatever state they were in.
        context = multiprocessing.get_context("spawn")
        threads = default_threads(count)
        level = logging.getLogger().getEffectiveLevel()
        self.processes, self.bells, self._readers = [], [], []
        for index in range(count):
            # One pipe per child: a byte wakes it for a new job; the pipe's end (stop, or serve
            # killed outright) tells it to exit. No semaphores to leak, no parent to poll for.
            reader, bell = context.Pipe(duplex=False)
            self.processes.append(context.Process(target=_child_main, name=f"redaudit-worker-{index}", daemon=True,
                                                  args=(settings, index, queues, threads, level, reader)))
            self.bells.append(bell)
            self._readers.append(reader)
        self._lock = threading.Lock()

    def start(self) -> None:
        for process, reader, bell in zip(self.processes, self._readers, self.bells):
            process.start()
            reader.close()  # the child has its own copy; ours would keep the pipe open forever
            os.set_blocking(bell.fileno(), False)  # a busy child's full pipe must not block a request

    def notify(self, _job_id: str | None = None) -> None:
        """Wake every idle child (a raw byte each: a full pipe already means "look again")."""
        with self._lock:
            for bell in self.bells:
                try:
                    os.write(bell.fileno(), b"!")
                except OSError:  # pipe full (it will look anyway), or that child is gone
                    pass

    def stop(self, timeout: float = 5.0) -> None:
        """Tell the children to stop after their current job; terminate those still busy after
        ``timeout`` (their job's lease expires and the reaper queues it again)."""
        with self._lock:
            for bell in self.bells:
                bell.close()
            self.bells = []
        deadline = time.monotonic() + timeout
        for process in self.processes:
            if process.pid is not None:
                process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(5)


def _drain(reader, wait_s: float) -> bool:
    """Wait up to ``wait_s`` for a wake-up and swallow the queued ones; False once the pipe is
    closed (serve is stopping, or gone)."""
    try:
        if not reader.poll(wait_s):
            return True
        return bool(os.read(reader.fileno(), 1 << 16))  # b"": end of the pipe
    except (EOFError, OSError):
        return False


def _child_main(settings: ServiceSettings, index: int, queues: tuple[str, ...] | None, threads: int,
                log_level: int, reader) -> None:
    """One embedded worker process: claim, run, repeat, until its pipe to ``serve`` closes."""
    import signal

    from threadpoolctl import threadpool_limits

    from redaudit.history.db import make_engine
    from redaudit.service.storage import BlobStore

    # Not niced (unlike the check processes): a scan with several onnxruntime threads waits at
    # every parallel op for its slowest thread, and at a low priority on a busy machine that
    # thread is the one left waiting — 10 scans took 8 s instead of 0.8 s at nice +10 with 2
    # threads on 2 shared cores. The process split alone keeps polls off the scans' GIL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: serve stops us
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threadpool_limits(threads)  # BLAS in the CKA math, like onnxruntime's threads below
    engine = make_engine(settings.db)
    jobs = JobStore(engine, settings.lease_s, settings.max_attempts)
    blobs = LocalBlobs(BlobStore(settings.blob_dir), jobs)
    name = worker_name(f"/embedded-{index}")
    import redaudit.core.engine  # noqa: F401  (imported now, not inside the first job's time)

    while _drain(reader, 0):
        try:
            claim = jobs.claim(name, queues=queues)
        except Exception:
            log.warning("embedded worker %s could not read the job table", name, exc_info=True)
            claim = None
        if claim is None:
            if not _drain(reader, settings.poll_s):
                break
            continue
        run_claimed(jobs, blobs, claim, settings.limits, threads=threads, own_process=True)
    engine.dispose()


#: Extra wake-ups the reaper sends for one job that stays queued (its first message may have been
#: lost): a job queued behind a busy worker is not lost, and each extra message becomes a
#: "skipped" task once the job has run (11-12 per recovery before this bound).
MAX_REDISPATCHES = 2


class Reaper:
    """Every ``every`` seconds, requeue or fail jobs whose lease expired; wake workers for them.

    A job queued for longer than ``redispatch_after_s`` gets another wake-up, at most
    :data:`MAX_REDISPATCHES` times and at most once per ``redispatch_after_s``: bounded, not one
    per sweep for as long as it waits."""

    def __init__(self, jobs: JobStore, every: float, dispatch: Callable[[str, str], None],
                 redispatch_after_s: float) -> None:
        self.jobs, self.every, self.dispatch = jobs, every, dispatch
        self.redispatch_after_s = redispatch_after_s
        self.redispatched: dict[str, tuple[int, float]] = {}  # job id -> (wake-ups sent, monotonic time of the last)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="redaudit-reaper", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.wait(self.every):
            try:
                self.sweep()
            except Exception:
                log.warning("lease reaper failed; retrying", exc_info=True)

    def sweep(self) -> None:
        """One round: requeue expired leases (and wake a worker for each), re-wake stale queued jobs."""
        import time

        requeued = self.jobs.reap()
        for job_id in requeued:
            log.info("job %s lost its worker; queued again", job_id)
        stale = self.jobs.stale_queued(self.redispatch_after_s)
        at = time.monotonic()
        for job_id, queue in stale:
            sent, last = self.redispatched.get(job_id, (0, -float("inf")))
            if job_id in requeued or sent >= MAX_REDISPATCHES or at - last < self.redispatch_after_s:
                continue
            self.redispatched[job_id] = (sent + 1, at)
            self.dispatch(job_id, queue)
        waiting = {job_id for job_id, _ in stale}
        for job_id in [job_id for job_id in self.redispatched if job_id not in waiting]:
            del self.redispatched[job_id]  # ran (or left the queue): forget it
        if requeued:
            for job_id, queue in self.jobs.stale_queued(0):
                if job_id in requeued:
                    self.dispatch(job_id, queue)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
