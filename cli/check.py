"""``redaudit check``: the CI gate. Scan MODEL, then exit 0 when its MSRS is within bounds
(``--max-msrs``, or ``--max-increase`` over ``--against NAME``'s latest comparable recorded scan),
1 with a one-line reason when not; user errors exit 2 (``cli.common.user_errors``).

Thin: the verdict is ``redaudit.history.check.check_result``; this module parses, scans, renders.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import click

import redaudit
from redaudit.cli.common import progress_bar, user_errors
from redaudit.cli.history import link_target, report_url_option
from redaudit.cli.mlflow_options import logged_line, mlflow_options, mlflow_target
from redaudit.cli.params import InputPath, OutputPath, number
from redaudit.cli.record_options import db_option_used_with
from redaudit.cli.render import print_warnings
from redaudit.cli.scan_options import scan_options, scan_spec
from redaudit.history import db as history_db
from redaudit.history.check import check_result, validate_limits
from redaudit.history.store import HistoryStore


@click.command("check")
@click.argument("model", type=InputPath(dir_okay=True))
@click.option("--max-msrs", type=number(0.0, 1e12), help="Fail when MSRS exceeds this.")
@click.option("--against", metavar="NAME", help="Compare with NAME's latest comparable recorded scan.")
@click.option("--max-increase", type=number(-100.0, 1e9), metavar="PCT", help="Allowed MSRS increase over --against, in percent.")
@click.option("--significant", is_flag=True,
              help="Fail on --max-increase only when the whole 95% bootstrap interval of the increase "
                   "is above PCT (an increase beyond batch noise).")
@db_option_used_with("against", must_exist=True)
@click.option("--force", is_flag=True, help="Compare with the latest scan even if its settings or probe differ.")
@click.option("--any-probe", is_flag=True,
              help="Compare with the latest comparable scan even if it used other probe inputs or samples.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--format", "output_format", type=click.Choice(["text", "md"]), default="text", show_default=True,
              help="md: the verdict as a compact GitHub Markdown summary for a pull-request comment.")
@click.option("--html", "html_path", type=OutputPath(dir_okay=False), help="Write the scan's HTML report.")
@report_url_option
@scan_options
@mlflow_options
@user_errors
def check_command(model: str, max_msrs: float | None, against: str | None, max_increase: float | None,
                  significant: bool, db: str | None, force: bool, any_probe: bool, quiet: bool, output_format: str,
                  html_path: str | None, report_url: str | None, **options: Any) -> None:
    """Scan MODEL; exit 0 if its MSRS is within bounds, 1 with a one-line reason if not."""
    validate_limits(max_msrs, against, max_increase, significant)
    tracking = mlflow_target(options)
    if against is not None:
        history_db.parse_url(db)
    spec = scan_spec(options)
    if html_path is not None:
        from redaudit.cli.common import prepare_output_paths

        prepare_output_paths(html_path, inputs=(model, spec.inputs))
    with progress_bar("scanning", enabled=not quiet) as update:
        result = redaudit.scan(model, spec, progress=update)
    changes: tuple = ()
    with HistoryStore(db) if against is not None else nullcontext() as store:
        outcome = check_result(result, max_msrs=max_msrs, against=against,
                               max_increase=max_increase, db=store, force=force, significant=significant,
                               any_probe=any_probe)
        if output_format == "md" and outcome.baseline is not None:
            from redaudit.history.diff import changed_layers

            baseline = store.load_scan(outcome.baseline.scan.scan_id)
            changes = changed_layers({layer.name: layer.redundancy for layer in baseline.layers},
                                     {row.name: row.redundancy for row in result.layer_rows()})
    if html_path is not None:
        from redaudit.cli.common import OutputError
        from redaudit.report.html import write_html

        try:
            write_html(result, html_path)
        except OSError as error:
            raise OutputError(f"cannot write {html_path}: {error.strerror or error}") from None
    print_warnings(result.warnings)  # on stderr: synthetic probes make the gate's number weak
    if tracking is not None:
        from redaudit.integrations.mlflow import log_check

        logged_line(log_check(outcome, result, tracking))
    if output_format == "md":
        from redaudit.report.markdown import check_markdown

        click.echo(check_markdown(outcome, result, changes=changes,
                                  report_url=link_target(report_url, html_path)), nl=False)
    else:
        click.echo(("OK: " if outcome.passed else "FAIL: ") + outcome.reason)
    if not outcome.passed:
        raise SystemExit(1)
