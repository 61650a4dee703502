"""``redaudit export``: a scan's numbers in other tools' formats (Model Explorer node data)."""
from __future__ import annotations

import shlex

import click

from redaudit.cli.common import (MAX_MODEL_SIZE_AUTO, MAX_MODEL_SIZE_HELP, OutputError, err_console, parse_model_size,
                                 prepare_output_paths, user_errors)
from redaudit.errors import ConfigError


@click.group("export")
def export_group() -> None:
    """Write a scan's numbers in other tools' formats."""


@export_group.command("model-explorer")
@click.argument("source", required=False, metavar="RESULT.json|SCAN_ID")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Node data file (redundancy); the other metrics go beside it as OUTPUT-stem.METRIC.json.")
@click.option("--diff", "diff", nargs=2, metavar="A B", default=None,
              help="Write the per-layer redundancy change from scan A to scan B (each a JSON report or a "
                   "history scan id), drawn on B's graph.")
@click.option("--model", type=click.Path(dir_okay=False), default=None,
              help="The scanned ONNX file, when it has moved since the scan (its sha256 must match).")
@click.option("--db", metavar="URL", default=None, help="History database for scan ids (default: as `history`).")
@click.option("--force", is_flag=True, help="With --diff: compare even if settings that change MSRS differ.")
@click.option("--max-model-size", default=MAX_MODEL_SIZE_AUTO, show_default=True, metavar="SIZE|auto",
              help=MAX_MODEL_SIZE_HELP)
@user_errors
def model_explorer_command(source: str | None, output: str, diff: tuple[str, str] | None, model: str | None,
                           db: str | None, force: bool, max_model_size: str) -> None:
    """Model Explorer custom node data for a scan: per tapped node its redundancy, the CKA to its
    most similar layer and, for removable blocks, CKA(block input, output). View it with
    `model-explorer MODEL --extensions=model_explorer_onnx --node_data_paths=OUTPUT,...` (the line
    this prints; pip install ai-edge-model-explorer model-explorer-onnx)."""
    from redaudit.integrations import explorer_export, require

    if (source is None) == (diff is None):
        raise ConfigError("give one scan (RESULT.json or SCAN_ID) or --diff A B")
    require("model_explorer_onnx", "explorer", "export model-explorer")
    import logging

    # The adapter logs a warning per unnamed graph or failed shape inference; its graph is still
    # what the viewer shows, so the application keeps stderr to our own lines.
    logging.getLogger("model_explorer_onnx").setLevel(logging.ERROR)
    prepare_output_paths(output, inputs=(source, model, *(diff or ())))
    max_bytes = parse_model_size(max_model_size)
    try:
        if diff is not None:
            exported = explorer_export.export_diff(*diff, output, db=db, model=model, force=force,
                                                   max_bytes=max_bytes)
        else:
            exported = explorer_export.export_scan(source, output, db=db, model=model, max_bytes=max_bytes)
    except OSError as error:
        raise OutputError(f"cannot write {error.filename or output}: {error.strerror or error}") from None
    for path in exported.files:
        err_console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    paths = ",".join(shlex.quote(str(path)) for path in exported.files)
    click.echo(f"model-explorer {shlex.quote(str(exported.model))} --extensions=model_explorer_onnx "
               f"--node_data_paths={paths}")
