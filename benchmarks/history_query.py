"""`redaudit history` over 1,000 recorded scans, on SQLite and on PostgreSQL, side by side.

Fills each database with one model of 50 versions × 20 scans (40 layers each, with per-layer rows
and a similarity matrix, through the real `record_scan`), then times the `history` command
in-process (query + table rendering, a new engine per call as the CLI does) and `--json`, and
one cold process (`python -c ...`: interpreter start and imports included).

    python benchmarks/history_query.py [--scans 1000] [--pg postgresql://postgres@127.0.0.1:5432/test]
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from redaudit.cli.history import history_command  # noqa: E402
from redaudit.history import HistoryStore  # noqa: E402
from redaudit.core.msrs import msrs_of_matrix  # noqa: E402
from redaudit.core.result import LayerInfo, ModelInfo, ScanConfig, ScanResult  # noqa: E402

LAYERS = 40


def synthetic_result(version: int, scan: int) -> ScanResult:
    """A scan whose matrix has `version % 7` copied pairs: MSRS moves between versions."""
    rng = np.random.default_rng(version * 1000 + scan)
    noise = rng.uniform(0, 0.4, (LAYERS, LAYERS))
    matrix = (noise + noise.T) / 2
    for k in range(version % 7):
        matrix[k, k + 1] = matrix[k + 1, k] = 0.97
    np.fill_diagonal(matrix, 1.0)
    msrs = msrs_of_matrix(matrix)
    names = [f"/layer{i}/Relu_output_0" for i in range(LAYERS)]
    return ScanResult(
        model=ModelInfo(path=f"/m/v{version}.onnx", sha256=hashlib.sha256(f"v{version}".encode()).hexdigest(),
                        size_bytes=10_000, parameter_count=1_000_000 + version, opset=17, producer="bench",
                        inputs=(("x", "float32", ("N", 3, 32, 32)),)),
        layers=[LayerInfo(n, "Relu", ("N", 16, 8, 8)) for n in names], similarity=matrix, msrs=msrs,
        msrs_std=0.02 * msrs + 0.01, msrs_batches=np.full(10, msrs), config=ScanConfig(seed=scan),
        samples=2560, batches=10, dropped_samples=0, nan_batches=0, inputs_real=False,
        input_hash="0" * 64, provider="CPUExecutionProvider", backend="numpy", redaudit_version="0.1.0",
        timings={"total_s": 1.0})


def fill(url: str, total: int) -> float:
    started = time.perf_counter()
    per_version = 20
    with HistoryStore(url) as store:
        for index in range(total):
            version, scan = divmod(index, per_version)
            store.record(synthetic_result(version, scan), "bench", label=f"v{version}")
    return time.perf_counter() - started


def time_history(url: str, repeat: int = 5) -> tuple[float, float, float, float]:
    runner = CliRunner()
    timings: dict[str, list[float]] = {"": [], "--scans": [], "--json": []}
    for _ in range(repeat):
        for flag, values in timings.items():
            started = time.perf_counter()
            result = runner.invoke(history_command, ["bench", "--db", url, *([flag] if flag else [])])
            values.append(time.perf_counter() - started)
            assert result.exit_code == 0, result.output
    code = ("import sys; from redaudit.cli.history import history_command; "
            "history_command(['bench', '--db', sys.argv[1]], standalone_mode=False)")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, url], cwd=ROOT, check=True, capture_output=True)
    cold = time.perf_counter() - started
    return (*(statistics.median(values) for values in timings.values()), cold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=1000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'history.db'}"
        rows.append(("SQLite", fill(url, args.scans), *time_history(url)))
    try:
        import psycopg

        schema = f"redaudit_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.pg, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:  # benchmark still reports SQLite
        print(f"PostgreSQL skipped: {str(exc).splitlines()[0]}")
    else:
        url = f"{args.pg}?options=-csearch_path%3D{schema}"
        try:
            rows.append(("PostgreSQL", fill(url, args.scans), *time_history(url)))
        finally:
            with psycopg.connect(args.pg, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
    print(f"{args.scans} scans ({args.scans // 20} versions × 20, {LAYERS} layers each)")
    print("history: median of 5 in-process runs (new engine, schema check, query, render); cold: one new process")
    print(f"{'database':<11} {'fill':>8} {'history':>9} {'--scans':>9} {'--json':>8} {'cold process':>13}")
    for name, fill_s, table_s, scans_s, json_s, cold_s in rows:
        print(f"{name:<11} {fill_s:7.1f}s {table_s * 1000:7.0f}ms {scans_s * 1000:7.0f}ms "
              f"{json_s * 1000:6.0f}ms {cold_s * 1000:11.0f}ms")


if __name__ == "__main__":
    main()
