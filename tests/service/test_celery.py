"""Scale-out on real services: `serve --broker` + separate `redaudit worker` processes (Celery) on
Redis and on RabbitMQ, PostgreSQL as the database, models fetched over HTTP by sha256.

A worker SIGKILLed mid-scan: its job goes back to the queue when its lease expires and completes
on the other worker, recorded exactly once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from redaudit.cli.main import cli
from redaudit.history.db import make_engine
from tests.service.conftest import FAST_SPEC, HANG_GUARD_S
from tests.service.test_serve_cli import free_port, start_serve

LEASE_S = 3
BROKERS = {"redis": "redis://127.0.0.1:6379/7", "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//"}


def _reachable(url: str) -> bool:
    import socket

    port = 6379 if url.startswith("redis") else 5672
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def start_worker(broker: str, db: str, server: str, token: str, queue: str, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "redaudit.cli.main", "worker", "--broker", broker, "--db", db, "--server", server,
         "--queue", queue, "--lease", str(LEASE_S), "--log-level", "warning"],
        env={**os.environ, "PYTHONPATH": os.getcwd(), "REDAUDIT_TOKEN": token},
        stdout=log, stderr=subprocess.STDOUT, text=True)


class Cluster:
    def __init__(self, base: str, token: str, db: str) -> None:
        self.base, self.db = base, db
        self.headers = {"Authorization": f"Bearer {token}"}

    def submit(self, blob: str, spec: dict, queue: str) -> str:
        response = httpx.post(f"{self.base}/api/v1/scans", headers=self.headers, timeout=30,
                              json={"model": "net", "blob": blob, "spec": spec, "queue": queue})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict:
        return httpx.get(f"{self.base}/api/v1/jobs/{job_id}", headers=self.headers, timeout=30).json()

    def wait(self, job_ids, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = [self.job(job_id) for job_id in job_ids]
            if all(job["state"] in ("succeeded", "failed", "cancelled") for job in jobs):
                return jobs
            time.sleep(0.2)
        raise AssertionError(f"jobs did not finish in {timeout}s: {[(j['state'], j['worker']) for j in jobs]}")


@pytest.fixture(params=sorted(BROKERS))
def cluster(request, pg_schema_url, tmp_path):
    broker = BROKERS[request.param]
    if not _reachable(broker):
        if os.environ.get("CI"):
            pytest.fail(f"{request.param} does not answer at {broker}")
        pytest.skip(f"{request.param} does not answer at {broker}")
    token = CliRunner().invoke(cli, ["token", "create", "workers", "--scope", "write", "--db", pg_schema_url]).stdout.strip()
    port = free_port()
    # A queue name of its own per test keeps stale messages of other runs away from these workers.
    queue = "cpu"
    serve = start_serve(["--db", pg_schema_url, "--data-dir", str(tmp_path / "data"), "--broker", broker,
                         "--lease", str(LEASE_S)], port, log=open(tmp_path / "serve.log", "w"))
    base = f"http://127.0.0.1:{port}"
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]
    workers = [start_worker(broker, pg_schema_url, base, token, queue, log) for log in logs]
    yield Cluster(base, token, pg_schema_url), workers
    for process in [*workers, serve]:
        if process.poll() is None:
            process.terminate()
    for process in [*workers, serve]:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def _upload(cluster: Cluster, model_file) -> str:
    response = httpx.post(f"{cluster.base}/api/v1/uploads/model", content=model_file.read_bytes(),
                          headers={**cluster.headers, "content-type": "application/octet-stream"}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["sha256"]


def _scan_rows(db: str) -> tuple[int, int]:
    engine = make_engine(db)
    try:
        with engine.connect() as connection:
            scans = connection.execute(text("SELECT count(*) FROM scans")).scalar()
            distinct = connection.execute(text("SELECT count(DISTINCT scan_id) FROM service_jobs "
                                               "WHERE scan_id IS NOT NULL")).scalar()
            return scans, distinct
    finally:
        engine.dispose()


def test_two_workers_share_a_queue_and_a_killed_worker_loses_nothing(cluster, model_file):
    cluster, workers = cluster
    blob = _upload(cluster, model_file)
    quick = [cluster.submit(blob, FAST_SPEC, "cpu") for _ in range(6)]
    jobs = cluster.wait(quick, timeout=120)
    assert [job["state"] for job in jobs] == ["succeeded"] * 6, [job["error"] for job in jobs]
    assert len({job["scan_id"] for job in jobs}) == 6

    # Long enough to be caught running after its first progress beat: with one thread per job
    # (no longer every core each) 40,000 samples finished in about a second.
    long_job = cluster.submit(blob, {"samples": 400_000, "cka_batch": 32}, "cpu")
    deadline = time.monotonic() + HANG_GUARD_S
    job = cluster.job(long_job)
    while not (job["state"] == "running" and job["progress_done"] > 0) and time.monotonic() < deadline:
        time.sleep(0.1)
        job = cluster.job(long_job)
    assert job["state"] == "running", job
    victim_pid = int(job["worker"].split(":")[1].split("/")[0])
    victim = next(process for process in workers if process.pid == victim_pid)
    os.kill(victim_pid, signal.SIGKILL)
    victim.wait(10)
    [final] = cluster.wait([long_job], timeout=LEASE_S * 4 + 120)
    assert final["state"] == "succeeded", final
    assert final["attempts"] == 2 and int(final["worker"].split(":")[1].split("/")[0]) != victim_pid
    scans, distinct = _scan_rows(cluster.db)
    assert scans == distinct == 7  # every job recorded once, none twice
