"""Markdown tables and PNG figures for benchmarks/validate_paper.py's results (a plain dict)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _ms(values, digits: int = 2) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1) if len(values) > 1 else 0:.{digits}f}"


def _by_depth(sweep: list[dict]) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = defaultdict(list)
    for row in sweep:
        groups[row["n"]].append(row)
    return dict(sorted(groups.items()))


def depth_table(sweep: list[dict]) -> str:
    lines = ["| n | ResNet | blocks | taps L | max pairs L(L−1)/2 | test accuracy | MSRS (ε 0.8, β 100) | log2 MSRS "
             "| MSRS ÷ max | pairs > ε | within-scan std |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, rows in _by_depth(sweep).items():
        taps = rows[0]["taps"]
        pairs = taps * (taps - 1) // 2
        msrs = [r["msrs"] for r in rows]
        lines.append(f"| {n} | {6 * n + 2} | {3 * n} | {taps} | {pairs} | {_ms([r['accuracy'] for r in rows], 3)} | "
                     f"{_ms(msrs)} | {np.log2(max(np.mean(msrs), 1e-9)):.2f} | {np.mean(msrs) / pairs:.2f} | "
                     f"{np.mean([r['fraction_above_eps'] for r in rows]):.2f} | "
                     f"{np.mean([r['msrs_std'] for r in rows]):.2f} |")
    depth = [r["n"] for r in sweep]
    means = {n: np.mean([r["msrs"] for r in rows]) for n, rows in _by_depth(sweep).items()}
    lines += ["", f"Spearman ρ(MSRS, depth) over all {len(sweep)} models: {spearman(depth, [r['msrs'] for r in sweep]):.3f}; "
              f"over the per-depth means: {spearman(list(means), list(means.values())):.3f}. "
              f"ρ(accuracy, depth): {spearman(depth, [r['accuracy'] for r in sweep]):.3f}. "
              f"ρ(MSRS ÷ max pairs, depth): {spearman(depth, [r['msrs'] / (r['taps'] * (r['taps'] - 1) / 2) for r in sweep]):.3f}."]
    return "\n".join(lines)


def pruning_table(pruning: list[dict]) -> str:
    depths = sorted({r["n"] for r in pruning if "rule" in r})
    return "\n\n".join(_pruning_table([r for r in pruning if "rule" in r and r["n"] == n]) for n in depths) \
        or "(no pruning rows)"


def _pruning_table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["fraction"], r["removed"], r["of"], r["rule"])].append(r)
    lines = [f"ResNet-{6 * rows[0]['n'] + 2}, original test accuracy {_ms(sorted({r['seed']: r['accuracy_original'] for r in rows}.values()), 3)} "
             f"over {len({r['seed'] for r in rows})} seeds.", "",
             "| removed | rule | accuracy retained after fine-tune | accuracy after fine-tune | accuracy before fine-tune |",
             "|---|---|---|---|---|"]
    for (fraction, k, of, rule), group in sorted(groups.items()):
        lines.append(f"| {k} of {of} ({fraction:.0%}) | {rule} | {_ms([g['retained'] for g in group], 3)} | "
                     f"{_ms([g['accuracy'] for g in group], 3)} | {_ms([g['accuracy_no_finetune'] for g in group], 3)} |")
    return "\n".join(lines)


def sensitivity_tables(sweep: list[dict]) -> str:
    keys = list(sweep[0]["grid"])
    default = [r["msrs"] for r in sweep]
    depth = [r["n"] for r in sweep]
    lines = ["| n | " + " | ".join(f"ε {k.split('/')[0]}, β {k.split('/')[1]}" for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for n, rows in _by_depth(sweep).items():
        lines.append(f"| {n} | " + " | ".join(f"{np.mean([r['grid'][k] for r in rows]):.2f}" for k in keys) + " |")
    lines.append("| ρ with depth | " + " | ".join(f"{spearman(depth, [r['grid'][k] for r in sweep]):.3f}" for k in keys) + " |")
    lines.append("| ρ with default ranking | " + " | ".join(f"{spearman(default, [r['grid'][k] for r in sweep]):.3f}"
                                                       for k in keys) + " |")
    sized = [r for r in sweep if "by_probe_size" in r]
    if sized:
        sizes = list(sized[0]["by_probe_size"])
        lines += ["", f"Probe size (seed {sized[0]['seed']}; real test images, sizes above 4,500 include 2 px shifts):", "",
                  "| n | " + " | ".join(sizes) + " |", "|---|" + "---|" * len(sizes)]
        for r in sorted(sized, key=lambda r: r["n"]):
            lines.append(f"| {r['n']} | " + " | ".join(f"{r['by_probe_size'][s]:.2f}" for s in sizes) + " |")
        base = [r["by_probe_size"]["2560"] for r in sized]
        lines.append("| ρ with 2,560 ranking | " + " | ".join(
            f"{spearman(base, [r['by_probe_size'][s] for r in sized]):.3f}" for s in sizes) + " |")
        change = max(abs(r["by_probe_size"][s] - r["by_probe_size"]["2560"]) / max(r["by_probe_size"]["2560"], 1e-9)
                     for r in sized for s in sizes if r["by_probe_size"]["2560"] >= 1) \
            if any(r["by_probe_size"]["2560"] >= 1 for r in sized) else float("nan")
        lines.append(f"\nLargest relative change from the 2,560-sample value (models with MSRS ≥ 1): {change:.1%}.")
    lines += ["", "Real vs synthetic probes (2,560 samples; synthetic = the scan's seeded random inputs):", "",
              "| n | MSRS real | MSRS synthetic |", "|---|---|---|"]
    for n, rows in _by_depth(sweep).items():
        lines.append(f"| {n} | {_ms([r['msrs'] for r in rows])} | {_ms([r['msrs_synthetic'] for r in rows])} |")
    lines.append(f"\nρ(synthetic, real) over all models: {spearman(default, [r['msrs_synthetic'] for r in sweep]):.3f}; "
                 f"ρ(synthetic, depth): {spearman(depth, [r['msrs_synthetic'] for r in sweep]):.3f}.")
    return "\n".join(lines)


def tables(results: dict) -> str:
    s = results["settings"]
    return "\n\n".join([
        f"Settings: n = {s['depths']}, seeds {s['seeds']}, {s['epochs']} epochs, pruning on n = {s['prune_depth']} "
        f"with {s['finetune_epochs']} fine-tune epochs, {s['threads']} threads; wall time {s['wall_s'] / 60:.1f} min.",
        "### Depth sweep", depth_table(results["sweep"]),
        "### Pruning", pruning_table(results["pruning"]),
        "### Sensitivity", sensitivity_tables(results["sweep"])])


def figures(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a script, not the library: it may pick the backend
    import matplotlib.pyplot as plt

    groups = _by_depth(results["sweep"])
    depths = list(groups)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, style in (("msrs", "o-"), ("msrs_synthetic", "s--")):
        values = [[r[key] for r in groups[n]] for n in depths]
        left.errorbar([6 * n + 2 for n in depths], [np.mean(v) for v in values], [np.std(v) for v in values],
                      fmt=style, capsize=3, label="real probe" if key == "msrs" else "synthetic probe")
    pairs = [groups[n][0]["taps"] * (groups[n][0]["taps"] - 1) / 2 for n in depths]
    left.plot([6 * n + 2 for n in depths], pairs, ":", color="grey", label="max L(L−1)/2")
    left.set(xlabel="depth (weighted layers)", ylabel="MSRS", yscale="symlog", title="MSRS vs depth")
    left.legend(fontsize=8)
    acc = [[r["accuracy"] for r in groups[n]] for n in depths]
    right.errorbar([6 * n + 2 for n in depths], [np.mean(a) for a in acc], [np.std(a) for a in acc], fmt="o-", capsize=3)
    right.set(xlabel="depth (weighted layers)", ylabel="test accuracy", title="accuracy vs depth")
    fig.tight_layout()
    fig.savefig(out / "validation_depth.png", dpi=110)
    plt.close(fig)

    rows = [r for r in results["pruning"] if "rule" in r]
    rows = [r for r in rows if r["n"] == max(r["n"] for r in rows)]  # the deepest pruned model
    if rows:
        fig, axis = plt.subplots(figsize=(4.6, 3.4))
        for rule in ("similarity", "random", "shallowing"):
            fractions = sorted({r["fraction"] for r in rows})
            kept = [[r["retained"] for r in rows if r["rule"] == rule and r["fraction"] == f] for f in fractions]
            axis.errorbar(fractions, [np.mean(k) for k in kept], [np.std(k) for k in kept], fmt="o-", capsize=3, label=rule)
        axis.set(xlabel="fraction of removable blocks removed", ylabel="accuracy retained (after fine-tune)",
                 title=f"pruning ResNet-{6 * rows[0]['n'] + 2}")
        axis.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "validation_pruning.png", dpi=110)
        plt.close(fig)

    fig, axis = plt.subplots(figsize=(4.6, 3.4))
    for key in results["sweep"][0]["grid"]:
        axis.plot([6 * n + 2 for n in depths], [np.mean([r["grid"][key] for r in groups[n]]) for n in depths], "o-",
                  label=f"ε {key.split('/')[0]}, β {key.split('/')[1]}")
    axis.set(xlabel="depth (weighted layers)", ylabel="MSRS", yscale="symlog", title="MSRS under ε, β")
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "validation_sensitivity.png", dpi=110)
    plt.close(fig)
