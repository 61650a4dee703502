"""`redaudit scan` and `redaudit taps`."""
from __future__ import annotations

from typing import Any

import click

import redaudit
from redaudit.cli.common import (MAX_MODEL_SIZE_AUTO, MAX_MODEL_SIZE_HELP, OutputError, console, err_console,
                                 prepare_output_paths, progress_bar, user_errors)
from redaudit.cli.params import InputPath, OutputPath, count
from redaudit.cli.guard import model_data_files
from redaudit.cli.mlflow_options import logged_line, mlflow_options, mlflow_target
from redaudit.cli.record_options import check_record_options, record_options
from redaudit.cli.scan_options import scan_options, scan_spec
from redaudit.core.spec import LEVELS


@click.command("scan")
@click.argument("model", type=InputPath(dir_okay=True, companions=model_data_files))
@scan_options
@click.option("--json", "json_path", type=OutputPath(), help="Write the full result as JSON.")
@click.option("--heatmap", "heatmap_path", type=OutputPath(), help="Write the similarity heatmap (PNG).")
@click.option("--html", "html_path", type=OutputPath(), help="Write a self-contained HTML report.")
@click.option("--top", type=count(1, 1_000_000), default=10, show_default=True, help="Redundant pairs to list.")
@click.option("--quiet", is_flag=True,
              help="Print only the MSRS line on stdout; stderr gets warnings, nothing else.")
@record_options
@mlflow_options
@user_errors
def scan_command(model: str, json_path: str | None, heatmap_path: str | None, html_path: str | None,
                 top: int, quiet: bool, record: str | None, label: str | None, db: str | None,
                 **options: Any) -> None:
    """Measure layer similarity (CKA) and MSRS of an ONNX MODEL."""
    # Imported here, not at the top: `scan --help` must not load numpy (render); SQLAlchemy (history)
    # only loads for --record (about 0.2 s of every scan's start otherwise: issue 27).
    from redaudit.cli.render import msrs_line, print_warnings, render_scan

    tracking = mlflow_target(options)
    spec = scan_spec(options)
    check_record_options(record, label, db)  # a bad --record/--db fails before the scan
    prepare_output_paths(json_path, heatmap_path, html_path,  # fail before a long scan, not after
                         inputs=(model, spec.inputs))
    with progress_bar("scanning", enabled=not quiet) as update:
        result = redaudit.scan(model, spec, progress=update)
    # Every write first (reports staged, the history row committed, then the reports renamed
    # into place), so a failure is the command's only line and leaves nothing behind.
    written = _write_reports(result, json_path, heatmap_path, html_path,
                             record=(lambda: _record(result, record, label, db, quiet)) if record else None)
    print_warnings(result.warnings)
    if quiet:
        click.echo(msrs_line(result))
    else:
        render_scan(result, console, top=top)
        for path in written:
            err_console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    if label and not record:
        print_warnings(["--label has no effect without --record NAME"])
    if tracking is not None:
        from redaudit.integrations.mlflow import log_scan

        run = log_scan(result, tracking)
        if not quiet:
            logged_line(run)


def _record(result: redaudit.ScanResult, record: str, label: str | None, db: str | None, quiet: bool) -> Any:
    from redaudit.cli.history import record_from_cli

    return record_from_cli(result, record, label, db, quiet=quiet)


def _write_reports(result: redaudit.ScanResult, json_path: str | None, heatmap_path: str | None,
                   html_path: str | None, record: Any = None) -> list[str]:
    try:
        return _write_each(result, json_path, heatmap_path, html_path, record)
    except OSError as error:
        raise OutputError(f"cannot write {error.filename or 'report'}: {error.strerror or error}") from None


def _write_each(result: redaudit.ScanResult, json_path: str | None, heatmap_path: str | None,
                html_path: str | None, record: Any) -> list[str]:
    """Render every requested report, then write them together: all complete, or none (a full
    disk or ``ulimit -f`` on the last one removes the others' temporary files too). ``record``
    runs while the files are staged: a failed recording leaves no report either."""
    from redaudit.atomic import staged_files

    rendered: list[tuple[str, bytes]] = []
    if json_path:
        from redaudit.report.json_report import dumps
        rendered.append((json_path, (dumps(result) + "\n").encode("utf-8")))
    if heatmap_path:
        from redaudit.report.heatmap import default_title, heatmap_png_bytes
        rendered.append((heatmap_path, heatmap_png_bytes(result.similarity, result.layer_names,
                                                         default_title(result))))
    if html_path:
        from redaudit.report.html import render_html
        rendered.append((html_path, render_html(result).encode("utf-8")))
    with staged_files() as files:
        for path, data in rendered:
            files.stage(path, data)
        if record is not None:
            record()
    return [path for path, _ in rendered]


@click.command("taps")
@click.argument("model", type=InputPath(dir_okay=True))
@click.option("--level", type=click.Choice(LEVELS), default="block", show_default=True)
@click.option("--max-model-size", default=MAX_MODEL_SIZE_AUTO, show_default=True, metavar="SIZE|auto",
              help=MAX_MODEL_SIZE_HELP)
@user_errors
def taps_command(model: str, level: str, max_model_size: str) -> None:
    """List the IR tensors a scan of MODEL would tap at --level (name, op, shape)."""
    from redaudit.cli.common import parse_model_size
    from redaudit.core.graph import GraphIndex
    from redaudit.core.load_passes import graph_as_scanned
    from redaudit.core.model import load_model
    from redaudit.core.tap import select_taps
    from rich.table import Table

    loaded = load_model(model, max_bytes=parse_model_size(max_model_size))
    proto, inlined = graph_as_scanned(loaded.proto)  # the graph a scan reads
    selection = select_taps(GraphIndex.build(proto, folder=loaded.folder), level)
    table = Table(title=f"{len(selection.points)} taps at level {selection.level} (unit: {selection.unit})")
    for column in ("#", "unit", "tensor", "op", "shape"):
        table.add_column(column, overflow="fold")
    for i, point in enumerate(selection.points):
        table.add_row(str(i), point.unit, point.tensor, point.op, "×".join(map(str, point.shape)))
    console.print(table)
    for warning in [*(item.note for item in inlined), *selection.warnings]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
