"""`redaudit serve` as users start it: a real uvicorn process on a free port, OpenAPI served."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner

from redaudit.cli.main import cli
from tests.service.conftest import FAST_SPEC


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_serve(args: list[str], port: int, log=subprocess.PIPE) -> subprocess.Popen:
    """``redaudit serve`` in a subprocess; ``log`` (a file) when its output is not read at the end,
    so a full pipe cannot block it."""
    process = subprocess.Popen([sys.executable, "-m", "redaudit.cli.main", "serve", "--port", str(port), *args],
                               env={**os.environ, "PYTHONPATH": os.getcwd()},
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.stdout.read() if process.stdout else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("serve did not answer within 60 s")


@pytest.fixture
def served(tmp_path):
    db = f"sqlite:///{tmp_path / 'h.db'}"
    secret = CliRunner().invoke(cli, ["token", "create", "ci", "--scope", "write", "--db", db]).stdout.strip()
    port = free_port()
    process = start_serve(["--db", db, "--data-dir", str(tmp_path / "data")], port)
    yield f"http://127.0.0.1:{port}", secret, process
    process.terminate()
    process.wait(10)


def test_serve_answers_openapi_and_runs_a_scan(served, model_file):
    base, secret, process = served
    spec = httpx.get(f"{base}/api/v1/openapi.json").json()
    assert {"/api/v1/uploads/model", "/api/v1/scans", "/api/v1/jobs/{job_id}"} <= set(spec["paths"])
    headers = {"Authorization": f"Bearer {secret}"}
    blob = httpx.post(f"{base}/api/v1/uploads/model", content=model_file.read_bytes(),
                      headers={**headers, "content-type": "application/octet-stream"}).json()
    job = httpx.post(f"{base}/api/v1/scans", headers=headers,
                     json={"model": "net", "blob": blob["sha256"], "spec": FAST_SPEC}).json()
    deadline = time.monotonic() + 60
    while job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = httpx.get(f"{base}/api/v1/jobs/{job['id']}", headers=headers).json()
    assert job["state"] == "succeeded", job
    process.terminate()
    log = process.communicate(timeout=10)[0]
    assert secret not in log and secret[4:] not in log
