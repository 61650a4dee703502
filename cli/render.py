"""Rich rendering of a ScanResult for the terminal."""
from __future__ import annotations

import math

import click
from rich.console import Console
from rich.table import Table

from redaudit.core.result import ScanResult
from redaudit.report.numbers import interval_text, share
from redaudit.report.reading import reading_of_result


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def middle(name: str, width: int) -> str:
    """``name`` shortened in the middle to ``width`` characters: the start (which model part) and
    the end (which tensor) both stay readable; the full name is in the JSON and HTML."""
    if len(name) <= width:
        return name
    head = max(1, (width - 1) // 3)
    return name[:head] + "…" + name[-(width - 1 - head):]


def distinct_names(names: list[str], width: int) -> list[str]:
    """What tells the layers apart: path parts every name shares at its start or end are dropped
    (``/m/`` … ``/LayerNorm/LayerNormalization_output_0``), then each rest is shortened in the
    middle to ``width``. The full names are in the JSON and HTML reports."""
    if not names:
        return []
    split = [name.split("/") for name in names]
    lead = 0
    while len(names) > 1 and all(len(parts) > lead + 1 for parts in split) and \
            len({parts[lead] for parts in split}) == 1:
        lead += 1
    trail = 0
    while len(names) > 1 and all(len(parts) > lead + trail + 1 for parts in split) and \
            len({parts[-1 - trail] for parts in split}) == 1:
        trail += 1
    rests = ["/".join(parts[lead:len(parts) - trail]) or name for parts, name in zip(split, names)]
    if len(set(rests)) < len(rests):
        rests = names
    return [middle(rest, width) for rest in rests]


def layer_table(result: ScanResult, width: int = 160) -> Table:
    """The per-layer table, from the view every renderer shares (:meth:`ScanResult.layer_rows`).
    One line per layer at any ``width`` (80 columns or a pipe included): names are shortened in
    the middle, the most similar layer is given by its row number, and the op column (and an
    empty issue column) are left out when the terminal is narrow; the JSON has everything."""
    rows = result.layer_rows()
    show_op = width >= 110
    show_issue = any(row.issue for row in rows)
    columns = [("#", "right", len(str(len(rows)))), ("layer", "left", None)]
    columns += [("op", "left", None)] if show_op else []
    columns += [("shape", "left", None), ("reduced", "left", None), ("redund.", "right", 7), ("like", "right", 4),
                ("CKA", "right", 5)]
    columns += [("issue", "left", None)] if show_issue else []
    fixed = {"#": columns[0][2], "redund.": 7, "like": 4, "CKA": 5}
    shapes = max((len(row.display_shape) for row in rows), default=5)
    reduced = max((len(row.reduction.replace("mean ", "")) for row in rows), default=7)
    spare = width - 3 * len(columns) - 1 - sum(fixed.values()) - min(shapes, 14) - min(reduced, 16)
    spare -= 14 if show_op else 0
    name_width = max(10, min(60, spare - (16 if show_issue else 0)))
    table = Table(title="Layers", show_lines=False)
    limits = {"layer": name_width, "op": 14, "shape": 14, "reduced": 16, "issue": 30}
    for column, justify, minimum in columns:
        table.add_column(column, justify=justify, no_wrap=True, overflow="ellipsis", min_width=minimum,
                         max_width=limits.get(column))
    position = {row.name: row.position for row in rows}
    shown = distinct_names([row.name for row in rows], name_width)
    for row in rows:
        cells = [str(row.position), shown[row.position]]
        cells += [row.op] if show_op else []
        cells += [row.display_shape, row.reduction.replace("mean ", ""), _fmt(row.redundancy, 2),
                  f"#{position[row.most_similar]}" if row.most_similar in position else "-",
                  _fmt(row.most_similar_cka)]
        cells += [row.issue or ""] if show_issue else []
        table.add_row(*cells)
    return table


def render_scan(result: ScanResult, console: Console, top: int = 10) -> None:
    config = result.config
    console.print(f"[bold]redaudit scan[/bold] {result.model.path}  sha256 {result.model.sha256[:12]}  "
                  f"{result.model.parameter_count:,} parameters")
    console.print(f"level {config.level} · reduce {config.reduce} · estimator {config.estimator} · "
                  f"CKA batch {config.cka_batch or 'all'} · aggregate {config.aggregate} · ε {config.epsilon} · "
                  f"β {config.beta} · {result.samples} samples in {result.batches} batches "
                  f"({'real' if result.inputs_real else 'synthetic'} inputs) · {result.provider} · {result.backend}"
                  + (f" · onnxruntime micro-batch {result.micro_batch}" if result.micro_batch else ""))
    if result.unit:
        console.print(f"unit: {result.unit} (one IR each; docs/taps.md)")
    console.print(layer_table(result, console.width))
    pairs = Table(title=f"Most redundant pairs (top {top})")
    for column in ("layer a", "layer b", "CKA"):
        pairs.add_column(column, overflow="fold")
    for a, b, cka in result.top_pairs(top):
        shown = distinct_names(result.layer_names, max(12, console.width // 2 - 16))
        pairs.add_row(f"#{a} {shown[a]}", f"#{b} {shown[b]}", _fmt(cka))
    console.print(pairs)
    consecutive = result.consecutive_similarity()
    chain = Table(title="Consecutive-layer similarity (what pruning uses)")
    shown = distinct_names(result.layer_names, max(12, console.width - 24))
    chain.add_column("from → to", overflow="fold")
    chain.add_column("CKA", justify="right")
    for i, value in enumerate(consecutive):
        chain.add_row(f"{i} → {i + 1}  {shown[i + 1]}", _fmt(float(value)))
    console.print(chain)
    reading = reading_of_result(result)
    log2 = result.log2_msrs
    above = "" if reading.fraction_above is None else \
        f", {reading.pairs_above} above ε ({share(reading.fraction_above)})"
    console.print(f"[bold]MSRS {_fmt(result.msrs, 4)} ± {_fmt(result.msrs_std, 4)}[/bold], "
                  f"{interval_text(reading.interval)}  "
                  f"(log2 {_fmt(log2, 2) if math.isfinite(log2) else '-inf'}; {len(result.layers)} layers, "
                  f"max {reading.max_pairs} pairs{above}; "
                  f"{result.nan_batches} NaN batches skipped)")
    console.print(reading.sentence, highlight=False)
    timings = result.timings
    console.print(f"time {timings.get('total_s', 0):.2f} s (inference {timings.get('run_s', 0):.2f} s)")


def msrs_line(result: ScanResult) -> str:
    """The one result line of ``scan --quiet``: plain text, never ``nan``. An undefined MSRS
    says why, so a script reading the line can tell it from a number."""
    if not math.isfinite(result.msrs):
        return (f"MSRS n/a (every batch degenerate: {result.nan_batches} of {result.batches} batches had "
                "constant or non-finite layers)")
    spread = f"{result.msrs_std:.4f}" if math.isfinite(result.msrs_std) else "n/a"
    return f"MSRS {result.msrs:.4f} ± {spread}"


def print_warnings(warnings: list[str]) -> None:
    """Warnings go to stderr in every mode (``--quiet`` too): stdout carries only results."""
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
