"""Files the history writes: the MSRS-over-versions plot (PNG) and the diff report (HTML).

Both are plain functions of records. Figures are ``matplotlib.figure.Figure`` objects drawn on
their own Agg canvas, never pyplot: the library leaves matplotlib's global backend and figure
registry to the application. The HTML embeds its heatmaps as base64 PNGs, so the report is one
self-contained file a CI job can attach. Files are written whole or not at all (``files.py``).
"""
from __future__ import annotations

import base64
import html
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


def _heatmaps_png(diff: ScanDiff) -> bytes:
    figure = _figure(11, 5)
    panes = figure.subplots(1, 2)
    image = None
    for pane, scan in zip(panes, (diff.before, diff.after)):
        matrix = np.asarray(scan.similarity, dtype=np.float64)
        image = pane.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
        pane.set_title(f"{scan.display}\nMSRS {_fmt(scan.summary.msrs)}, {len(scan.layer_order)} layers",
                       fontsize=9)
        if len(scan.layer_order) <= 30:
            short = [name.rsplit("/", 2)[-2] if name.count("/") >= 2 else name for name in scan.layer_order]
            pane.set_xticks(range(len(short)), short, rotation=90, fontsize=6)
            pane.set_yticks(range(len(short)), short, fontsize=6)
    figure.colorbar(image, ax=list(panes), shrink=0.8, label="CKA")
    return _png(figure, dpi=110)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _rows(items: list[tuple]) -> str:
    return "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
                   for row in items)


def write_diff_html(diff: ScanDiff, path: str | Path, top: int = 15) -> Path:
    """One self-contained HTML page: summary, layer changes and side-by-side heatmaps."""
    png = base64.b64encode(_heatmaps_png(diff)).decode()
    pct = diff.msrs_change_pct
    summary = [("MSRS", _fmt(diff.msrs_before), _fmt(diff.msrs_after),
                "n/a" if pct is None else f"{pct:+.1f}%"),
               ("layers", diff.before.summary.layer_count, diff.after.summary.layer_count, ""),
               ("parameters", diff.before.version.parameter_count, diff.after.version.parameter_count, "")]
    changes = [(c.name, _fmt(c.before), _fmt(c.after), f"{c.delta:+.3f}") for c in diff.changed[:top]]
    extra = ([("added", name) for name in diff.added] + [("removed", name) for name in diff.removed])
    notes = [(str(d),) for d in diff.forced_differences] + [(n,) for n in diff.notes]
    title = html.escape(f"redaudit diff {diff.after.model_name}: {diff.before.display} → {diff.after.display}")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}</style></head><body>
<h1>{title}</h1>
<table><tr><th></th><th>before</th><th>after</th><th>change</th></tr>{_rows(summary)}</table>
<h2>Layers whose redundancy changed most</h2>
<table><tr><th>layer</th><th>before</th><th>after</th><th>Δ</th></tr>{_rows(changes)}</table>
<h2>Layers added / removed</h2><table>{_rows(extra) or '<tr><td>none</td></tr>'}</table>
<h2>Notes</h2><table>{_rows(notes) or '<tr><td>settings and probe inputs match</td></tr>'}</table>
<h2>Similarity matrices</h2><img alt="similarity heatmaps" src="data:image/png;base64,{png}">
</body></html>"""
    return write_atomically(path, page.encode("utf-8"))
