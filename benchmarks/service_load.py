"""Load and overhead of `redaudit serve` on loopback (single machine, SQLite, embedded workers).

1. 50 concurrent uploads (distinct small models, each queued as a scan) while 500 status polls
   run: lost jobs, duplicated rows, 5xx count, p50/p95 latency of the polls.
2. Service overhead: upload → submit → result of one small model vs the same scan by the CLI
   (`redaudit scan`, a fresh process) and in-process `redaudit.scan`; medians of 5, interleaved.
3. A queue of 20 scans on `serve --workers 2` vs `--workers 1`: wall time to drain.

Run alone: `python benchmarks/service_load.py` (prints a JSON summary and a few lines).
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.models import residual_cnn  # noqa: E402

SMALL = {"samples": 256, "cka_batch": 64}
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, folder: Path, workers: int) -> None:
        self.db = f"sqlite:///{folder / 'history.db'}"
        self.token = subprocess.run([sys.executable, "-m", "redaudit.cli.main", "token", "create", "bench",
                                     "--scope", "write", "--db", self.db], env=ENV, capture_output=True,
                                    text=True, check=True).stdout.strip()
        port = _port()
        self.base = f"http://127.0.0.1:{port}/api/v1"
        self.log = open(folder / f"serve-{workers}.log", "w")
        self.process = subprocess.Popen([sys.executable, "-m", "redaudit.cli.main", "serve", "--port", str(port),
                                         "--db", self.db, "--data-dir", str(folder / "data"), "--workers",
                                         str(workers), "--log-level", "warning"], env=ENV, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.client = httpx.Client(base_url=self.base, headers=self.headers, timeout=120)
        for _ in range(300):
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit("serve did not start")

    def upload_and_scan(self, path: Path, name: str, client: httpx.Client | None = None) -> tuple[str, list[int]]:
        client = client or self.client
        upload = client.post("/uploads/model", content=path.read_bytes(),
                             headers={"content-type": "application/octet-stream"})
        job = client.post("/scans", json={"model": name, "blob": upload.json()["sha256"], "spec": SMALL}) \
            if upload.status_code == 201 else None
        return (job.json()["id"] if job is not None and job.status_code == 202 else ""), \
            [upload.status_code, job.status_code if job is not None else 0]

    def wait_all(self, job_ids: list[str], timeout: float = 1800) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = [self.client.get(f"/jobs/{job_id}").json() for job_id in job_ids]
            if all(job["state"] in ("succeeded", "failed", "cancelled") for job in jobs):
                return jobs
            time.sleep(0.1)
        raise SystemExit("jobs did not finish")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def _models(folder: Path, count: int) -> list[Path]:
    paths = []
    for seed in range(count):
        path = folder / f"m{seed}.onnx"
        onnx.save(residual_cnn(blocks=3, seed=100 + seed), str(path))
        paths.append(path)
    return paths


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def load_test(folder: Path) -> dict:
    (folder / "load").mkdir()
    server = Server(folder / "load", workers=1)
    models = _models(folder, 50)
    statuses: list[int] = []
    latencies: list[float] = []
    first_id, _ = server.upload_and_scan(models[0], "load-0")

    import threading

    local = threading.local()

    def poll(_i: int) -> None:
        if not hasattr(local, "client"):  # one keep-alive client per thread, as a real poller has
            local.client = httpx.Client(base_url=server.base, headers=server.headers, timeout=60)
        began = time.perf_counter()
        response = local.client.get(f"/jobs/{first_id}")
        latencies.append(time.perf_counter() - began)
        statuses.append(response.status_code)

    with ThreadPoolExecutor(max_workers=50) as uploaders, ThreadPoolExecutor(max_workers=8) as pollers:
        uploads = [uploaders.submit(server.upload_and_scan, path, f"load-{i}") for i, path in enumerate(models[1:], 1)]
        polls = [pollers.submit(poll, i) for i in range(500)]
        for future in polls:
            future.result()
        results = [future.result() for future in uploads]
    job_ids = [first_id] + [job_id for job_id, _ in results]
    statuses += [code for _, codes in results for code in codes]
    jobs = server.wait_all([job_id for job_id in job_ids if job_id])
    import sqlite3

    connection = sqlite3.connect(server.db.removeprefix("sqlite:///"))
    blobs = connection.execute("SELECT count(*) FROM service_blobs").fetchone()[0]
    scans = connection.execute("SELECT count(*) FROM scans").fetchone()[0]
    job_rows = connection.execute("SELECT count(*) FROM service_jobs").fetchone()[0]
    connection.close()
    server.stop()
    return {"uploads": 50, "polls": 500, "lost": 50 - sum(1 for job in jobs if job["state"] == "succeeded"),
            "duplicated": (blobs - 50) + (scans - 50) + (job_rows - 50),
            "server_errors": sum(1 for code in statuses if code >= 500),
            "poll_p50_ms": 1000 * _percentile(latencies, 0.5), "poll_p95_ms": 1000 * _percentile(latencies, 0.95)}


def overhead(folder: Path, repeats: int = 5) -> dict:
    (folder / "overhead").mkdir()
    server = Server(folder / "overhead", workers=1)
    path = _models(folder / "overhead", 1)[0]
    import redaudit

    service_s, cli_s, library_s = [], [], []
    for i in range(repeats):  # interleaved: service, CLI, library
        began = time.perf_counter()
        job_id, _ = server.upload_and_scan(path, f"over-{i}")
        [job] = server.wait_all([job_id])
        server.client.get(f"/jobs/{job_id}/result").raise_for_status()
        service_s.append(time.perf_counter() - began)
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "redaudit.cli.main", "scan", str(path), "--samples", "256",
                        "--cka-batch", "64"], env=ENV, capture_output=True, check=True)
        cli_s.append(time.perf_counter() - began)
        began = time.perf_counter()
        redaudit.scan(path, **SMALL)
        library_s.append(time.perf_counter() - began)
    server.stop()
    return {"service_submit_to_result_s": statistics.median(service_s), "cli_scan_s": statistics.median(cli_s),
            "library_scan_s": statistics.median(library_s)}


def scaling(folder: Path, jobs: int = 20) -> dict:
    times = {}
    for workers in (1, 2, 1, 2):  # interleaved, medians of 2 each
        sub = folder / f"scale-{workers}-{len(times.get(workers, []))}"
        sub.mkdir()
        server = Server(sub, workers=workers)
        path = _models(sub, 1)[0]
        blob = server.client.post("/uploads/model", content=path.read_bytes(),
                                  headers={"content-type": "application/octet-stream"}).json()["sha256"]
        began = time.perf_counter()
        ids = [server.client.post("/scans", json={"model": "q", "blob": blob,
                                                  "spec": {"samples": 1024, "cka_batch": 128}}).json()["id"]
               for _ in range(jobs)]
        done = server.wait_all(ids)
        times.setdefault(workers, []).append(time.perf_counter() - began)
        assert all(job["state"] == "succeeded" for job in done)
        server.stop()
    one, two = statistics.median(times[1]), statistics.median(times[2])
    return {"queue": jobs, "one_worker_s": one, "two_workers_s": two, "ratio": two / one}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="redaudit-service-bench-") as folder:
        root = Path(folder)
        parts = sys.argv[1:] or ["load", "overhead", "scaling"]
        runs = {"load": load_test, "overhead": overhead, "scaling": scaling}
        summary = {part: runs[part](root) for part in parts}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
