"""How wide is the bootstrap interval of MSRS at the paper's probe size? Numbers for docs/validation.md.

Run:  python benchmarks/msrs_interval.py --minilm demo-out/minilm.onnx --minilm-inputs demo-out/minilm_inputs.npz
      python benchmarks/msrs_interval.py --depth 3 --seed 0      # trains ResNet-20 on digits (paper_resnet.py)

For each model: a scan at 2,560 real probe samples (10 CKA batches of 256, the paper's setting),
MSRS, the per-batch std, the 95 % percentile bootstrap interval of the mean over batches
(redaudit.core.bootstrap, 2,000 resamples, fixed seed), its width absolute and relative to MSRS,
and the normal-approximation width 2 · 1.96 · std / √n beside it. For the ResNet, also at 1,024
and 10,240 samples (pixel-shift augmented probes, see paper_resnet.probe_set), to show the width
shrink with the number of batches. Each model file is copied into a temporary folder first.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def row(name: str, result) -> dict:
    interval = result.msrs_interval
    finite = np.asarray(result.msrs_batches, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    normal = 2 * 1.96 * result.msrs_std / math.sqrt(finite.size) if finite.size > 1 else float("nan")
    return {"model": name, "samples": result.samples, "batches": int(finite.size), "layers": len(result.layers),
            "msrs": result.msrs, "std": result.msrs_std, "low": interval.low, "high": interval.high,
            "width": interval.width, "relative": interval.width / result.msrs if result.msrs else float("nan"),
            "normal_width": normal}


def table(rows: list[dict]) -> str:
    lines = [("| model | L | samples | batches | MSRS | per-batch std | 95 % CI (bootstrap) | width | width ÷ MSRS "
              "| normal approx. width |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['layers']} | {r['samples']:,} | {r['batches']} | {r['msrs']:.3f} | "
                     f"{r['std']:.3f} | [{r['low']:.3f}, {r['high']:.3f}] | {r['width']:.3f} | "
                     f"{100 * r['relative']:.1f} % | {r['normal_width']:.3f} |")
    return "\n".join(lines)


def minilm(model: Path, inputs: Path, work: Path) -> list[dict]:
    import redaudit

    copy_model, copy_inputs = work / "minilm.onnx", work / "minilm_inputs.npz"
    shutil.copy(model, copy_model)
    shutil.copy(inputs, copy_inputs)
    result = redaudit.scan(str(copy_model), inputs=str(copy_inputs), samples=2560, device="cpu")
    return [row("MiniLM-L6 (demo)", result)]


def resnet(depth: int, seed: int, epochs: int, work: Path) -> list[dict]:
    import redaudit
    from benchmarks.paper_resnet import (
        build_resnet,
        export,
        load_digits_8,
        onnx_accuracy,
        probe_set,
        train,
    )

    digits = load_digits_8()
    model = build_resnet(depth, seed)
    started = time.perf_counter()
    train(model, digits, epochs, 3e-3, seed)
    path = export(model, work / f"resnet{6 * depth + 2}_seed{seed}.onnx")
    name = f"ResNet-{6 * depth + 2} (digits, seed {seed}, acc {onnx_accuracy(path, digits):.3f})"
    print(f"trained {name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    rows = []
    for size in (1024, 2560, 10240):
        result = redaudit.scan(str(path), inputs={"input": probe_set(digits, size)}, samples=size, device="cpu")
        rows.append(row(name, result))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm", type=Path, help="the demo's minilm.onnx (make demo)")
    parser.add_argument("--minilm-inputs", type=Path, help="the demo's minilm_inputs.npz")
    parser.add_argument("--depth", type=int, help="train ResNet-(6n+2) with n = DEPTH on digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    if args.minilm is None and args.depth is None:
        parser.error("give --minilm/--minilm-inputs and/or --depth")
    if args.depth is not None:
        import torch

        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        if args.minilm is not None:
            rows += minilm(args.minilm, args.minilm_inputs, Path(folder))
        if args.depth is not None:
            rows += resnet(args.depth, args.seed, args.epochs, Path(folder))
    print(table(rows))
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
