"""CLI for the scan history: ``db upgrade|current``, ``history``, ``diff``, and the ``--record``
hook of ``scan`` (:func:`record_from_cli`); the gate, ``check``, is cli/check.py.

Thin: parse options, call ``redaudit.history``, render with rich. User errors print one line
``error: ...`` to stderr and exit 2 (``cli.common.user_errors``).
"""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from redaudit.cli.common import user_errors
from redaudit.cli.params import OutputPath, count
from redaudit.cli.history_views import history_to_dict, scan_lines, versions_table
from redaudit.cli.record_options import (check_record_options, db_option, db_option_used_with,  # noqa: F401 (re-exported)
                                         record_options)
from redaudit.errors import ConfigError
from redaudit.history import schema as history_schema
from redaudit.history.store import HistoryStore
from redaudit.history.writes import Recorded
from redaudit.report.json_report import finite_only
from redaudit.report.numbers import fmt as _fmt, percent, signed

report_url_option = click.option(
    "--report-url", metavar="URL", default=None,
    help="With --format md: link the HTML report here (e.g. the CI artifact's URL; default: the --html path).")


def record_message(recorded: Recorded, where: str) -> str:
    """One line saying what recording did; an alias is said as such, never as a new version."""
    head = f"recorded scan {recorded.scan_id} of {recorded.model_name}"
    version = recorded.version_display
    if recorded.version_status == "alias":
        return (f"{head}: same file as version {version}; {recorded.label} recorded as an alias "
                f"in {where}")
    if recorded.version_status == "named":
        return f"{head}: same file as before, now labelled {version} in {where}"
    if recorded.version_status == "same":
        return f"{head} (version {version}, same file) in {where}"
    return f"{head} (new version {version}) in {where}"


def record_from_cli(result, name: str, label: str | None = None, db: str | None = None,
                    parent_sha256: str | None = None, quiet: bool = False) -> int:
    """What ``redaudit scan MODEL --record NAME [--label L] [--db URL]`` calls after the scan.

    Records in one transaction, says so in one line on stderr (stdout stays free for --json) and
    returns the scan id. Raises RedauditError subclasses for the caller's error handling.
    """
    from redaudit.cli.signals import pause_at

    pause_at("record")
    with HistoryStore(db) as store:
        recorded = store.record(result, name, label=label, parent_sha256=parent_sha256)
        where = store.url
    if not quiet:
        Console(stderr=True).print(record_message(recorded, where), highlight=False, soft_wrap=True,
                                   markup=False)
    return recorded.scan_id


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
    with HistoryStore(db) as store:
        before, after = store.upgrade(revision)
        where = store.url
    if before == after:
        click.echo(f"{where}: already at revision {after}")
    else:
        click.echo(f"{where}: upgraded from {before or 'empty'} to {after}")


@db_group.command("current")
@db_option
@user_errors
def db_current(db: str | None) -> None:
    """Show the database's schema revision and the one this redaudit needs."""
    with HistoryStore(db) as store:
        current, head = store.revision_status()
        where = store.url
    if current == head:
        state = "up to date"
    elif current is not None and not history_schema.known_revision(current):
        state = "written by a newer redaudit: upgrade redaudit"
    else:
        state = "run `redaudit db upgrade`"
    click.echo(f"{where}: revision {current or 'none'} "
               f"(this redaudit needs {head}; {state})")


# --------------------------------------------------------------------------- history


@click.command("history")
@click.argument("name")
@db_option_used_with(None, must_exist=True)
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON.")
@click.option("--scans", "every_scan", is_flag=True, help="List every scan, not one row per version.")
@click.option("--plot", "plot_path", type=OutputPath(path_type=Path),
              help="Draw log2(MSRS) over versions into this PNG.")
@user_errors
def history_command(name: str, db: str | None, as_json: bool, every_scan: bool,
                    plot_path: Path | None) -> None:
    """Versions and scans of model NAME over time, with MSRS and its trend.

    One row per version (its latest scan; the arrow compares it with the previous version's),
    or every scan with --scans; --json gives everything."""
    with HistoryStore(db) as store:
        history = store.model_history(name)
    plot = None
    if plot_path is not None:
        from redaudit.history.render import plot_history

        plot = plot_history(history, plot_path)
    if as_json:
        click.echo(json.dumps(finite_only(history_to_dict(history)), indent=2, allow_nan=False))
        return
    console = Console()
    if every_scan:
        click.echo("\n".join(scan_lines(history)))
    else:
        console.print(versions_table(history))
    if plot is not None:
        notes = ([f"{plot.at_floor} scan(s) with MSRS 0 drawn as triangles at log2 = {plot.floor:g}"]
                 if plot.at_floor else [])
        notes += [f"{plot.left_out} scan(s) without MSRS left out"] if plot.left_out else []
        console.print(f"plot written to {plot_path}" + (f" ({'; '.join(notes)})" if notes else ""),
                      highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- diff


@click.command("diff")
@click.argument("name")
@click.argument("before")
@click.argument("after")
@db_option_used_with(None, must_exist=True)
@click.option("--force", is_flag=True, help="Compare even if settings that change MSRS differ.")
@click.option("--html", "html_path", type=OutputPath(path_type=Path),
              help="Write an HTML report with side-by-side heatmaps.")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON (same as --format json).")
@click.option("--format", "output_format", type=click.Choice(["text", "json", "md"]), default="text",
              show_default=True, help="md: a compact GitHub Markdown summary for a pull-request comment.")
@report_url_option
@click.option("--top", type=count(0, 1_000_000), default=10, show_default=True, help="Layers to list by redundancy change.")
@user_errors
def diff_command(name: str, before: str, after: str, db: str | None, force: bool,
                 html_path: Path | None, as_json: bool, output_format: str, report_url: str | None,
                 top: int) -> None:
    """Compare two scans of NAME (each a version label or alias, sha256 prefix or scan id)."""
    if top < 0:
        raise ConfigError(f"--top must be 0 or more (layers to list), not {top}")
    with HistoryStore(db) as store:
        diff = store.diff(name, before, after, force=force)
    if html_path is not None:
        from redaudit.history.render import write_diff_html

        write_diff_html(diff, html_path, top=top)
    if output_format == "md":
        from redaudit.report.markdown import diff_markdown

        click.echo(diff_markdown(diff, top=min(top, 10), report_url=link_target(report_url, html_path)), nl=False)
        return
    if as_json or output_format == "json":
        click.echo(json.dumps(finite_only(diff.to_dict()), indent=2, default=str, allow_nan=False))
        return
    console = Console()
    pct = diff.msrs_change_pct
    from rich.markup import escape

    from redaudit.cli.history_views import shown

    console.print(f"[bold]{escape(shown(name))}[/bold]: {escape(shown(diff.before.display))} → "
                  f"{escape(shown(diff.after.display))}", highlight=False)
    console.print(f"MSRS {_fmt(diff.msrs_before)} → {_fmt(diff.msrs_after)} "
                  f"({signed(diff.msrs_delta, '+.4g')}"
                  f"{'' if pct is None else f', {percent(pct)}'}"
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
                      signed(change.delta))
    console.print(table)
    for difference in diff.forced_differences:
        console.print(f"[yellow]forced:[/yellow] {difference}", highlight=False)
    for note in diff.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if html_path is not None:
        console.print(f"HTML report written to {html_path}", highlight=False)


# --------------------------------------------------------------------------- check


def link_target(report_url: str | None, html_path: str | Path | None) -> str | None:
    """Where the comment's report link points: --report-url, else the --html path as given."""
    return report_url or (str(html_path) if html_path is not None else None)

