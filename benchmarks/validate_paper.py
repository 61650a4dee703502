"""Does MSRS behave as the RedTest paper says? A seeded, CPU-only study on a ResNet family trained here.

Run:  python benchmarks/validate_paper.py            # full: n = 1…9, seeds 0 1 2, 15 epochs, prune n = 9
      python benchmarks/validate_paper.py --quick    # n = 1…4, seeds 0 1 2, 15 epochs, prune n = 4
      (or one process per seed with --seeds S --out DIR_S, then --merge DIR_0 DIR_1 DIR_2 --out DIR)
Writes OUT/results.json, OUT/tables.md and OUT/*.png (default OUT: benchmarks/out/validation).

1. Depth sweep: ResNet-(6n+2) on scikit-learn's digits (benchmarks/paper_resnet.py), test accuracy
   and MSRS at the paper's defaults (block IRs, pooled, unbiased CKA per batch of 256, 2,560 real
   probe samples, ε = 0.8, β = 100) per depth and seed; Spearman correlation of MSRS with depth.
2. Pruning at equal numbers of removed blocks: similarity-guided (redaudit's prune candidates,
   highest CKA(block input, block output) first), random, and "shallowing" (the last blocks);
   then a short fine-tune in torch, re-export, accuracy by onnxruntime.
3. Sensitivity: ε ∈ {0.7, 0.8, 0.9} × β ∈ {10, 100} (recomputed from the scan's mean CKA
   matrix, see msrs_grid), probe size 512…10,240 (augmented by pixel shifts, see probe_set), real vs synthetic
   probes — how far MSRS moves and whether the ranking of the models by MSRS changes.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import paper_report  # noqa: E402
from benchmarks.paper_resnet import (build_resnet, export, load_digits_8, onnx_accuracy, probe_set,  # noqa: E402
                                     train, without_blocks)

EPSILONS = (0.7, 0.8, 0.9)
BETAS = (10.0, 100.0)
PROBE_SIZES = (512, 1024, 2560, 5120, 10240)
FRACTIONS = (0.25, 0.5, 0.75)
RULES = ("similarity", "random", "shallowing")
BATCH = 256


def msrs_grid(similarity: np.ndarray) -> dict[str, float]:
    """MSRS of the batch-mean CKA matrix under each ε, β. The scan's MSRS is the mean of per-batch
    MSRS instead; on two shared cores rescanning every model once per batch was too slow, so the
    study records the gap at the defaults (``grid_gap``) to show how close the two are."""
    from redaudit.core.msrs import msrs_of_matrix

    return {f"{eps}/{beta:g}": msrs_of_matrix(similarity, eps, beta) for eps in EPSILONS for beta in BETAS}


def scan_model(path: Path, n: int, seed: int, digits, probes: dict[int, np.ndarray], sizes: bool) -> dict:
    import redaudit

    default = redaudit.scan(str(path), inputs={"input": probes[2560]}, device="cpu")
    if len(default.layers) != 3 * n + 1 or default.config.level != "block":
        raise RuntimeError(f"expected 3n+1 = {3 * n + 1} block IRs, the scan found {len(default.layers)} "
                           f"at level {default.config.level}")
    grid = msrs_grid(default.similarity)
    synthetic = redaudit.scan(str(path), samples=2560, seed=seed, device="cpu")
    row = {"n": n, "seed": seed, "blocks": 3 * n, "taps": len(default.layers), "weighted_layers": 6 * n + 2,
           "accuracy": onnx_accuracy(path, digits), "msrs": default.msrs, "msrs_std": default.msrs_std,
           "grid_gap": grid["0.8/100"] - default.msrs,
           "msrs_batches": default.msrs_batches.tolist(), "grid": grid, "msrs_synthetic": synthetic.msrs,
           "consecutive": default.consecutive_similarity().tolist(),
           "fraction_above_eps": float(np.mean(default.similarity[np.triu_indices(len(default.layers), 1)] > 0.8)),
           "similarity": default.similarity.tolist()}
    if sizes:
        row["by_probe_size"] = {str(size): default.msrs if size == 2560 else redaudit.scan(
            str(path), inputs={"input": probes[size]}, samples=size, device="cpu").msrs for size in PROBE_SIZES}
    return row


def block_index(name: str) -> int:
    match = re.search(r"blocks\.(\d+)/", name)
    if not match:
        raise RuntimeError(f"cannot map prune candidate {name!r} to a torch block")
    return int(match.group(1))


def similarity_order(path: Path, probe: np.ndarray) -> tuple[list[int], list[float]]:
    """Removable blocks, most similar to their input first, as redaudit's prune API ranks them."""
    from redaudit.prune import prune_model

    result = prune_model(str(path), list_only=True, inputs={"input": probe}, latency=False, measure_msrs=False,
                         device="cpu")
    ranked = sorted(result.candidates, key=lambda c: -c.similarity)
    return [block_index(c.name) for c in ranked], [c.similarity for c in ranked]


def torch_accuracy(model, digits) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float((model(torch.from_numpy(digits.test_x)).argmax(1).numpy() == digits.test_y).mean())


def prune_study(model, n: int, seed: int, path: Path, digits, probe: np.ndarray, finetune_epochs: int,
                work: Path) -> list[dict]:
    removable = [i for i, block in enumerate(model.blocks) if block.removable]
    ranked, similarity = similarity_order(path, probe)
    if sorted(ranked) != removable:
        raise RuntimeError(f"prune candidates {sorted(ranked)} are not the identity blocks {removable}")
    base = onnx_accuracy(path, digits)
    rows = []
    for fraction in FRACTIONS:
        k = max(1, round(fraction * len(removable)))
        rng = np.random.default_rng(1000 * seed + k)
        choice = {"similarity": ranked[:k], "random": sorted(rng.choice(removable, k, replace=False).tolist()),
                  "shallowing": removable[-k:]}
        for rule in RULES:
            pruned = without_blocks(model, choice[rule])
            before = torch_accuracy(pruned, digits)
            train(pruned, digits, finetune_epochs, 1e-3, seed)
            accuracy = onnx_accuracy(export(pruned, work / f"pruned_{rule}_{k}.onnx"), digits)
            rows.append({"n": n, "seed": seed, "fraction": fraction, "removed": k, "of": len(removable), "rule": rule,
                         "blocks": sorted(int(i) for i in choice[rule]), "accuracy_original": base,
                         "accuracy_no_finetune": before, "accuracy": accuracy, "retained": accuracy / base})
    rows.append({"n": n, "seed": seed, "ranking": ranked, "ranking_similarity": similarity})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 1…4, 15 epochs, pruning on n = 4")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds to run (one process per seed can run in parallel; then --merge)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                        help="combine the results.json of runs in DIR... into --out, run nothing")
    parser.add_argument("--depths", type=int, nargs="+", help="values of n (blocks per stage)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--prune-depth", type=int, help="n of the pruned model; 0: no pruning study")
    parser.add_argument("--finetune-epochs", type=int)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "validation")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    depths = args.depths or ([1, 2, 3, 4] if args.quick else list(range(1, 10)))
    epochs = args.epochs or 15
    prune_depth = args.prune_depth if args.prune_depth is not None else (4 if args.quick else 9)
    finetune_epochs = args.finetune_epochs or 2
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    started = time.perf_counter()
    (args.out / "models").mkdir(parents=True, exist_ok=True)
    digits = load_digits_8()
    probes = {size: probe_set(digits, size) for size in PROBE_SIZES}
    sweep, pruning = [], []
    settings = {"depths": depths, "seeds": args.seeds, "epochs": epochs, "prune_depth": prune_depth,
                "finetune_epochs": finetune_epochs, "threads": args.threads, "quick": args.quick}
    for seed in args.seeds:
        for n in sorted(set(depths) | ({prune_depth} if prune_depth else set())):
            model = build_resnet(n, seed)
            train(model, digits, epochs, 3e-3, seed)
            path = export(model, args.out / "models" / f"resnet{6 * n + 2}_seed{seed}.onnx")
            if n in depths:
                sweep.append(scan_model(path, n, seed, digits, probes, sizes=seed == 0))
                print(f"seed {seed} n {n}: accuracy {sweep[-1]['accuracy']:.3f}  MSRS {sweep[-1]['msrs']:.2f} ± "
                      f"{sweep[-1]['msrs_std']:.2f}  ({time.perf_counter() - started:.0f} s)", flush=True)
            if n == prune_depth:
                pruning += prune_study(model, n, seed, path, digits, probes[2560], finetune_epochs, args.out)
                print(f"seed {seed}: pruning done ({time.perf_counter() - started:.0f} s)", flush=True)
            # Written after every model, so an interrupted run still leaves its numbers.
            write(args.out, {"settings": {**settings, "wall_s": time.perf_counter() - started,
                                          "seeds_done": seed}, "sweep": sweep, "pruning": pruning})
    print(paper_report.tables(json.loads((args.out / "results.json").read_text())))
    print(f"wrote {args.out}/results.json, tables.md and figures in {time.perf_counter() - started:.0f} s")


def merge(folders: list[Path], out: Path) -> None:
    """One results.json from per-seed runs (in DIR order)."""
    parts = [json.loads((folder / "results.json").read_text()) for folder in folders]
    settings = {**parts[0]["settings"], "seeds": sorted({s for p in parts for s in p["settings"]["seeds"]}),
                "depths": sorted({n for p in parts for n in p["settings"]["depths"]}),
                "wall_s": max(p["settings"]["wall_s"] for p in parts), "merged_from": [str(f) for f in folders]}
    seen: set[tuple[int, int]] = set()
    sweep = []  # the first row of each (n, seed) wins: a re-run model is not counted twice
    for row in (row for p in parts for row in p["sweep"]):
        if (row["n"], row["seed"]) not in seen:
            seen.add((row["n"], row["seed"]))
            sweep.append(row)
    out.mkdir(parents=True, exist_ok=True)
    prune_depths = sorted({row["n"] for p in parts for row in p["pruning"]})
    write(out, {"settings": {**settings, "prune_depth": prune_depths}, "sweep": sweep,
                "pruning": [row for p in parts for row in p["pruning"]]})
    print(paper_report.tables(json.loads((out / "results.json").read_text())))


def write(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "tables.md").write_text(paper_report.tables(results))
    paper_report.figures(results, out)


if __name__ == "__main__":
    main()
