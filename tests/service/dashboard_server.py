"""A real service for the dashboard tests: uvicorn on 127.0.0.1 in a thread, a temporary SQLite
history, and what a team would have pushed through the API: two versions of a model (each
checked against the previous), and a prune of the second (a child version).

Everything goes through HTTP with real tokens, as `redaudit push` would do it."""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import onnx
import uvicorn

from redaudit.service.app import create_app
from redaudit.service.auth import create_token
from redaudit.service.settings import ServiceSettings
from redaudit.service.state import ServiceState
from tests.models import residual_cnn
from tests.service.conftest import HANG_GUARD_S

#: Ten CKA batches: the fewest for which a scan has an MSRS interval (MIN_INTERVAL_BATCHES).
SPEC = {"samples": 320, "cka_batch": 32}
MODEL = "resnet-prod"


@dataclass
class LiveService:
    base: str
    tokens: dict[str, str]
    server: uvicorn.Server
    thread: threading.Thread
    jobs: dict[str, dict]

    def api(self, scope: str = "read") -> httpx.Client:
        return httpx.Client(base_url=self.base + "/api/v1", timeout=60,
                            headers={"Authorization": f"Bearer {self.tokens[scope]}"})

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            assert job["state"] == "succeeded", job
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def _push(client: httpx.Client, path: Path, kind: str, body: dict) -> dict:
    upload = client.post("/uploads/model", content=path.read_bytes(), params={"filename": path.name},
                         headers={"content-type": "application/octet-stream"})
    assert upload.status_code == 201, upload.text
    job = client.post(f"/{kind}", json={"model": MODEL, "blob": upload.json()["sha256"], "spec": SPEC, **body})
    assert job.status_code == 202, job.text
    return _wait(client, job.json()["id"])


def start(folder: Path, public_read: bool = False) -> LiveService:
    settings = ServiceSettings(db=f"sqlite:///{folder / 'history.db'}", data_dir=folder / "data", poll_s=0.05,
                               public_read=public_read)
    state = ServiceState.open(settings)
    tokens = {scope: create_token(state.engine, f"dash-{scope}", scope)[1] for scope in ("read", "write")}
    port = _port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + HANG_GUARD_S
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    live = LiveService(f"http://127.0.0.1:{port}", tokens, server, thread, {})
    paths = []
    for seed in (1, 2):
        paths.append(folder / f"v{seed}.onnx")
        onnx.save(residual_cnn(blocks=3, seed=seed), str(paths[-1]))
    with live.api("write") as client:
        live.jobs["v1"] = _push(client, paths[0], "checks", {"label": "v1", "max_increase": 5})
        live.jobs["v2"] = _push(client, paths[1], "checks", {"label": "v2", "max_increase": 1000})
        live.jobs["prune"] = _push(client, paths[1], "prunes", {"label": "v2-pruned", "remove": 1})
    return live
