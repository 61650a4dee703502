"""Files the history writes: the MSRS-over-versions plot (PNG) and the diff report (HTML).

Both are plain functions of records; matplotlib runs headless (Agg) for the plot, and the HTML
is the scan report's template (``redaudit/report/templates``) with inline SVG heatmaps, one
self-contained file a CI job can attach.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from redaudit.history.diff import ScanDiff
from redaudit.history.records import ModelHistory


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: ModelHistory, path: str | Path) -> Path:
    """log2(MSRS) per version (x: versions in recording order); every scan is a point, the
    line joins each version's latest scan, error bars are the batch spread."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(max(5.0, 1.1 * len(history.versions) + 2), 4))
    latest_x, latest_y = [], []
    for index, version in enumerate(history.versions):
        points = [(s.log2_msrs, s) for s in version.scans if s.log2_msrs is not None
                  and math.isfinite(s.log2_msrs)]
        for value, scan in points:
            # MSRS ± std in log space; the lower end is cut at MSRS/8 (3 below) when std >= MSRS
            std = scan.msrs_std or 0.0
            low = value - math.log2(max(scan.msrs - std, scan.msrs / 8))
            high = math.log2(scan.msrs + std) - value
            axes.errorbar(index, value, yerr=[[low], [high]], fmt="o", color="tab:blue", alpha=0.5,
                          capsize=3)
        if points:
            latest_x.append(index)
            latest_y.append(points[-1][0])
    axes.plot(latest_x, latest_y, "-", color="tab:blue")
    axes.set_xticks(range(len(history.versions)), [v.short for v in history.versions],
                    rotation=30, ha="right")
    axes.set_ylabel("log2(MSRS)")
    axes.set_xlabel("version")
    axes.set_title(f"{history.name}: redundancy over versions")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    target = Path(path)
    figure.savefig(target, dpi=120)
    plt.close(figure)
    return target


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def render_diff_html(diff: ScanDiff, top: int = 15) -> str:
    """The diff page: the scan report's template and style (``report/templates/diff.html``),
    both similarity matrices side by side with layer-number labels, the full names in a table."""
    from redaudit import __version__
    from redaudit.report.heatmap import shared_scope
    from redaudit.report.page import heatmap, render_page

    def figure(scan, side: str):
        return heatmap(np.asarray(scan.similarity, dtype=np.float64), list(scan.layer_order),
                       f"{side}: {scan.display}",
                       f"MSRS {_fmt(scan.summary.msrs)}, {len(scan.layer_order)} layers; "
                       f"labels are the '# {side}' numbers of the layer table")

    before_index = {name: i for i, name in enumerate(diff.before.layer_order)}
    after_index = {name: i for i, name in enumerate(diff.after.layer_order)}
    names = list(diff.before.layer_order) + [n for n in diff.after.layer_order if n not in before_index]
    layer_rows = [{"name": name, "before": before_index.get(name), "after": after_index.get(name),
                   "status": "in both" if name in before_index and name in after_index
                   else "removed" if name in before_index else "added"} for name in names]
    pct = diff.msrs_change_pct
    summary_rows = [("MSRS", _fmt(diff.msrs_before), _fmt(diff.msrs_after), "n/a" if pct is None else f"{pct:+.1f}%"),
                    ("layers", diff.before.summary.layer_count, diff.after.summary.layer_count, ""),
                    ("parameters", f"{diff.before.version.parameter_count:,}",
                     f"{diff.after.version.parameter_count:,}", "")]
    notes = [f"forced: {d}" for d in diff.forced_differences] + list(diff.notes)
    title = f"redaudit diff {diff.after.model_name}: {diff.before.display} → {diff.after.display}"
    return render_page("diff.html", title=title, version=__version__, model_name=diff.after.model_name,
                       before=diff.before, after=diff.after, msrs_before=diff.msrs_before,
                       msrs_after=diff.msrs_after, change=pct, significant=diff.significant,
                       added=diff.added, removed=diff.removed, notes=notes, summary_rows=summary_rows,
                       heatmap_before=figure(diff.before, "before"), heatmap_after=figure(diff.after, "after"),
                       changes=list(diff.changed[:top]), layer_rows=layer_rows, scope=shared_scope(names))


def write_diff_html(diff: ScanDiff, path: str | Path, top: int = 15) -> Path:
    """Write :func:`render_diff_html` to ``path`` (one self-contained UTF-8 file)."""
    target = Path(path)
    target.write_text(render_diff_html(diff, top), encoding="utf-8")
    return target
