"""redaudit vs pytorch-cka (PyPI 1.1.3) and torch-cka (0.21), side by side in one run.

Same residual CNN as benchmarks/vs_torchcka.py (3 stages of L/3 basic blocks, widths 16/32/64,
32×32 inputs, seeded weights, exported once), same inputs (n = 1,024, seeded normal), same CKA
batches (64, in order), block outputs, unbiased HSIC averaged over the batches and then normalised
(redaudit's ``--aggregate hsic``; what both peers do by default).

* flattened: ``redaudit.scan(reduce="flatten")`` vs ``cka.compute_cka(model, model, loader)``
  (pytorch-cka, hooks on the block modules, flattens them itself) vs torch-cka's
  ``CKA.compare`` (L = 15 only by default: its double loop over pairs takes minutes at 45).
* pooled: ``redaudit.scan(reduce="pool")`` vs the torch forward pass with hooks that average the
  block outputs over H, W, then ``cka.cka_from_features`` on the pooled tensors. That function
  takes one batch, so both sides use one CKA batch of all 1,024 samples (``cka_batch=None``).
* CLI: ``redaudit scan … --quiet`` as a process (start included), flattened, against
  pytorch-cka's library call.

Times are medians of ``--repeats`` interleaved runs (drift in machine load hits every side
alike). Errors are max |Δ| over the matrix against a float64 pair-by-pair reference
(benchmarks/reference.py) computed on onnxruntime's IRs (torch's differ by ~1e-6, far below the
peers' float32 errors).

Usage: python benchmarks/vs_peers.py [--sizes 15 45] [--repeats 3] [--torch-cka-sizes 15] [--torch-cka-runs 1]
                                    [--torch-threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redaudit  # noqa: E402
from benchmarks.reference import raw_outputs, reference_matrix  # noqa: E402
from benchmarks.vs_torchcka import BATCH, SAMPLES, _namespace, prepare  # noqa: E402


def _load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def reference(onnx_path: Path, taps: list[str], inputs: np.ndarray, pooled: bool) -> np.ndarray:
    """Float64, pair by pair, on onnxruntime's IRs: flattened per CKA batch of 64 (HSIC
    aggregated), or pooled over H, W in one batch of every sample."""
    import onnx

    model = onnx.load(str(onnx_path))
    if pooled:  # pooled one chunk at a time, then one CKA batch of every sample
        chunks = [[array.astype(np.float64).mean(axis=(2, 3))
                   for array in raw_outputs(model, taps, {"input": inputs[start:start + BATCH]})]
                  for start in range(0, SAMPLES, BATCH)]
        return reference_matrix([np.concatenate(parts) for parts in zip(*chunks)], None, "hsic")
    hsic_sum = None
    for start in range(0, SAMPLES, BATCH):  # one batch at a time: L = 45 flattened is 1.8 GB in all
        raw = raw_outputs(model, taps, {"input": inputs[start:start + BATCH]})
        features = [array.reshape(len(array), -1) for array in raw]
        hsic = _batch_hsic_reference(features)
        hsic_sum = hsic if hsic_sum is None else hsic_sum + hsic
    diagonal = np.sqrt(np.diagonal(hsic_sum))
    return hsic_sum / np.outer(diagonal, diagonal)


def _batch_hsic_reference(features: list[np.ndarray]) -> np.ndarray:
    from benchmarks.reference import _gram, _hsic

    grams = [_gram(f) for f in features]
    return np.array([[_hsic(k, l) for l in grams] for k in grams])


def redaudit_library(onnx_path: Path, taps: list[str], inputs: np.ndarray, pooled: bool) -> np.ndarray:
    return redaudit.scan(str(onnx_path), taps=tuple(taps), reduce="pool" if pooled else "flatten",
                         cka_batch=None if pooled else BATCH, aggregate="hsic", inputs={"input": inputs},
                         samples=SAMPLES, device="cpu", backend="numpy").similarity


def pytorch_cka_flattened(model, blocks: int, inputs: np.ndarray) -> np.ndarray:
    import torch
    from cka import compute_cka

    loader = _namespace["loader"](inputs)
    names = _namespace["block_names"](blocks)
    with torch.no_grad():
        return compute_cka(model, model, loader, layers=names, device="cpu", progress=False)[0].double().numpy()


def pytorch_cka_pooled(model, blocks: int, inputs: np.ndarray) -> np.ndarray:
    import torch
    from cka import cka_from_features

    pooled: list[list[torch.Tensor]] = [[] for _ in range(blocks)]
    hooks = [model.blocks[i].register_forward_hook(
        lambda _m, _i, out, i=i: pooled[i].append(out.mean(dim=(2, 3)))) for i in range(blocks)]
    try:
        with torch.no_grad():
            for (batch,) in _namespace["loader"](inputs):
                model(batch)
            features = [torch.cat(parts) for parts in pooled]
            return cka_from_features(features, features).double().numpy()
    finally:
        for hook in hooks:
            hook.remove()


def torch_cka(model, blocks: int, inputs: np.ndarray) -> np.ndarray:
    return _namespace["torch_cka"](model, blocks, inputs)


def cli_command(onnx_path: Path, inputs_path: Path, taps: list[str]) -> list[str]:
    return [str(Path(sys.executable).parent / "redaudit"), "scan", str(onnx_path), "--inputs", str(inputs_path),
            "--samples", str(SAMPLES), "--cka-batch", str(BATCH), "--reduce", "flatten", "--aggregate", "hsic",
            "--device", "cpu", "--backend", "numpy", "--quiet", *[arg for tap in taps for arg in ("--tap", tap)]]


def compare(blocks: int, repeats: int, torch_cka_runs: int) -> dict:
    onnx_path, weights, inputs_path, taps = prepare(blocks)
    inputs = np.load(inputs_path)["input"]
    model = _namespace["build"](blocks, weights)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    sides = {
        "redaudit_flat": lambda: redaudit_library(onnx_path, taps, inputs, pooled=False),
        "redaudit_cli_flat": lambda: subprocess.run(cli_command(onnx_path, inputs_path, taps), check=True,
                                                    capture_output=True, env=env),
        "pytorch_cka_flat": lambda: pytorch_cka_flattened(model, blocks, inputs),
        "redaudit_pool": lambda: redaudit_library(onnx_path, taps, inputs, pooled=True),
        "pytorch_cka_pool": lambda: pytorch_cka_pooled(model, blocks, inputs),
    }
    if torch_cka_runs:
        sides["torch_cka_flat"] = lambda: torch_cka(model, blocks, inputs)
    times: dict[str, list[float]] = {name: [] for name in sides}
    loads: list[str] = []
    matrices: dict[str, np.ndarray] = {}
    for round_ in range(repeats):  # interleaved
        for name, run in sides.items():
            if name == "torch_cka_flat" and round_ >= torch_cka_runs:
                continue  # its double loop over pairs takes minutes: fewer runs
            begin = time.perf_counter()
            value = run()
            times[name].append(time.perf_counter() - begin)
            print(f"L = {blocks} round {round_ + 1}: {name} {times[name][-1]:.2f} s (load {_load()})", file=sys.stderr,
                  flush=True)
            if isinstance(value, np.ndarray):
                matrices[name] = value
        loads.append(_load())
    flat_ref = reference(onnx_path, taps, inputs, pooled=False)
    pool_ref = reference(onnx_path, taps, inputs, pooled=True)
    errors = {name: float(np.abs(matrix - (pool_ref if name.endswith("pool") else flat_ref)).max())
              for name, matrix in matrices.items()}
    return {"L": blocks, "median_s": {name: statistics.median(values) for name, values in times.items()},
            "runs_s": times, "errors": errors, "load_after_each_round": loads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[15, 45])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-cka-sizes", type=int, nargs="*", default=[15])
    parser.add_argument("--torch-cka-runs", type=int, default=1, help="runs of torch-cka per size (minutes each)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    import onnxruntime as ort
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    warnings.simplefilter("ignore")
    print(f"n = {SAMPLES}, CKA batch {BATCH} (pooled: one batch of {SAMPLES}), unbiased HSIC aggregated; torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}; load {_load()}")
    rows = [compare(blocks, args.repeats, args.torch_cka_runs if blocks in args.torch_cka_sizes else 0)
            for blocks in args.sizes]
    print("| L | case | redaudit library | redaudit CLI | pytorch-cka | torch-cka | library / pytorch-cka | "
          "CLI / pytorch-cka | max err redaudit / pytorch-cka / torch-cka | load (1/5/15 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        t, e = row["median_s"], row["errors"]
        torch_cka_s = f"{t['torch_cka_flat']:.2f} s" if "torch_cka_flat" in t else "—"
        torch_cka_e = f"{e['torch_cka_flat']:.1e}" if "torch_cka_flat" in e else "—"
        print(f"| {row['L']} | flattened | {t['redaudit_flat']:.2f} s | {t['redaudit_cli_flat']:.2f} s | "
              f"{t['pytorch_cka_flat']:.2f} s | {torch_cka_s} | {t['redaudit_flat'] / t['pytorch_cka_flat']:.2f} | "
              f"{t['redaudit_cli_flat'] / t['pytorch_cka_flat']:.2f} | {e['redaudit_flat']:.1e} / "
              f"{e['pytorch_cka_flat']:.1e} / {torch_cka_e} | {row['load_after_each_round'][-1]} |")
        print(f"| {row['L']} | pooled | {t['redaudit_pool']:.2f} s | — | {t['pytorch_cka_pool']:.2f} s | — | "
              f"{t['redaudit_pool'] / t['pytorch_cka_pool']:.2f} | — | {e['redaudit_pool']:.1e} / "
              f"{e['pytorch_cka_pool']:.1e} / — | {row['load_after_each_round'][-1]} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
