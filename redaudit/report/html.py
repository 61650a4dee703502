"""One self-contained HTML page per scan: summary, heatmap, layer table, redundant pairs.

The page must open from a CI artefact store or a mail attachment, offline: no external CSS,
scripts or fonts, the heatmap embedded as a base64 PNG data URI. Layer and input names come
from untrusted model files, so every piece of text goes through :func:`html.escape`.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from redaudit import atomic
from redaudit.report.heatmap import default_title, heatmap_png_bytes, shared_scope
from redaudit.report.json_report import TOP_PAIRS, config_to_json
from redaudit.core.result import ScanResult

_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f7f8fa; --accent:#2c6e9b;
        --warn-bg:#fff8e1; --warn:#8a6100; --bad:#b42318; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1100px; margin:0 auto; padding:24px 20px 48px; }
h1 { font-size:22px; margin:0 0 2px; } h2 { font-size:17px; margin:28px 0 10px; }
.sub { color:var(--muted); margin:0 0 18px; word-break:break-all; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(160px,1fr)); gap:12px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:22px; font-weight:600; margin-top:2px; }
.card .v small { font-size:14px; font-weight:400; color:var(--muted); }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
.badge.ok { background:#e3f4ea; color:#1e6b3a; } .badge.synth { background:var(--warn-bg); color:var(--warn); }
.warnings { background:var(--warn-bg); border:1px solid #f3d27a; border-radius:8px;
            padding:10px 14px 10px 32px; color:var(--warn); margin:16px 0 0; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line);
        border-radius:8px; overflow:hidden; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f0f2f5; font-weight:600; font-size:13px; }
tr:last-child td { border-bottom:none; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.name, code { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px;
                overflow-wrap:anywhere; }
.scope { color:#9aa5b1; }
table.layers td.name { width:28%; }
table.kv th { width:190px; background:#fff; }
td.issue { color:var(--bad); }
.bar { display:inline-block; height:8px; background:var(--accent); border-radius:2px;
       vertical-align:middle; margin-left:6px; }
.cols { display:grid; grid-template-columns:1fr 1fr; gap:16px; }
@media (max-width:800px) { .cols { grid-template-columns:1fr; } }
figure { margin:0; background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px;
         text-align:center; }
figure img { max-width:100%; height:auto; }
figcaption { color:var(--muted); font-size:12px; margin-top:4px; }
footer { color:var(--muted); font-size:12px; margin-top:32px; }
"""


def _e(value: object) -> str:
    """HTML-escaped text of any value (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _bar(value: float | None, scale: float = 1.0) -> str:
    """A small inline bar (CSS only) proportional to ``value / scale``, clipped to 0..1."""
    if value is None or not math.isfinite(float(value)) or scale <= 0:
        return ""
    width = int(round(60 * min(max(float(value) / scale, 0.0), 1.0)))
    return f'<span class="bar" style="width:{width}px"></span>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = (),
           css: str = "") -> str:
    """A table from pre-escaped cell HTML. Columns in ``numeric`` are right-aligned; a cell
    that is already a ``<td ...>`` element (to carry a class) is used as is."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            if index in numeric:
                cells.append(f'<td class="num">{cell}</td>')
            elif cell.startswith("<td"):
                cells.append(cell)
            else:
                cells.append(f"<td>{cell}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv_table(pairs: Iterable[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{_e(key)}</th><td>{value}</td></tr>" for key, value in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _config_value(value: object) -> str:
    """Config values as a user types them on the command line, not as Python reprs."""
    if value is None:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{key}={item}" for key, item in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "—"
    return str(value)


def _wrap_slashes(text: str) -> str:
    """Escaped text with a line-break opportunity (``<wbr>``) after each ``/``."""
    return _e(text).replace("/", "/<wbr>")


def _name_cell(name: str, scope: str) -> str:
    """A tensor name as a table cell: the scope most layers share is greyed out (still there to
    copy into ``--taps``), and the name may wrap after each ``/`` rather than mid-word."""
    body = name.lstrip("/")
    lead = name[: len(name) - len(body)]
    if scope and body.startswith(scope) and len(body) > len(scope):
        head, rest = lead + scope, body[len(scope):]
    else:
        head, rest = "", name
    scope_html = f'<span class="scope">{_wrap_slashes(head)}</span>' if head else ""
    return f'<td class="name">{scope_html}{_wrap_slashes(rest)}</td>'


def _card(label: str, value_html: str) -> str:
    return f'<div class="card"><div class="k">{_e(label)}</div><div class="v">{value_html}</div></div>'


def _summary(result: ScanResult) -> str:
    inputs = ('<span class="badge ok">real</span>' if result.inputs_real
              else '<span class="badge synth">synthetic</span>')
    cards = [
        _card("MSRS", f"{_num(result.msrs, 3)} <small>± {_num(result.msrs_std, 3)}</small>"),
        _card("log2 MSRS", _num(result.log2_msrs if math.isfinite(result.msrs) else None, 2)),
        _card("Layers", f"{_e(len(result.layers))} <small>{_e(len(result.layers) * (len(result.layers) - 1) // 2)} pairs</small>"),
        _card("Samples", f"{_e(result.samples)} <small>in {_e(result.batches)} batches</small>"),
        _card("Probe inputs", inputs),
    ]
    text = f'<div class="cards">{"".join(cards)}</div>'
    if result.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in result.warnings)
        text += f'<ul class="warnings">{items}</ul>'
    return text


def _details(result: ScanResult) -> str:
    model = result.model
    inputs = "<br>".join(f"<code>{_e(name)}</code> {_e(dtype)} [{_e(', '.join(map(str, shape)))}]"
                         for name, dtype, shape in model.inputs) or "—"
    model_rows = [
        ("path", f"<code>{_e(model.path)}</code>"),
        ("sha256", f"<code>{_e(model.sha256)}</code>"),
        ("size", f"{_e(f'{model.size_bytes:,}')} bytes"),
        ("parameters", _e(f"{model.parameter_count:,}")),
        ("opset / producer", f"{_e(model.opset)} / {_e(model.producer or '—')}"),
        ("inputs", inputs),
    ]
    config = config_to_json(result.config)
    config_rows = [(key, f"<code>{_e(_config_value(value))}</code>") for key, value in config.items()]
    run_rows = [
        ("provider / backend", f"{_e(result.provider)} / {_e(result.backend)}"),
        ("samples dropped", _e(result.dropped_samples)),
        ("NaN batches", _e(result.nan_batches)),
        ("input hash", f"<code>{_e(result.input_hash)}</code>"),
        ("MSRS per batch", _e(", ".join(_num(v, 2) for v in np.ravel(result.msrs_batches)) or "—")),
    ]
    run_rows += [(f"time: {key.removesuffix('_s')}", f"{_num(value, 3)} s")
                 for key, value in result.timings.items()]
    return (f'<div class="cols"><div><h2>Model</h2>{_kv_table(model_rows)}'
            f"<h2>Run</h2>{_kv_table(run_rows)}</div>"
            f"<div><h2>Configuration</h2>{_kv_table(config_rows)}</div></div>")


def _layer_table(result: ScanResult) -> str:
    rows = result.layer_rows()
    scope = shared_scope(result.layer_names)
    values = [row.redundancy for row in rows if row.redundancy is not None]
    scale = max(1.0, max(values)) if values else 1.0
    body = [[
        _e(row.position), _name_cell(row.name, scope), _e(row.op), _e(row.display_shape), _e(row.reduction),
        _num(row.redundancy, 2) + _bar(row.redundancy, scale),
        _name_cell(row.most_similar, scope) if row.most_similar is not None else "—",
        _num(row.most_similar_cka, 3),
        f'<td class="issue">{_e(row.issue)}</td>' if row.issue else "",
    ] for row in rows]
    return _table(["#", "Layer", "Op", "Shape", "Reduced", "Redundancy", "Most similar", "CKA", "Issue"], body,
                  numeric=(0, 5, 7), css="layers")


def _pairs_table(result: ScanResult) -> str:
    names = result.layer_names
    scope = shared_scope(names)
    rows = [[_name_cell(names[i], scope), _name_cell(names[j], scope),
             _num(cka, 3) + _bar(cka)] for i, j, cka in result.top_pairs(TOP_PAIRS) if math.isfinite(cka)]
    return _table(["Layer A", "Layer B", "CKA"], rows, numeric=(2,)) if rows else "<p>No pair with a defined CKA.</p>"


def _consecutive_table(result: ScanResult) -> str:
    names = result.layer_names
    values = result.consecutive_similarity() if len(names) > 1 else []
    scope = shared_scope(names)
    rows = [[_name_cell(names[i], scope), _name_cell(names[i + 1], scope),
             _num(value, 3) + _bar(value)] for i, value in enumerate(values)]
    return _table(["Layer", "Next layer", "CKA"], rows, numeric=(2,)) if rows else "<p>Fewer than two layers.</p>"


def render_html(result: ScanResult) -> str:
    """The complete page as a string (UTF-8, no external resources)."""
    title = default_title(result)
    heatmap = ""
    if result.layers:
        png = heatmap_png_bytes(result.similarity, result.layer_names, title)
        data_uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        heatmap = (f'<h2>Layer similarity</h2><figure><img alt="similarity heatmap" src="{data_uri}">'
                   "<figcaption>Linear CKA between every pair of tapped layers (0 = unrelated, "
                   "1 = identical up to rotation and scale)"
                   + ("; grey cells are NaN (undefined)." if np.isnan(result.similarity).any() else ".")
                   + "</figcaption></figure>")
    epsilon = _e(result.config.epsilon)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>redaudit scan report</h1>
<p class="sub"><code>{_e(result.model.path)}</code></p>
{_summary(result)}
{_details(result)}
{heatmap}
<h2>Layers</h2>
<p class="sub">Redundancy: soft count of other layers more than ε = {epsilon} alike
(each layer's share of MSRS, times two).</p>
{_layer_table(result)}
<div class="cols"><div><h2>Most similar pairs</h2>{_pairs_table(result)}</div>
<div><h2>Consecutive layers</h2>{_consecutive_table(result)}</div></div>
<footer>redaudit {_e(result.redaudit_version)} · RedTest / MSRS (Lu et al., arXiv 2411.10507)</footer>
</main></body></html>
"""


def write_html(result: ScanResult, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path`` as UTF-8; returns the path written."""
    atomic.write_text(path, render_html(result))  # whole file or none (full disk, ulimit -f)
    return Path(path)
