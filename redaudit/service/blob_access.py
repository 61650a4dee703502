"""How a worker reaches blobs: the two :class:`~redaudit.service.runner.BlobAccess` implementations.

A job names its model, inputs and result by sha256; where those bytes live depends on where the
worker runs, and nothing else in running a job does. An embedded worker shares the API's
:class:`~redaudit.service.storage.BlobStore` on this machine (:class:`LocalBlobs`); a Celery
worker on another machine fetches and uploads through the API over HTTP, verifying every byte
against its hash (:class:`HttpBlobs`). Both store a pruned model that came with a separate
weights file as a bundle (:func:`pruned_bundle`), the form the service reads such a model in.
Kept apart from :mod:`redaudit.service.workers`, which is about processes and leases, not bytes.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from redaudit.core.weights import data_file_path
from redaudit.service.archives import pack_bundle
from redaudit.service.jobs import JobStore
from redaudit.service.storage import BlobStore, UploadError


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
        bundle = pruned_bundle(path)
        if bundle is not None:
            from redaudit.core.external import hash_files

            sha256, size = self.store.put_file(bundle)
            identity = hash_files(path.read_bytes(), path.parent, [data_file_path(path).name])  # as load_model hashes it
            self.jobs.add_blob(sha256, "bundle", size, Path(filename).with_suffix(".tar").name, identity)
            return sha256
        sha256, size = self.store.put_file(path)
        self.jobs.add_blob(sha256, "pruned", size, filename, sha256)
        return sha256


def pruned_bundle(path: Path) -> Path | None:
    """A pruned model written with its weights in a data file beside it (a large model) is
    stored as a bundle of both — the form the service reads any model with external data in;
    None for a self-contained model, stored as it is."""
    data = data_file_path(path)
    if not data.is_file():
        return None
    bundle = path.with_name(path.stem + "-bundle.tar")
    pack_bundle(path, [data.name], bundle)
    return bundle


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
        bundle = pruned_bundle(path)
        kind, content_type = ("model", "application/x-tar") if bundle else ("pruned", "application/octet-stream")
        if bundle is not None:
            path, filename = bundle, Path(filename).with_suffix(".tar").name
        with open(path, "rb") as handle:
            response = self.client.post("/uploads/model", content=handle,
                                        params={"filename": filename, "kind": kind},
                                        headers={"content-type": content_type})
        if response.status_code not in (200, 201):
            raise UploadError(f"the server refused the pruned model: {response.json().get('detail')}")
        return response.json()["sha256"]
