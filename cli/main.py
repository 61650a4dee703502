"""The `redaudit` command: a thin click layer over the library."""
from __future__ import annotations

import click

from redaudit import __version__
from redaudit.cli.history import check_command, db_group, diff_command, history_command
from redaudit.cli.nas import nas
from redaudit.cli.prune import prune_command
from redaudit.cli.scan import scan_command, taps_command
from redaudit.cli.push import push_command
from redaudit.cli.serve import serve_command, worker_command
from redaudit.cli.token import token_group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="redaudit")
def cli() -> None:
    """Measure and remove structural redundancy in neural networks (RedTest / MSRS) on ONNX models."""


cli.add_command(scan_command)
cli.add_command(taps_command)
cli.add_command(prune_command)
for command in (history_command, diff_command, check_command, db_group, nas, serve_command,
                worker_command, token_group, push_command):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="redaudit")


if __name__ == "__main__":
    main()
