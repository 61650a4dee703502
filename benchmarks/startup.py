"""What a process pays before a scan computes anything: help, imports, and a scan's fixed cost.

Issue 27's targets: ``redaudit --help`` and ``redaudit scan --help`` ≤ 0.4 s; a scan's fixed cost
(imports, load, taps, augment, session) ≤ 0.5 s on the vs_peers network (L = 15). The fixed cost
is measured from outside: the wall time of a whole ``redaudit scan`` process of one CKA batch minus
the time its JSON says the batch itself took (``streaming_s``: inference and similarity), so
everything else — interpreter start, imports, loading, tap selection, augmentation, the session,
writing the JSON — is counted. Medians of ``--repeats`` runs, interleaved.

Also printed: ``import numpy, onnx, onnxruntime`` alone, and which ml_dtypes is installed (onnx
imports it; 0.7.0 spends ~0.6 s registering ufunc loops on numpy 2.4, which is why pyproject caps it).

Usage: python benchmarks/startup.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.vs_torchcka import BATCH, prepare

REDAUDIT = str(Path(sys.executable).parent / "redaudit")


def _wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=dict(os.environ, COLUMNS="100"))
    return time.perf_counter() - started


def _scan(onnx_path: Path, inputs_path: Path, taps: list[str], json_path: Path) -> tuple[float, float]:
    """(process wall, the JSON's streaming_s) of a one-batch flattened CLI scan."""
    command = [REDAUDIT, "scan", str(onnx_path), "--inputs", str(inputs_path), "--samples", str(BATCH),
               "--cka-batch", str(BATCH), "--reduce", "flatten", "--aggregate", "hsic", "--device", "cpu",
               "--backend", "numpy", "--quiet", "--json", str(json_path), *[a for tap in taps for a in ("--tap", tap)]]
    wall = _wall(command)
    return wall, json.loads(json_path.read_text())["timings"]["streaming_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    onnx_path, _, inputs_path, taps = prepare(15)
    rows: dict[str, list[float]] = {"redaudit --help": [], "redaudit scan --help": [],
                                    "import numpy, onnx, onnxruntime": [], "scan process (1 batch)": [],
                                    "  of which the batch (streaming_s)": [], "scan fixed cost": []}
    with tempfile.TemporaryDirectory() as folder:
        json_path = Path(folder) / "scan.json"
        for _ in range(args.repeats):
            rows["redaudit --help"].append(_wall([REDAUDIT, "--help"]))
            rows["redaudit scan --help"].append(_wall([REDAUDIT, "scan", "--help"]))
            rows["import numpy, onnx, onnxruntime"].append(
                _wall([sys.executable, "-c", "import numpy, onnx, onnxruntime"]))
            wall, streaming = _scan(onnx_path, inputs_path, taps, json_path)
            rows["scan process (1 batch)"].append(wall)
            rows["  of which the batch (streaming_s)"].append(streaming)
            rows["scan fixed cost"].append(wall - streaming)
    print(f"ml_dtypes {version('ml_dtypes')}, numpy {version('numpy')}, onnx {version('onnx')}, "
          f"onnxruntime {version('onnxruntime')}; load {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
    for name, values in rows.items():
        print(f"{name:36s} median {statistics.median(values):6.3f} s   runs "
              + " ".join(f"{value:.3f}" for value in values))


if __name__ == "__main__":
    main()
