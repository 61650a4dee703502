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
from tests.service.conftest import FAST_SPEC, HANG_GUARD_S


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


#: Seconds a request that waits for work may take (the first upload spawns the check processes):
#: httpx's 5 s default failed these tests on a loaded machine, not on behaviour.
SLOW = 120.0


def start_serve(args: list[str], port: int, log=subprocess.PIPE) -> subprocess.Popen:
    """``redaudit serve`` in a subprocess; ``log`` (a file) when its output is not read at the end,
    so a full pipe cannot block it."""
    process = subprocess.Popen([sys.executable, "-m", "redaudit.cli.main", "serve", "--port", str(port), *args],
                               env={**os.environ, "PYTHONPATH": os.getcwd()},
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + HANG_GUARD_S
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
    blob = httpx.post(f"{base}/api/v1/uploads/model", content=model_file.read_bytes(), timeout=SLOW,
                      headers={**headers, "content-type": "application/octet-stream"}).json()
    job = httpx.post(f"{base}/api/v1/scans", headers=headers, timeout=SLOW,
                     json={"model": "net", "blob": blob["sha256"], "spec": FAST_SPEC}).json()
    deadline = time.monotonic() + HANG_GUARD_S
    while job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = httpx.get(f"{base}/api/v1/jobs/{job['id']}", headers=headers).json()
    assert job["state"] == "succeeded", job
    process.terminate()
    log = process.communicate(timeout=10)[0]
    assert secret not in log and secret[4:] not in log


def test_push_exit_codes_follow_check(served, model_file, tmp_path, monkeypatch):
    base, secret, _process = served
    runner = CliRunner()
    fast = ["--samples", "64", "--cka-batch", "32"]
    monkeypatch.delenv("REDAUDIT_TOKEN", raising=False)
    no_token = runner.invoke(cli, ["push", str(model_file), "--server", base, "--name", "net"])
    assert no_token.exit_code == 2 and "REDAUDIT_TOKEN" in no_token.stderr
    monkeypatch.setenv("REDAUDIT_TOKEN", secret)
    first = runner.invoke(cli, ["push", str(model_file), "--server", base, "--name", "net", "--label", "v1",
                                "--max-increase", "5", *fast])
    assert first.exit_code == 0, first.output
    assert "PASS" in first.stdout and "baseline" in first.stdout
    failing = runner.invoke(cli, ["push", str(model_file), "--server", base, "--name", "net",
                                  "--max-msrs", "0", *fast])
    assert failing.exit_code == 1, failing.output
    assert "FAIL" in failing.stdout and "exceeds --max-msrs 0" in failing.stdout
    other_probe = ["push", str(model_file), "--server", base, "--name", "net", "--max-increase", "5",
                   "--significant", "--samples", "128", "--cka-batch", "32"]
    refused_probe = runner.invoke(cli, other_probe)  # the same file on another probe: no baseline to compare
    assert refused_probe.exit_code == 2 and "was measured on this probe" in refused_probe.stderr
    assert "--any-probe" in refused_probe.stderr and refused_probe.stderr.count("\n") == 1
    noise = runner.invoke(cli, [*other_probe, "--any-probe"])
    assert noise.exit_code == 0, noise.output  # the same file again, and 2 + 4 batches: too few to tell
    assert "PASS" in noise.stdout and "too few batches to tell" in noise.stdout and "another probe" in noise.stdout
    alone = runner.invoke(cli, ["push", str(model_file), "--server", base, "--name", "net", "--significant"])
    assert alone.exit_code == 2 and alone.stderr.count("\n") == 1 and "--max-increase" in alone.stderr
    garbage = tmp_path / "bad.onnx"
    garbage.write_bytes(b"not a model")
    refused = runner.invoke(cli, ["push", str(garbage), "--server", base, "--name", "net"])
    assert refused.exit_code == 2 and "not an ONNX model" in refused.stderr
    assert refused.stderr.count("\n") == 1 and secret not in refused.stderr
    bad_option = runner.invoke(cli, ["push", str(model_file), "--server", base, "--name", "net", "--epsilon", "7"])
    assert bad_option.exit_code == 2 and "--epsilon" in bad_option.stderr
    unreachable = runner.invoke(cli, ["push", str(model_file), "--server", f"http://127.0.0.1:{free_port()}",
                                      "--name", "net"])
    assert unreachable.exit_code == 2 and "cannot reach" in unreachable.stderr


def test_token_created_over_the_api_never_reaches_the_log(tmp_path):
    db = f"sqlite:///{tmp_path / 'h.db'}"
    admin = CliRunner().invoke(cli, ["token", "create", "ops", "--scope", "admin", "--db", db]).stdout.strip()
    port = free_port()
    process = start_serve(["--db", db, "--data-dir", str(tmp_path / "data"), "--log-level", "debug"], port)
    try:
        created = httpx.post(f"http://127.0.0.1:{port}/api/v1/tokens", json={"name": "ci", "scope": "write"},
                             headers={"Authorization": f"Bearer {admin}"})
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/jobs",
                         headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    finally:
        process.terminate()
        log = process.communicate(timeout=30)[0]
    assert "POST /api/v1/tokens" in log  # the access log is on, and at debug level
    assert secret not in log and secret[4:] not in log and admin not in log


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads process trees from /proc")
def test_worker_and_check_processes_exit_when_serve_is_killed(served, model_file):
    base, secret, process = served
    upload = httpx.post(f"{base}/api/v1/uploads/model", content=model_file.read_bytes(), timeout=SLOW,  # starts a check process
                        headers={"Authorization": f"Bearer {secret}", "content-type": "application/octet-stream"})
    assert upload.status_code == 201
    children = [pid for pid in _children(process.pid) if "resource_tracker" not in open(f"/proc/{pid}/cmdline").read()]
    assert len(children) >= 2  # one embedded worker, at least one check process
    process.kill()  # SIGKILL: no shutdown code runs in serve
    process.wait(10)
    deadline = time.monotonic() + HANG_GUARD_S
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in children), [pid for pid in children if _alive(pid)]
