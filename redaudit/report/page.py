"""What every HTML page shares: the Jinja2 templates shipped in ``report/templates`` (one base
layout and stylesheet for the scan report and the diff page), their filters, and the SVG
heatmap.

Autoescaping is on: layer and input names come from untrusted model files, and a filter that
returns markup (``wbr``, ``bar``) escapes its input first. Pages stay self-contained (no
external CSS, scripts or fonts; the matrix is an inline PNG data URI), so a report opens from
a CI artefact store or a mail attachment.

The heatmap is SVG rather than a matplotlib figure so that its labels are text a browser lays
out: labels are layer numbers (the tables give the full names, and each label's tooltip), drawn
at a fixed readable size, and with many layers only every k-th is drawn so that no two labels
overlap. The cells are one PNG with a pixel per cell, scaled without smoothing.
"""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

#: SVG units of a heatmap's matrix side; the SVG scales to its column, labels scale with it.
MATRIX_SIDE = 480.0
#: Label font size in SVG units, and the gap (in font sizes) kept between neighbouring labels.
LABEL_FONT = 11.0
LABEL_SPACING = 1.3
#: Labels keep this far from the matrix: more than half a label's line box (about 1.3 em), so
#: the first row label and the first column label cannot meet at the corner.
LABEL_GAP = 0.7 * LABEL_FONT + 1
NAN_GREY = (0.85, 0.85, 0.85, 1.0)


def num(value: Any, digits: int = 3) -> str:
    """A number for a page: ``n/a`` for None, NaN and infinities."""
    if value is None:
        return "n/a"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:.{digits}f}" if math.isfinite(number) else "n/a"


def wbr(text: Any) -> Markup:
    """Escaped text with a line-break opportunity (``<wbr>``) after each ``/``."""
    return Markup(str(escape(str(text))).replace("/", "/<wbr>"))


def bar(value: Any, scale: float = 1.0) -> Markup:
    """A small inline bar (CSS only) proportional to ``value / scale``, clipped to 0..1."""
    if value is None or not math.isfinite(float(value)) or scale <= 0:
        return Markup("")
    width = int(round(60 * min(max(float(value) / scale, 0.0), 1.0)))
    return Markup(f'<span class="bar" style="width:{width}px"></span>')


def split_scope(name: str, scope: str) -> tuple[str, str]:
    """(greyed scope, rest) of a tensor name: the scope most layers share is shown greyed (still
    there to copy into ``--tap``), the rest in full."""
    body = name.lstrip("/")
    lead = name[: len(name) - len(body)]
    if scope and body.startswith(scope) and len(body) > len(scope):
        return lead + scope, body[len(scope):]
    return "", name


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=PackageLoader("redaudit.report", "templates"),
                      autoescape=select_autoescape(["html"], default_for_string=True, default=True),
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["wbr"] = wbr
    env.globals.update(num=num, bar=bar, split_scope=split_scope)
    return env


def render_page(template: str, **context: Any) -> str:
    """Render one of the shipped templates (``scan.html``, ``diff.html``) to a string."""
    return environment().get_template(template).render(**context)


@dataclass(frozen=True)
class Label:
    text: str  # what is drawn: the layer number
    name: str  # the full name, in the tooltip
    x: float  # centre of its column
    y: float  # centre of its row


@dataclass(frozen=True)
class Heatmap:
    """Everything the ``heatmap`` macro draws, in SVG units."""

    title: str
    caption: str
    image: str  # PNG data URI, one pixel per cell
    labels: list[Label]
    left: float
    top: float
    side: float
    font: float
    gap: float = 0.0  # between the matrix and the labels

    @property
    def width(self) -> float:
        return self.left + self.side + 8

    @property
    def height(self) -> float:
        return self.top + self.side + 8


def _matrix_png(matrix: np.ndarray) -> bytes:
    """The matrix as an RGBA PNG (viridis on [0, 1], NaN grey), one pixel per cell, written
    without pyplot (no global matplotlib state)."""
    from matplotlib import colormaps
    from matplotlib.image import imsave

    values = np.asarray(matrix, dtype=np.float64)
    rgba = colormaps["viridis"](np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0))
    rgba[np.isnan(values)] = NAN_GREY
    buffer = io.BytesIO()
    imsave(buffer, rgba if values.size else np.zeros((1, 1, 4)), format="png")
    return buffer.getvalue()


def label_step(count: int, side: float = MATRIX_SIDE, font: float = LABEL_FONT) -> int:
    """Draw every k-th label so that neighbouring labels are at least ``LABEL_SPACING`` font
    sizes apart (1 while the cells are big enough for every label)."""
    if count <= 0:
        return 1
    return max(1, math.ceil(font * LABEL_SPACING / (side / count)))


def heatmap(matrix: np.ndarray, names: Sequence[str], title: str, caption: str) -> Heatmap:
    """The heatmap of an L × L matrix whose rows and columns are ``names``."""
    count = len(names)
    step = label_step(count)
    cell = MATRIX_SIDE / max(count, 1)
    digits = len(str(max(count - 1, 0)))
    margin = LABEL_GAP + 4 + LABEL_FONT * 0.62 * digits  # monospace digits are about 0.6 em wide
    left, top = margin, 22 + margin
    labels = [Label(str(i), names[i], left + (i + 0.5) * cell, top + (i + 0.5) * cell)
              for i in range(0, count, step)]
    png = base64.b64encode(_matrix_png(matrix)).decode("ascii")
    return Heatmap(title=title, caption=caption, image=f"data:image/png;base64,{png}", labels=labels,
                   left=left, top=top, side=MATRIX_SIDE, font=LABEL_FONT, gap=LABEL_GAP)
