"""Load and overhead of `redaudit serve` on loopback (single machine, SQLite, embedded workers).

1. 50 concurrent uploads (distinct small models, each queued as a scan) while 500 status polls
   run: lost jobs, duplicated rows, 5xx count, p50/p95 latency of the polls.
2. Service overhead: upload → submit → result of one small model vs the same scan by the CLI
   (`redaudit scan`, a fresh process) and in-process `redaudit.scan`; medians of 5, interleaved.
3. A queue of 20 scans on `serve --workers 2` vs `--workers 1`: wall time to drain.

Run alone: `python benchmarks/service_load.py [load] [overhead] [scaling]` (prints a JSON
summary with the load average before and after each part). `--compare DIR` also runs the load
part against the checkout in DIR (e.g. the main branch's), interleaved with this one, so a
before/after pair is measured under the same machine load: `python benchmarks/service_load.py
load --compare /work/main --runs 3`.
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
    def __init__(self, folder: Path, workers: int, root: Path = ROOT) -> None:
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.db = f"sqlite:///{folder / 'history.db'}"
        self.token = subprocess.run([sys.executable, "-m", "redaudit.cli.main", "token", "create", "bench",
                                     "--scope", "write", "--db", self.db], env=env, cwd=root, capture_output=True,
                                    text=True, check=True).stdout.strip()
        port = _port()
        self.base = f"http://127.0.0.1:{port}/api/v1"
        self.log = open(folder / f"serve-{workers}.log", "w")
        self.process = subprocess.Popen([sys.executable, "-m", "redaudit.cli.main", "serve", "--port", str(port),
                                         "--db", self.db, "--data-dir", str(folder / "data"), "--workers",
                                         str(workers), "--log-level", "warning"], env=env, cwd=root, stdout=self.log,
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
        """One job-list read per 0.1 s (not one read per job: 20 reads every 0.1 s kept a core of
        a 2-core machine busy and slowed the scans being timed)."""
        deadline, wanted = time.monotonic() + timeout, set(job_ids)
        while time.monotonic() < deadline:
            jobs = [job for job in self.client.get("/jobs", params={"limit": 1000}).json() if job["id"] in wanted]
            if len(jobs) == len(wanted) and all(job["state"] in ("succeeded", "failed", "cancelled") for job in jobs):
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


def poll_process(base: str, headers: dict, job_id: str, count: int, threads: int, interval_s: float,
                 channel) -> None:
    """The pollers, in a process of their own (a CI system polling is not the uploader): in the
    uploaders' process, 50 upload threads and the pollers would share one GIL, and the client's
    own waiting would be measured as the server's latency. Each thread keeps one keep-alive
    client, as a real poller does, and polls every ``interval_s`` so the polls span the uploads
    and the scans. Sends back (latencies, statuses, first start, last end)."""
    import threading

    local = threading.local()
    latencies: list[float] = []
    server_ms: list[float] = []  # the app's own time (Server-Timing), where the server sends it
    statuses: list[int] = []

    def poll(_i: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, headers=headers, timeout=60)
            local.client.get("/health")  # connect before the clock runs
        time.sleep(interval_s)
        began = time.perf_counter()
        response = local.client.get(f"/jobs/{job_id}")
        latencies.append(time.perf_counter() - began)
        statuses.append(response.status_code)
        timing = response.headers.get("server-timing", "")
        if timing.startswith("app;dur="):
            server_ms.append(float(timing.removeprefix("app;dur=")))

    channel.send("ready")
    channel.recv()
    began = time.time()
    with ThreadPoolExecutor(max_workers=threads) as pollers:
        list(pollers.map(poll, range(count)))
    channel.send((latencies, server_ms, statuses, began, time.time()))


def load_test(folder: Path, root: Path = ROOT, poll_interval_s: float = 0.1) -> dict:
    import multiprocessing

    (folder / "load").mkdir()
    server = Server(folder / "load", workers=1, root=root)
    models = _models(folder, 50)
    time.sleep(3)  # let serve's worker and check processes finish importing before the clock runs
    first_id, _ = server.upload_and_scan(models[0], "load-0")
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    poller = context.Process(target=poll_process, args=(server.base, server.headers, first_id, 500, 8,
                                                        poll_interval_s, theirs))
    poller.start()
    assert ours.recv() == "ready"
    began = time.time()
    ours.send("go")
    with ThreadPoolExecutor(max_workers=50) as uploaders:
        results = list(uploaders.map(lambda item: server.upload_and_scan(item[1], f"load-{item[0]}"),
                                     enumerate(models[1:], 1)))
    uploaded = time.time()
    job_ids = [first_id] + [job_id for job_id, _ in results]
    jobs = server.wait_all([job_id for job_id in job_ids if job_id])
    scanned = time.time()
    latencies, server_ms, statuses, polls_began, polls_ended = ours.recv()
    poller.join()
    statuses += [code for _, codes in results for code in codes]
    import sqlite3

    connection = sqlite3.connect(server.db.removeprefix("sqlite:///"))
    blobs = connection.execute("SELECT count(*) FROM service_blobs").fetchone()[0]
    scans = connection.execute("SELECT count(*) FROM scans").fetchone()[0]
    job_rows = connection.execute("SELECT count(*) FROM service_jobs").fetchone()[0]
    connection.close()
    server.stop()
    return {"uploads": 50, "polls": len(latencies), "lost": 50 - sum(1 for job in jobs if job["state"] == "succeeded"),
            "duplicated": (blobs - 50) + (scans - 50) + (job_rows - 50),
            "server_errors": sum(1 for code in statuses if code >= 500),
            "poll_p50_ms": 1000 * _percentile(latencies, 0.5), "poll_p95_ms": 1000 * _percentile(latencies, 0.95),
            "poll_max_ms": 1000 * max(latencies),
            "poll_server_p50_ms": _percentile(server_ms, 0.5) if server_ms else None,
            "poll_server_p95_ms": _percentile(server_ms, 0.95) if server_ms else None,
            "uploads_done_s": uploaded - began, "scans_done_s": scanned - began,
            "polls_span_s": [polls_began - began, polls_ended - began]}


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


def scaling(folder: Path, jobs: int = 20, rounds: int = 3, samples: int = 4096) -> dict:
    """A queue of ``jobs`` scans drained by ``serve --workers 1`` and ``--workers 2`` (each job
    then gets the default share of the cores, ``workers.default_threads``), and by both when the
    jobs ask for every core (``spec.threads`` = cores, onnxruntime's own default): interleaved,
    medians of ``rounds``. Each scan
    has ``samples`` samples (4,096: about 0.1 s on a quiet core — the per-job bookkeeping, claim,
    model load, session, record, is then a visible share; ``--scan-samples`` adds larger jobs)."""
    cores = os.cpu_count() or 1
    configs = {"one_worker_s": (1, None), "one_worker_all_cores_s": (1, cores), "two_workers_s": (2, None),
               "two_workers_all_cores_s": (2, cores)}
    times: dict[str, list[float]] = {name: [] for name in configs}
    for round_ in range(rounds):
        for name, (workers, threads) in configs.items():
            sub = folder / f"{name}-{round_}"
            sub.mkdir()
            server = Server(sub, workers=workers)
            path = _models(sub, 1)[0]
            blob = server.client.post("/uploads/model", content=path.read_bytes(),
                                      headers={"content-type": "application/octet-stream"}).json()["sha256"]
            time.sleep(3)  # the worker processes finish importing before the clock runs
            spec = {"samples": samples, "cka_batch": 256, **({"threads": threads} if threads else {})}
            began = time.perf_counter()
            ids = [server.client.post("/scans", json={"model": "q", "blob": blob, "spec": spec}).json()["id"]
                   for _ in range(jobs)]
            done = server.wait_all(ids)
            times[name].append(time.perf_counter() - began)
            assert all(job["state"] == "succeeded" for job in done)
            server.stop()
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"queue": jobs, "samples": samples, "cores": cores, "runs": times, **medians,
            "ratio": medians["two_workers_s"] / medians["one_worker_s"],
            "ratio_all_cores": medians["two_workers_all_cores_s"] / medians["one_worker_all_cores_s"]}


def _load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def compare_load(folder: Path, other: Path, runs: int, poll_interval_s: float) -> dict:
    """The load part on ``other``'s code and on this checkout's, interleaved ``runs`` times."""
    results: dict[str, list[dict]] = {"before": [], "after": []}
    for run in range(runs):
        for side, root in (("before", other), ("after", ROOT)):
            sub = folder / f"{side}-{run}"
            sub.mkdir()
            loadavg = _load_average()
            results[side].append({**load_test(sub, root, poll_interval_s), "loadavg_at_start": loadavg})
    summary = {}
    for side, items in results.items():
        summary[side] = {"root": str(other if side == "before" else ROOT), "runs": items,
                         "median_p50_ms": statistics.median(item["poll_p50_ms"] for item in items),
                         "median_p95_ms": statistics.median(item["poll_p95_ms"] for item in items)}
    return summary


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", help="load, overhead, scaling (default: all)")
    parser.add_argument("--compare", type=Path, help="also run the load part on this checkout's code (before)")
    parser.add_argument("--runs", type=int, default=1, help="interleaved runs of the comparison")
    parser.add_argument("--scan-samples", type=int, nargs="+", default=[4096],
                        help="samples per scan of the scaling part; several values: one scaling run each "
                             "(the per-job bookkeeping weighs less as jobs grow)")
    parser.add_argument("--poll-interval", type=float, default=0.1,
                        help="seconds each of the 8 pollers waits between polls (spreads 500 polls over the load)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="redaudit-service-bench-") as folder:
        root = Path(folder)
        runs = {"load": load_test, "overhead": overhead, "scaling": scaling}
        parts = args.parts or list(runs)
        if set(parts) - set(runs):
            parser.error(f"unknown part(s) {sorted(set(parts) - set(runs))}; choose from {list(runs)}")
        summary = {"cpus": os.cpu_count()}
        for part in parts:
            sub = root / part
            sub.mkdir()
            before = _load_average()
            if part == "load" and args.compare:
                result = compare_load(sub, args.compare.resolve(), args.runs, args.poll_interval)
            elif part == "load":
                result = load_test(sub, poll_interval_s=args.poll_interval)
            elif part == "scaling":
                result = {f"samples_{samples}": scaling(sub / str(samples), samples=samples)
                          for samples in args.scan_samples if not (sub / str(samples)).mkdir()}
            else:
                result = runs[part](sub)
            summary[part] = {**result, "loadavg_before": before, "loadavg_after": _load_average()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
