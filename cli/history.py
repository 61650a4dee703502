"""CLI for the scan history: ``db upgrade|current``, ``history``, ``diff``, ``check``, and the
``--record`` hook of ``scan`` (:func:`record_from_cli`).

Thin: parse options, call ``redaudit.history``, render with rich. User errors print one line
``error: ...`` to stderr and exit 2 (``cli.common.user_errors``); ``check`` exits 1 with one line when out of bounds.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

import redaudit
from redaudit.cli.common import progress_bar, user_errors
from redaudit.cli.render import print_warnings
from redaudit.cli.history_views import history_to_dict, scan_lines, versions_table
from redaudit.cli.scan_options import scan_options, scan_spec
from redaudit.errors import ConfigError
from redaudit.history import db as history_db
from redaudit.history.check import check_result
from redaudit.history.diff import diff_references
from redaudit.history.store import model_history, record_scan

db_option = click.option("--db", "db", metavar="URL", default=None,
                         help="Database URL or SQLite path (default: $REDAUDIT_DB, else the "
                              "user data directory's history.db).")


def record_options(command):
    """The options ``scan`` adds for recording: ``--record NAME``, ``--label L``, ``--db URL``.

    They arrive as ``record``, ``label`` and ``db`` keyword arguments; pass them on to
    :func:`record_from_cli` when ``record`` is set.
    """
    command = db_option(command)
    command = click.option("--label", metavar="LABEL", default=None,
                           help="With --record: a name for this version (e.g. a git tag).")(command)
    return click.option("--record", metavar="NAME", default=None,
                        help="Store the scan in the history under model NAME.")(command)


def record_from_cli(result, name: str, label: str | None = None, db: str | None = None,
                    parent_sha256: str | None = None, quiet: bool = False) -> int:
    """What ``redaudit scan MODEL --record NAME [--label L] [--db URL]`` calls after the scan.

    Records in one transaction, says so in one line on stderr (stdout stays free for --json) and
    returns the scan id. Raises RedauditError subclasses for the caller's error handling.
    """
    scan_id = record_scan(db, result, name, label=label, parent_sha256=parent_sha256)
    if quiet:
        return scan_id
    version = label or result.model.sha256[:12]
    Console(stderr=True).print(f"recorded scan {scan_id} of [bold]{name}[/bold] (version {version}) "
                               f"in {history_db.display_url(history_db.resolve_url(db))}",
                               highlight=False, soft_wrap=True)
    return scan_id


# --------------------------------------------------------------------------- db


@click.group("db")
def db_group() -> None:
    """Manage the history database schema (Alembic migrations)."""


@db_group.command("upgrade")
@db_option
@click.option("--revision", default="head", show_default=True, help="Target schema revision.")
@user_errors
def db_upgrade(db: str | None, revision: str) -> None:
    """Create or migrate the history schema to this redaudit's revision."""
    engine = history_db.make_engine(db)
    try:
        before, after = history_db.upgrade(engine, revision)
    finally:
        engine.dispose()
    where = history_db.display_url(engine)
    if before == after:
        click.echo(f"{where}: already at revision {after}")
    else:
        click.echo(f"{where}: upgraded from {before or 'empty'} to {after}")


@db_group.command("current")
@db_option
@user_errors
def db_current(db: str | None) -> None:
    """Show the database's schema revision and the one this redaudit needs."""
    engine = history_db.make_engine(db)
    try:
        current, head = history_db.revision_status(engine)
    finally:
        engine.dispose()
    state = "up to date" if current == head else "run `redaudit db upgrade`"
    click.echo(f"{history_db.display_url(engine)}: revision {current or 'none'} "
               f"(this redaudit needs {head}; {state})")


# --------------------------------------------------------------------------- history


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


@click.command("history")
@click.argument("name")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON.")
@click.option("--scans", "every_scan", is_flag=True, help="List every scan, not one row per version.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw log2(MSRS) over versions into this PNG.")
@user_errors
def history_command(name: str, db: str | None, as_json: bool, every_scan: bool,
                    plot_path: Path | None) -> None:
    """Versions and scans of model NAME over time, with MSRS and its trend.

    One row per version (its latest scan; the arrow compares it with the previous version's),
    or every scan with --scans; --json gives everything."""
    history = model_history(db, name)
    if plot_path is not None:
        from redaudit.history.render import plot_history

        plot_history(history, plot_path)
    if as_json:
        click.echo(json.dumps(history_to_dict(history), indent=2))
        return
    console = Console()
    if every_scan:
        click.echo("\n".join(scan_lines(history)))
    else:
        console.print(versions_table(history))
    if plot_path is not None:
        console.print(f"plot written to {plot_path}", highlight=False)


# --------------------------------------------------------------------------- diff


@click.command("diff")
@click.argument("name")
@click.argument("before")
@click.argument("after")
@db_option
@click.option("--force", is_flag=True, help="Compare even if settings that change MSRS differ.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write an HTML report with side-by-side heatmaps.")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
@click.option("--top", default=10, show_default=True, help="Layers to list by redundancy change.")
@user_errors
def diff_command(name: str, before: str, after: str, db: str | None, force: bool,
                 html_path: Path | None, as_json: bool, top: int) -> None:
    """Compare two scans of NAME (each a version label, sha256 prefix or scan id)."""
    diff = diff_references(db, name, before, after, force=force)
    if html_path is not None:
        from redaudit.history.render import write_diff_html

        write_diff_html(diff, html_path, top=top)
    if as_json:
        click.echo(json.dumps(diff.to_dict(), indent=2, default=str))
        return
    console = Console()
    pct = diff.msrs_change_pct
    console.print(f"[bold]{name}[/bold]: {diff.before.display} → {diff.after.display}", highlight=False)
    console.print(f"MSRS {_fmt(diff.msrs_before)} → {_fmt(diff.msrs_after)} "
                  f"({'n/a' if diff.msrs_delta is None else f'{diff.msrs_delta:+.4g}'}"
                  f"{'' if pct is None else f', {pct:+.1f}%'}"
                  f"{'' if diff.significant else ', within batch noise'})", highlight=False)
    console.print(f"layers {diff.before.summary.layer_count} → {diff.after.summary.layer_count}: "
                  f"{len(diff.added)} added, {len(diff.removed)} removed", highlight=False)
    for mark, names in (("+", diff.added), ("-", diff.removed)):
        for layer in names[:top]:
            console.print(f"  {mark} {layer}", highlight=False)
    table = Table(title="layers whose redundancy changed most")
    for column in ("layer", "before", "after", "Δ"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for change in diff.changed[:top]:
        table.add_row(change.name, _fmt(change.before, ".3f"), _fmt(change.after, ".3f"),
                      f"{change.delta:+.3f}")
    console.print(table)
    for difference in diff.forced_differences:
        console.print(f"[yellow]forced:[/yellow] {difference}", highlight=False)
    for note in diff.notes:
        console.print(f"note: {note}", highlight=False)
    if html_path is not None:
        console.print(f"HTML report written to {html_path}", highlight=False)


# --------------------------------------------------------------------------- check


@click.command("check")
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--max-msrs", type=float, help="Fail when MSRS exceeds this.")
@click.option("--against", metavar="NAME", help="Compare with NAME's latest comparable recorded scan.")
@click.option("--max-increase", type=float, metavar="PCT", help="Allowed MSRS increase over --against, in percent.")
@db_option
@click.option("--force", is_flag=True, help="Compare with the latest scan even if its settings differ.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@scan_options
@user_errors
def check_command(model: str, max_msrs: float | None, against: str | None, max_increase: float | None,
                  db: str | None, force: bool, quiet: bool, **options: Any) -> None:
    """Scan MODEL; exit 0 if its MSRS is within bounds, 1 with a one-line reason if not."""
    if max_msrs is None and against is None:
        raise ConfigError("give --max-msrs X and/or --against NAME --max-increase PCT")
    if (against is None) != (max_increase is None):
        raise ConfigError("--against NAME and --max-increase PCT go together")
    spec = scan_spec(options)
    with progress_bar("scanning", enabled=not quiet) as update:
        result = redaudit.scan(model, spec, progress=update)
    outcome = check_result(result, max_msrs=max_msrs, against=against, max_increase=max_increase,
                           db=db, force=force)
    print_warnings(result.warnings)  # on stderr: synthetic probes make the gate's number weak
    click.echo(("OK: " if outcome.passed else "FAIL: ") + outcome.reason)
    if not outcome.passed:
        raise SystemExit(1)
