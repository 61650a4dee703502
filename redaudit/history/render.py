"""Files the history writes: the MSRS-over-versions plot (PNG) and the diff report (HTML).

Both are plain functions of records. Figures are ``matplotlib.figure.Figure`` objects drawn on
their own Agg canvas, never pyplot: the library leaves matplotlib's global backend and figure
registry to the application. The HTML is the scan report's template (``redaudit/report/templates``)
with inline SVG heatmaps, one self-contained file a CI job can attach. Files are written whole or
not at all (``files.py``).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from redaudit.history.diff import ScanDiff
from redaudit.history.files import write_atomically
from redaudit.history.records import ModelHistory


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _png(figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


@dataclass(frozen=True)
class PlotSummary:
    """What the plot shows: ``at_floor`` scans with MSRS 0 (log2 undefined) are drawn as
    triangles on a floor line below every other point; ``left_out`` scans had no MSRS at all
    (every batch degenerate) and are not drawn."""

    path: Path
    plotted: int
    at_floor: int
    left_out: int
    floor: float | None


def plot_history(history: ModelHistory, path: str | Path) -> PlotSummary:
    """log2(MSRS) per version (x: versions in recording order); every scan is a point, the
    line joins each version's latest scan, error bars are the batch spread. MSRS 0 has no
    log2: such scans sit on a marked floor one unit below the lowest drawn value."""
    finite = [s.log2_msrs for v in history.versions for s in v.scans if s.log2_msrs is not None]
    floor = math.floor(min(finite, default=0.0)) - 1.0
    figure = _figure(max(5.0, 1.1 * len(history.versions) + 2), 4)
    axes = figure.add_subplot()
    latest_x, latest_y, zero_x = [], [], []
    plotted = left_out = 0
    for index, version in enumerate(history.versions):
        latest = None
        for scan in version.scans:
            if scan.msrs_is_zero:
                zero_x.append(index)
                latest = floor
            elif scan.log2_msrs is None:
                left_out += 1
                continue
            else:
                value = scan.log2_msrs
                # MSRS ± std in log space; the lower end is cut at MSRS/8 (3 below) when std >= MSRS
                std = scan.msrs_std or 0.0
                low = value - math.log2(max(scan.msrs - std, scan.msrs / 8))
                high = math.log2(scan.msrs + std) - value
                axes.errorbar(index, value, yerr=[[low], [high]], fmt="o", color="tab:blue", alpha=0.5,
                              capsize=3)
                latest = value
            plotted += 1
        if latest is not None:
            latest_x.append(index)
            latest_y.append(latest)
    axes.plot(latest_x, latest_y, "-", color="tab:blue")
    if zero_x:
        axes.axhline(floor, color="tab:gray", linestyle=":", linewidth=1)
        axes.plot(zero_x, [floor] * len(zero_x), "v", color="tab:red", markersize=8,
                  label=f"MSRS 0 (log2 undefined), drawn at {floor:g}")
        axes.legend(loc="best", fontsize=8)
    axes.set_xticks(range(len(history.versions)), [v.short for v in history.versions],
                    rotation=30, ha="right")
    axes.set_ylabel("log2(MSRS)")
    axes.set_xlabel("version")
    axes.set_title(f"{history.name}: redundancy over versions")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    target = write_atomically(path, _png(figure, dpi=120))
    return PlotSummary(target, plotted, len(zero_x), left_out, floor if zero_x else None)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def render_diff_html(diff: ScanDiff, top: int = 15) -> str:
    """The diff page: the scan report's template and style (``report/templates/diff.html``),
    both similarity matrices side by side with layer-number labels, the full names in a table."""
    from redaudit.core.version import __version__
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
    """Write :func:`render_diff_html` to ``path`` (one self-contained UTF-8 file, whole or not at all)."""
    return write_atomically(path, render_diff_html(diff, top).encode("utf-8"))
