"""Where jobs run: embedded worker threads inside ``serve``, and the lease reaper.

The embedded pool is the single-machine default: threads that claim queued jobs from the
database, so ``serve`` alone is a complete service. onnxruntime and the CKA math release the GIL,
so a scan thread leaves the API responsive. The reaper runs in ``serve`` in every mode: it turns
jobs whose worker stopped sending heartbeats back into queued jobs (or failed ones) and wakes a
worker for them, so no job stays "running" after its worker died.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from redaudit.service.archives import ArchiveLimits
from redaudit.service.jobs import JobStore
from redaudit.service.runner import run_claimed
from redaudit.service.storage import BlobStore, UploadError

log = logging.getLogger("redaudit.service")


def worker_name(suffix: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}{suffix}"


class LocalBlobs:
    """Blobs on this machine (embedded workers share the API's store)."""

    def __init__(self, store: BlobStore, jobs: JobStore) -> None:
        self.store, self.jobs = store, jobs

    def fetch(self, sha256: str) -> Path:
        return self.store.path(sha256)

    def kind(self, sha256: str) -> str:
        blob = self.jobs.blob(sha256)
        return blob.kind if blob is not None else "model"

    def put_model(self, path: Path, filename: str) -> str:
        sha256, size = self.store.put_file(path)
        self.jobs.add_blob(sha256, "pruned", size, filename, sha256)
        return sha256


class HttpBlobs:
    """Blobs fetched from the API by sha256 (Celery workers on other machines), cached locally
    and verified against their hash before use."""

    def __init__(self, server: str, token: str | None, cache: Path) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=server.rstrip("/") + "/api/v1", headers=headers, timeout=60.0)
        self.cache = Path(cache)
        self.cache.mkdir(parents=True, exist_ok=True)
        self._kinds: dict[str, str] = {}

    def fetch(self, sha256: str) -> Path:
        target = self.cache / sha256
        if target.is_file():
            return target
        partial = self.cache / f"{sha256}.{os.getpid()}.{threading.get_ident()}.part"
        digest = hashlib.sha256()
        with self.client.stream("GET", f"/blobs/{sha256}") as response:
            if response.status_code != 200:
                raise UploadError(f"the server could not give blob {sha256[:12]} (HTTP {response.status_code})")
            self._kinds[sha256] = response.headers.get("x-redaudit-blob-kind", "model")
            with open(partial, "wb") as handle:
                for chunk in response.iter_bytes(1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
        if digest.hexdigest() != sha256:
            partial.unlink(missing_ok=True)
            raise UploadError(f"blob {sha256[:12]} arrived corrupted (hash mismatch); retry the job")
        os.replace(partial, target)
        return target

    def kind(self, sha256: str) -> str:
        if sha256 not in self._kinds:
            response = self.client.head(f"/blobs/{sha256}")
            self._kinds[sha256] = response.headers.get("x-redaudit-blob-kind", "model")
        return self._kinds[sha256]

    def put_model(self, path: Path, filename: str) -> str:
        with open(path, "rb") as handle:
            response = self.client.post("/uploads/model", content=handle,
                                        params={"filename": filename, "kind": "pruned"},
                                        headers={"content-type": "application/octet-stream"})
        if response.status_code not in (200, 201):
            raise UploadError(f"the server refused the pruned model: {response.json().get('detail')}")
        return response.json()["sha256"]


class EmbeddedPool:
    """``count`` worker threads claiming jobs from the database until :meth:`stop`."""

    def __init__(self, jobs: JobStore, blobs, limits: ArchiveLimits, count: int, poll_s: float,
                 queues: tuple[str, ...] | None = None) -> None:
        self.jobs, self.blobs, self.limits, self.poll_s, self.queues = jobs, blobs, limits, poll_s, queues
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(i,), name=f"redaudit-worker-{i}", daemon=True)
                        for i in range(count)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def notify(self, _job_id: str | None = None) -> None:
        self.wake.set()

    def _loop(self, index: int) -> None:
        name = worker_name(f"/embedded-{index}")
        while not self.stopping.is_set():
            try:
                claim = self.jobs.claim(name, queues=self.queues)
            except Exception:
                log.warning("embedded worker %s could not read the job table", name, exc_info=True)
                claim = None
            if claim is None:
                self.wake.wait(self.poll_s)
                self.wake.clear()
                continue
            run_claimed(self.jobs, self.blobs, claim, self.limits)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self.wake.set()
        for thread in self.threads:
            thread.join(timeout)


class Reaper:
    """Every ``every`` seconds, requeue or fail jobs whose lease expired; wake workers for them."""

    def __init__(self, jobs: JobStore, every: float, dispatch: Callable[[str, str], None],
                 redispatch_after_s: float) -> None:
        self.jobs, self.every, self.dispatch = jobs, every, dispatch
        self.redispatch_after_s = redispatch_after_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="redaudit-reaper", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.wait(self.every):
            try:
                requeued = self.jobs.reap()
                for job_id in requeued:
                    log.info("job %s lost its worker; queued again", job_id)
                for job_id, queue in self.jobs.stale_queued(self.redispatch_after_s):
                    self.dispatch(job_id, queue)
                if requeued:
                    for job_id, queue in self.jobs.stale_queued(0):
                        if job_id in requeued:
                            self.dispatch(job_id, queue)
            except Exception:
                log.warning("lease reaper failed; retrying", exc_info=True)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
