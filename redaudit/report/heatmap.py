"""Similarity heatmaps as PNG, drawn with matplotlib's object API (no pyplot).

pyplot keeps global figure state and picks a GUI backend; a library called from servers,
tests and CI must do neither, so figures are built from :class:`matplotlib.figure.Figure` with
an Agg canvas and closed by garbage collection. The colour scale is fixed to 0..1 so that two
heatmaps (two model versions, a diff) are comparable by eye; NaN cells (degenerate layers)
are drawn in a colour outside the colormap and named in the legend.
"""
from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from redaudit import atomic
from redaudit.core.result import ScanResult

#: Colour of NaN cells: a light grey, which viridis (dark blue → yellow) never produces.
NAN_COLOR = "#d0d0d0"
#: Labels longer than this are shortened (middle kept readable, ellipsis inside).
MAX_LABEL_CHARS = 28
#: At most this many tick labels per axis; with more layers every k-th one is labelled.
MAX_TICKS = 40

# Output-index suffixes that exporters append: torch ``_output_0``, TensorFlow/JAX ``:0``.
_OUTPUT_SUFFIX = re.compile(r"(_output_\d+|:\d+)$")


def _parts(name: str) -> list[str]:
    text = _OUTPUT_SUFFIX.sub("", name).strip("/") or name
    return [part for part in text.split("/") if part] or [text]


def _shorten_parts(parts: Sequence[str], max_chars: int) -> str:
    """Join path parts within ``max_chars``: all of them if they fit, else the first part (often
    the block index, which tells layers apart), an ellipsis and as many trailing parts as fit
    (the op); a single over-long part keeps its head and tail."""
    text = "/".join(parts)
    if len(text) <= max_chars:
        return text
    if len(parts) > 1:
        tail = parts[-1]
        for part in reversed(parts[1:-1]):
            if len(f"{parts[0]}/…/{part}/{tail}") > max_chars:
                break
            tail = f"{part}/{tail}"
        for candidate in (f"{parts[0]}/…/{tail}", f"…/{tail}"):
            if len(candidate) <= max_chars:
                return candidate
    head = (max_chars - 1) // 2
    return text[:head] + "…" + text[len(text) - (max_chars - 1 - head):]


def shorten_label(name: str, max_chars: int = MAX_LABEL_CHARS) -> str:
    """A readable short form of one ONNX tensor name.

    Exporters produce names like ``/layer1/layer1.0/relu/Relu_output_0``: the ``_output_N``
    suffix adds nothing; the first path part and the last ones identify the layer.
    """
    return _shorten_parts(_parts(name), max_chars)


def _shared_prefix(split: Sequence[list[str]]) -> list[str]:
    """The longest run of leading path parts that more than half of the names start with.

    A strict common prefix fails on real graphs: a few tensors outside the model's scope
    (``Unsqueeze__115:0``, ``target_label``) would keep ``jax2tf_get_logits_/pjit_get_logits_/``
    on every other label."""
    prefix: list[str] = []
    while True:
        depth = len(prefix)
        counts: dict[str, int] = {}
        for parts in split:
            if len(parts) > depth + 1 and parts[:depth] == prefix:
                counts[parts[depth]] = counts.get(parts[depth], 0) + 1
        if not counts:
            return prefix
        part, count = max(counts.items(), key=lambda item: item[1])
        if 2 * count <= len(split):
            return prefix
        prefix.append(part)


def shared_scope(names: Sequence[str]) -> str:
    """The path scope (``"a/b/"``) that most names start with, or ``""``; see ``_shared_prefix``."""
    split = [_parts(name) for name in names]
    prefix = _shared_prefix(split) if len(split) > 1 else []
    return "/".join(prefix) + "/" if prefix else ""


def axis_labels(names: Sequence[str], max_chars: int = MAX_LABEL_CHARS) -> list[str]:
    """Short labels for a set of layers: leading path parts shared by most names (``encoder/``)
    are dropped first, then each name is shortened; collisions get a ``#index`` suffix."""
    split = [_parts(name) for name in names]
    prefix = _shared_prefix(split) if len(split) > 1 else []
    trimmed = [parts[len(prefix):] if len(parts) > len(prefix) and parts[:len(prefix)] == prefix
               else parts for parts in split]
    short = [_shorten_parts(parts, max_chars) for parts in trimmed]
    counts: dict[str, int] = {}
    for label in short:
        counts[label] = counts.get(label, 0) + 1
    return [f"{label} #{i}" if counts[label] > 1 else label for i, label in enumerate(short)]


def _colormap() -> Colormap:
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad=NAN_COLOR)


def _draw_matrix(axes: Axes, similarity: np.ndarray, labels: Sequence[str], title: str | None):
    """Draw one heatmap on ``axes``; returns the image (for the colour bar).

    Names come from untrusted models: ``parse_math=False`` keeps a ``$...$`` in a tensor name
    from being parsed as mathtext (which can fail on malformed TeX and abort the render)."""
    matrix = np.asarray(similarity, dtype=np.float64)
    size = matrix.shape[0]
    image = axes.imshow(np.ma.masked_invalid(matrix), cmap=_colormap(), vmin=0.0, vmax=1.0,
                        interpolation="nearest", aspect="equal")
    step = max(1, int(np.ceil(size / MAX_TICKS)))
    ticks = np.arange(0, size, step)
    short = axis_labels(labels)
    font = 8 if size <= 20 else 6
    axes.set_xticks(ticks, [short[i] for i in ticks], rotation=60, ha="right",
                    rotation_mode="anchor", fontsize=font, parse_math=False)
    axes.set_yticks(ticks, [short[i] for i in ticks], fontsize=font, parse_math=False)
    axes.tick_params(length=2)
    if size <= 12:
        for (row, col), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                colour = "black" if value > 0.6 else "white"
                axes.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    if title:
        axes.set_title(title, fontsize=10, parse_math=False)
    return image


def _nan_legend(figure: Figure, matrices: Sequence[np.ndarray]) -> None:
    """Name the NaN colour below the plot (never over cells) when any matrix has NaN."""
    if any(np.isnan(matrix).any() for matrix in matrices):
        figure.legend(handles=[Patch(facecolor=NAN_COLOR, edgecolor="grey",
                                     label="NaN: CKA undefined (degenerate layer)")],
                      loc="outside lower right", fontsize=8, frameon=False)


def _figure_size(size: int, panels: int) -> tuple[float, float]:
    side = float(np.clip(3.5 + 0.22 * min(size, MAX_TICKS), 5.0, 13.0))
    return (side * panels + 1.2, side + 0.6)


def _png_bytes(figure: Figure, dpi: int) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _check_square(similarity: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    matrix = np.asarray(similarity, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(labels):
        raise ValueError(f"similarity must be L × L with L = {len(labels)} labels, got {matrix.shape}")
    return matrix


def heatmap_png_bytes(similarity: np.ndarray, labels: Sequence[str], title: str | None = None,
                      dpi: int = 110) -> bytes:
    """PNG bytes of one similarity heatmap (colour scale 0..1, NaN in ``NAN_COLOR``)."""
    matrix = _check_square(similarity, labels)
    figure = Figure(figsize=_figure_size(matrix.shape[0], 1), layout="constrained")
    axes = figure.add_subplot()
    image = _draw_matrix(axes, matrix, labels, title)
    figure.colorbar(image, ax=axes, label="linear CKA", shrink=0.8)
    _nan_legend(figure, [matrix])
    return _png_bytes(figure, dpi)


def side_by_side_png_bytes(left: np.ndarray, right: np.ndarray, labels_left: Sequence[str],
                           labels_right: Sequence[str], titles: Sequence[str] = ("before", "after"),
                           dpi: int = 110) -> bytes:
    """PNG bytes of two heatmaps side by side with one shared 0..1 colour bar (for diffs).

    The two matrices may have different sizes (a pruned model has fewer layers).
    """
    matrices = (_check_square(left, labels_left), _check_square(right, labels_right))
    size = max(matrix.shape[0] for matrix in matrices)
    figure = Figure(figsize=_figure_size(size, 2), layout="constrained")
    panels = figure.subplots(1, 2)
    image = None
    for axes, matrix, labels, title in zip(panels, matrices, (labels_left, labels_right), titles):
        image = _draw_matrix(axes, matrix, labels, title)
    figure.colorbar(image, ax=list(panels), label="linear CKA", shrink=0.8)
    _nan_legend(figure, matrices)
    return _png_bytes(figure, dpi)


def default_title(result: ScanResult) -> str:
    """``model.onnx — MSRS 3.42 ± 0.10 (9 layers, block)``; NaN MSRS is written as n/a."""
    name = Path(result.model.path).name or result.model.path
    if np.isfinite(result.msrs):
        score = f"MSRS {result.msrs:.2f} ± {result.msrs_std:.2f}"
    else:
        score = "MSRS n/a"
    return f"{name} — {score} ({len(result.layers)} layers, {result.config.level})"


def write_heatmap(result: ScanResult, path: str | Path, title: str | None = None) -> Path:
    """Write the scan's similarity heatmap as a PNG; the title carries MSRS by default."""
    png = heatmap_png_bytes(result.similarity, result.layer_names,
                            title if title is not None else default_title(result))
    atomic.write_bytes(path, png)  # whole file or none (full disk, ulimit -f)
    return Path(path)
