"""One self-contained HTML page per scan: summary, heatmap, layer table, redundant pairs.

The page is ``templates/scan.html`` (sharing ``base.html`` and its stylesheet with the diff
page, see :mod:`redaudit.report.page`); this module only turns a ScanResult into the values the
template shows. Names come from untrusted model files: the template autoescapes everything.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from redaudit import atomic
from redaudit.core.result import ScanResult
from redaudit.report.heatmap import default_title, shared_scope
from redaudit.report.json_report import TOP_PAIRS, config_to_json
from redaudit.report.numbers import interval_text, share
from redaudit.report.page import heatmap, num, render_page
from redaudit.report.reading import reading_of_result


def _config_value(value: object) -> str:
    """Config values as a user types them on the command line, not as Python reprs."""
    if value is None:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{key}={item}" for key, item in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "—"
    return str(value)


def _details(result: ScanResult) -> dict[str, list[tuple[str, str]]]:
    model = result.model
    inputs = "; ".join(f"{name} {dtype} [{', '.join(map(str, shape))}]" for name, dtype, shape in model.inputs)
    model_rows = [("path", model.path), ("sha256", model.sha256), ("size", f"{model.size_bytes:,} bytes"),
                  ("parameters", f"{model.parameter_count:,}"),
                  ("opset / producer", f"{model.opset} / {model.producer or '—'}"), ("inputs", inputs or "—")]
    config_rows = [(key, _config_value(value)) for key, value in config_to_json(result.config).items()]
    run_rows = [("provider / backend", f"{result.provider} / {result.backend}"),
                ("onnxruntime micro-batch", str(result.micro_batch or "—")),
                ("samples dropped", str(result.dropped_samples)), ("NaN batches", str(result.nan_batches)),
                ("input hash", result.input_hash),
                ("MSRS interval", result.msrs_interval.reason or
                 f"{interval_text(result.msrs_interval)}: percentile bootstrap of the mean over "
                 f"{result.msrs_interval.batches} batches, {result.msrs_interval.resamples:,} resamples"),
                ("MSRS per batch", ", ".join(num(v, 2) for v in np.ravel(result.msrs_batches)) or "—")]
    run_rows += [(f"time: {key.removesuffix('_s')}", f"{num(value, 3)} s") for key, value in result.timings.items()]
    return {"model_rows": model_rows, "config_rows": config_rows, "run_rows": run_rows}


def _layer_scale(result: ScanResult) -> float:
    values = [row.redundancy for row in result.layer_rows() if row.redundancy is not None]
    return max(1.0, max(values)) if values else 1.0


def render_html(result: ScanResult) -> str:
    """The complete page as a string (UTF-8, no external resources)."""
    names = result.layer_names
    title = default_title(result)
    figure = None
    if result.layers:
        caption = ("Linear CKA between every pair of tapped layers (0 = unrelated, 1 = identical up to rotation "
                   "and scale); labels are the layer numbers of the table below"
                   + ("; grey cells are NaN (undefined)." if np.isnan(result.similarity).any() else "."))
        figure = heatmap(result.similarity, names, title, caption)
    pairs = [(names[i], names[j], cka) for i, j, cka in result.top_pairs(TOP_PAIRS) if math.isfinite(cka)]
    values = result.consecutive_similarity() if len(names) > 1 else []
    consecutive = [(names[i], names[i + 1], value) for i, value in enumerate(values)]
    reading = reading_of_result(result)
    return render_page("scan.html", title=title, version=result.redaudit_version, result=result,
                       log2_msrs=result.log2_msrs if math.isfinite(result.msrs) else None,
                       reading=reading, ci_text=interval_text(reading.interval),
                       above_share=share(reading.fraction_above), heatmap=figure, layer_rows=result.layer_rows(),
                       scale=_layer_scale(result),
                       scope=shared_scope(names), pairs_rows=pairs, consecutive_rows=consecutive,
                       **_details(result))


def write_html(result: ScanResult, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path`` as UTF-8; returns the path written."""
    atomic.write_text(path, render_html(result))  # whole file or none (full disk, ulimit -f)
    return Path(path)
