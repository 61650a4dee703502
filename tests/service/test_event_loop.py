"""Reads stay answerable while an upload waits for the database: an async handler that writes
synchronously would block the event loop, and with it every other request, for as long as the
write waits for SQLite's lock (up to the 30 s busy timeout) — how status polls reached seconds
under load in benchmarks/service_load.py."""
from __future__ import annotations

import hashlib
import sqlite3
import threading
import time

import onnx

from tests.models import residual_cnn
from tests.service.conftest import HANG_GUARD_S


def test_reads_are_served_while_an_upload_waits_for_the_write_lock(make_service, sqlite_url, tmp_path):
    service = make_service(sqlite_url, workers=0)
    path = tmp_path / "m.onnx"
    onnx.save(residual_cnn(blocks=2, seed=3), str(path))
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")  # another writer (a worker recording a scan) holds the lock
    uploaded: list[int] = []
    upload = threading.Thread(target=lambda: uploaded.append(service.upload(path).status_code))
    try:
        upload.start()
        stored = service.state.blobs.path(hashlib.sha256(path.read_bytes()).hexdigest())
        deadline = time.monotonic() + HANG_GUARD_S
        while not stored.exists() and time.monotonic() < deadline:  # received, checked, filed:
            time.sleep(0.01)  # next it writes the blob's row, and waits for the lock
        assert stored.exists() and upload.is_alive() and not uploaded
        answered: list[int] = []
        reader = threading.Thread(target=lambda: answered.append(
            service.client.get("/api/v1/health").status_code), daemon=True)
        reader.start()
        reader.join(10)  # a blocked event loop answers only after the writer lets go (never, here)
        assert answered == [200], "the event loop was blocked by an upload waiting for the database"
    finally:
        holder.execute("COMMIT")
        holder.close()
        upload.join(30)
    assert uploaded == [201]
