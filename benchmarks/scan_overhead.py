"""Scan cost on a real CNN (ResNet-18 architecture), measured side by side in one run.

1. Overhead: wall time of `redaudit.scan` at defaults ÷ plain onnxruntime inference of the same
   model on the same samples in the same batches (target ≤ 1.5 on CPU).
2. Memory: peak RSS of a 10,240-sample scan ÷ a 2,560-sample scan (target ≤ 1.2), each in a fresh
   process with synthetic inputs generated batch by batch.

Usage: python benchmarks/scan_overhead.py [--image-size 224] [--memory-image-size 64]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redaudit  # noqa: E402
from resnet import export_resnet18  # noqa: E402

CACHE = Path(__file__).resolve().parent.parent / ".bench-cache"


def plain_inference_seconds(path: Path, inputs: np.ndarray, batch: int) -> float:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, {"input": inputs[:batch]})  # warm-up, as the scan's first batch is not
    begin = time.perf_counter()
    for start in range(0, len(inputs) - batch + 1, batch):
        session.run(None, {"input": inputs[start:start + batch]})
    return time.perf_counter() - begin


def peak_rss_mib(path: Path, samples: int) -> float:
    """Peak resident memory of a fresh process that runs one scan.

    Read from VmHWM in /proc (reset by exec), not from ru_maxrss, which Linux carries over from
    the forking parent and would report this benchmark's own input arrays.
    """
    code = (
        "import sys; sys.path.insert(0, %r); import redaudit; "
        "r = redaudit.scan(%r, samples=%d, device='cpu', backend='numpy'); "
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    ) % (str(Path(__file__).resolve().parent.parent), str(path), samples)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--memory-image-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=2560)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-only", action="store_true", help="skip the overhead measurement")
    args = parser.parse_args()

    if not args.memory_only:
        overhead(args)
    memory(args)


def overhead(args: argparse.Namespace) -> None:
    path = export_resnet18(CACHE / f"resnet18_{args.image_size}.onnx", args.image_size)
    inputs = np.random.default_rng(0).standard_normal((args.samples, 3, args.image_size, args.image_size),
                                                      dtype=np.float32)
    plain, scans = [], []
    result = None
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        plain.append(plain_inference_seconds(path, inputs, 256))
        begin = time.perf_counter()
        result = redaudit.scan(str(path), inputs={"input": inputs}, samples=args.samples, device="cpu", backend="numpy")
        scans.append(time.perf_counter() - begin)
    assert result is not None
    plain_s, scan_s = min(plain), min(scans)
    print(f"ResNet-18 {args.image_size}x{args.image_size}, {args.samples} samples, {len(result.layers)} block IRs, "
          f"ort {ort.__version__}, CPU")
    print(f"  plain onnxruntime inference : {plain_s:8.2f} s  (runs: {', '.join(f'{t:.2f}' for t in plain)})")
    print(f"  redaudit scan (defaults)    : {scan_s:8.2f} s  (runs: {', '.join(f'{t:.2f}' for t in scans)})")
    t = result.timings
    print(f"  of which: taps {t['taps_s']:.2f} s, augment {t['augment_s']:.2f} s, session {t['session_s']:.2f} s, "
          f"streaming {t['streaming_s']:.2f} s (inference {t['run_s']:.2f} s, similarity+overhead "
          f"{t['similarity_s']:.2f} s)")
    print(f"  overhead ratio scan / plain : {scan_s / plain_s:8.3f}   (target <= 1.5)")
    print(f"  MSRS {result.msrs:.3f} ± {result.msrs_std:.3f}")
    print(json.dumps({"overhead_ratio": scan_s / plain_s}))


def memory(args: argparse.Namespace) -> None:

    small = export_resnet18(CACHE / f"resnet18_{args.memory_image_size}.onnx", args.memory_image_size)
    rss = {n: peak_rss_mib(small, n) for n in (2560, 10240)}
    print(f"Peak RSS, ResNet-18 {args.memory_image_size}x{args.memory_image_size}, synthetic inputs:")
    print(f"  2,560 samples : {rss[2560]:8.1f} MiB")
    print(f"  10,240 samples: {rss[10240]:8.1f} MiB")
    print(f"  ratio         : {rss[10240] / rss[2560]:8.3f}   (target <= 1.2)")
    print(json.dumps({"memory_ratio": rss[10240] / rss[2560]}))


if __name__ == "__main__":
    main()
