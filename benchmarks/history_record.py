"""What recording adds to a scan: wall time of a 200-layer scan vs recording it in SQLite.

A residual CNN with 199 blocks (stem + 199 block outputs = 200 IRs at block level) is scanned
with the paper's defaults (2,560 samples, batches of 256); then the same ScanResult is recorded
into a fresh SQLite history several times (the first record also creates the schema). Both are
measured side by side in this run; the ratio is the overhead `scan --record` adds.

    python benchmarks/history_record.py [--samples 2560] [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import onnx  # noqa: E402

import models  # noqa: E402  (tests/models.py: generated networks)
import redaudit  # noqa: E402
from redaudit.history import HistoryStore, record_scan  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2560)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "deep.onnx"
        onnx.save(models.residual_cnn(blocks=199, channels=8, size=8), str(path))
        started = time.perf_counter()
        result = redaudit.scan(str(path), samples=args.samples)
        scan_s = time.perf_counter() - started
        url = f"sqlite:///{Path(folder) / 'history.db'}"
        started = time.perf_counter()
        record_scan(url, result, "deep", label="first")  # fresh file: includes schema creation
        first_s = time.perf_counter() - started
        times = []
        for index in range(args.repeat):  # each call opens its own engine, as the CLI does
            started = time.perf_counter()
            record_scan(url, result, "deep")
            times.append(time.perf_counter() - started)
        warm = []
        with HistoryStore(url) as store:  # one store kept open (library use: NAS, the service)
            store.record(result, "deep")  # the store checks the schema on its first operation
            for index in range(args.repeat):
                started = time.perf_counter()
                store.record(result, "deep")
                warm.append(time.perf_counter() - started)
    record_s = statistics.median(times)
    print(f"scan: {len(result.layers)} layers, {result.samples} samples, wall {scan_s:.2f} s")
    print(f"record (new store per call, median of {args.repeat}): {record_s * 1000:.1f} ms "
          f"= {100 * record_s / scan_s:.2f} % of the scan")
    print(f"record (open HistoryStore, median of {args.repeat}):  {statistics.median(warm) * 1000:.1f} ms "
          f"= {100 * statistics.median(warm) / scan_s:.2f} % of the scan")
    print(f"first record into a new file (creates the schema): {first_s * 1000:.1f} ms "
          f"= {100 * first_s / scan_s:.2f} % of the scan")


if __name__ == "__main__":
    main()
