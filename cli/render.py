"""Rich rendering of a ScanResult for the terminal."""
from __future__ import annotations

import math

import click
from rich.console import Console
from rich.table import Table

from redaudit.core.result import ScanResult


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def layer_table(result: ScanResult) -> Table:
    """The per-layer table, from the view every renderer shares (:meth:`ScanResult.layer_rows`)."""
    table = Table(title="Layers", show_lines=False)
    for column, justify in [("#", "right"), ("layer", "left"), ("op", "left"), ("shape", "left"),
                            ("reduced", "left"), ("redundancy", "right"), ("most similar", "left"),
                            ("CKA", "right"), ("issue", "left")]:
        table.add_column(column, justify=justify, overflow="fold")
    for row in result.layer_rows():
        table.add_row(str(row.position), _short(row.name), row.op, row.display_shape, row.reduction,
                      _fmt(row.redundancy, 2), _short(row.most_similar, 32) if row.most_similar else "-",
                      _fmt(row.most_similar_cka), row.issue or "")
    return table


def render_scan(result: ScanResult, console: Console, top: int = 10) -> None:
    config = result.config
    console.print(f"[bold]redaudit scan[/bold] {result.model.path}  sha256 {result.model.sha256[:12]}  "
                  f"{result.model.parameter_count:,} parameters")
    console.print(f"level {config.level} · reduce {config.reduce} · estimator {config.estimator} · "
                  f"CKA batch {config.cka_batch or 'all'} · aggregate {config.aggregate} · ε {config.epsilon} · "
                  f"β {config.beta} · {result.samples} samples in {result.batches} batches "
                  f"({'real' if result.inputs_real else 'synthetic'} inputs) · {result.provider} · {result.backend}")
    console.print(layer_table(result))
    pairs = Table(title=f"Most redundant pairs (top {top})")
    for column in ("layer a", "layer b", "CKA"):
        pairs.add_column(column, overflow="fold")
    for a, b, cka in result.top_pairs(top):
        pairs.add_row(_short(result.layers[a].name), _short(result.layers[b].name), _fmt(cka))
    console.print(pairs)
    consecutive = result.consecutive_similarity()
    chain = Table(title="Consecutive-layer similarity (what pruning uses)")
    chain.add_column("from → to", overflow="fold")
    chain.add_column("CKA", justify="right")
    for i, value in enumerate(consecutive):
        chain.add_row(f"{i} → {i + 1}  {_short(result.layers[i + 1].name)}", _fmt(float(value)))
    console.print(chain)
    log2 = result.log2_msrs
    console.print(f"[bold]MSRS {_fmt(result.msrs, 4)} ± {_fmt(result.msrs_std, 4)}[/bold]  "
                  f"(log2 {_fmt(log2, 2) if math.isfinite(log2) else '-inf'}; {len(result.layers)} layers, "
                  f"max {len(result.layers) * (len(result.layers) - 1) // 2} pairs; "
                  f"{result.nan_batches} NaN batches skipped)")
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
