"""Redundancy-aware NAS vs standard accuracy-only NAS, side by side (RedTest application 2).

Both searches use the same search space, trial budget, training budget (``--budget`` epochs per
candidate, the paper's "12 of 200"), sampler family (seeded TPE) and seeds; only the objective
and the selection rule differ:
  accuracy          maximise validation accuracy; pick the best validation accuracy
  redundancy-aware  maximise validation accuracy and minimise MSRS; pick the lowest MSRS among
                    candidates within --tolerance points of the best validation accuracy
For each seed it prints the chosen model of each (test accuracy, MSRS, parameters, FLOPs,
latency), optionally after retraining the chosen model for --retrain epochs, then the means
over seeds and the ratios redundancy-aware / accuracy.

    python benchmarks/nas_compare.py --trials 40 --seeds 0 1 2 --budget 12 --retrain 40 --jobs 2
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OBJECTIVES = ("accuracy", "redundancy-aware")


@dataclass(frozen=True)
class Outcome:
    objective: str
    seed: int
    trial: int
    architecture: str
    val_accuracy: float
    test_accuracy: float
    msrs: float
    parameters: int
    flops: int
    latency_ms: float
    retrained_test_accuracy: float
    retrained_msrs: float
    search_seconds: float


def run_one(objective: str, seed: int, args: argparse.Namespace, db: str, artifacts: str) -> Outcome:
    from redaudit.nas.finalize import retrain_trial
    from redaudit.nas.search import SearchConfig, run_search
    from redaudit.nas.select import candidates_of, select
    from redaudit.nas.space import Architecture, load_space
    from redaudit.nas.storage import load_existing_study, open_storage

    name = f"bench-{objective}-seed{seed}-{os.getpid()}-{int(time.time())}"
    start = time.perf_counter()
    config = SearchConfig(objective=objective, budget=args.budget, seed=seed, sampler=args.sampler,
                          space=load_space(args.space))
    run_search(name, args.trials, config, db_url=db, artifact_dir=artifacts)
    seconds = time.perf_counter() - start
    study = load_existing_study(name, open_storage(db))
    chosen = select(candidates_of(study), objective, args.tolerance / 100.0)
    retrained_acc = retrained_msrs = float("nan")
    if args.retrain:
        record = retrain_trial(study, chosen.number, args.retrain)
        retrained_acc, retrained_msrs = record.test_accuracy, record.msrs
    return Outcome(objective, seed, chosen.number, Architecture.from_dict(chosen.architecture).describe(),
                   chosen.val_accuracy, chosen.test_accuracy, chosen.msrs, chosen.parameters, chosen.flops,
                   chosen.latency_ms, retrained_acc, retrained_msrs, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=12)
    parser.add_argument("--retrain", type=int, default=0, help="epochs of full retraining of each chosen model")
    parser.add_argument("--tolerance", type=float, default=1.0, help="accuracy points (redundancy-aware rule)")
    parser.add_argument("--sampler", default="tpe", choices=["tpe", "nsga2", "random"])
    parser.add_argument("--space", default=str(Path(__file__).with_name("nas_space.toml")),
                        help="search space TOML (default: benchmarks/nas_space.toml)")
    parser.add_argument("--jobs", type=int, default=1, help="searches run in parallel (processes)")
    parser.add_argument("--db", default=None, help="study database URL (default: a fresh SQLite file)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="redaudit-nas-bench-"))
    db = args.db or f"sqlite:///{folder / 'studies.db'}"
    artifacts = str(folder / "artifacts")
    jobs = [(objective, seed) for seed in args.seeds for objective in OBJECTIVES]
    print(f"{len(jobs)} searches × {args.trials} trials, budget {args.budget} epochs, sampler {args.sampler}, "
          f"space {args.space}, tolerance {args.tolerance} pt, retrain {args.retrain or 'no'}; db {db}", flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, objective, seed, args, db, artifacts) for objective, seed in jobs]
        outcomes = [future.result() for future in futures]
    wall = time.perf_counter() - started

    header = (f"{'seed':>4}  {'objective':<17} {'trial':>5}  {'architecture':<22} {'val %':>6} {'test %':>6} "
              f"{'MSRS':>7} {'params':>9} {'MFLOPs':>7} {'lat ms':>7}")
    if args.retrain:
        header += f" {'test % (retrained)':>18} {'MSRS (retr.)':>12}"
    print(header)
    for o in outcomes:
        line = (f"{o.seed:>4}  {o.objective:<17} {o.trial:>5}  {o.architecture:<22} {100 * o.val_accuracy:6.2f} "
                f"{100 * o.test_accuracy:6.2f} {o.msrs:7.3f} {o.parameters:9,d} {o.flops / 1e6:7.2f} "
                f"{o.latency_ms:7.4f}")
        if args.retrain:
            line += f" {100 * o.retrained_test_accuracy:18.2f} {o.retrained_msrs:12.3f}"
        print(line)

    def stat(objective: str, field: str, scale: float = 1.0) -> tuple[float, float]:
        values = np.array([getattr(o, field) for o in outcomes if o.objective == objective]) * scale
        return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0

    fields = [("test accuracy %", "test_accuracy", 100.0), ("validation accuracy %", "val_accuracy", 100.0),
              ("MSRS", "msrs", 1.0), ("parameters", "parameters", 1.0), ("MFLOPs", "flops", 1e-6),
              ("latency ms", "latency_ms", 1.0), ("search seconds", "search_seconds", 1.0)]
    if args.retrain:
        fields[1:1] = [("test accuracy % (retrained)", "retrained_test_accuracy", 100.0),
                       ("MSRS (retrained)", "retrained_msrs", 1.0)]
    print(f"\nmeans over seeds {args.seeds} (± sample std)")
    print(f"{'metric':<28} {'accuracy-only':>22} {'redundancy-aware':>22} {'aware/accuracy':>15}")
    for label, field, scale in fields:
        (ma, sa), (mr, sr) = stat("accuracy", field, scale), stat("redundancy-aware", field, scale)
        relation = f"{mr - ma:+.2f} pt" if "accuracy %" in label else (f"{mr / ma:.3f}×" if ma else "n/a")
        print(f"{label:<28} {ma:>13.3f} ± {sa:<6.3f} {mr:>13.3f} ± {sr:<6.3f} {relation:>15}")
    print(f"\nwall time {wall:.0f} s with {args.jobs} parallel search(es)")


if __name__ == "__main__":
    main()
