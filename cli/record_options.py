"""The ``--record NAME``, ``--label`` and ``--db`` options, without the history's imports.

``scan`` and ``prune`` carry these options, and ``redaudit scan --help`` must not pay for
SQLAlchemy (about a quarter of a second) to print them: the history modules are imported only
when a name is really given.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

db_option = click.option("--db", "db", metavar="URL", default=None,
                         help="Database URL or SQLite path (default: $REDAUDIT_DB, else the "
                              "user data directory's history.db).")


def record_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``scan`` adds for recording: ``--record NAME``, ``--label L``, ``--db URL``.

    They arrive as ``record``, ``label`` and ``db`` keyword arguments; pass them on to
    :func:`redaudit.cli.history.record_from_cli` when ``record`` is set.
    """
    command = db_option(command)
    command = click.option("--label", metavar="LABEL", default=None,
                           help="With --record: a name for this version (e.g. a git tag).")(command)
    return click.option("--record", metavar="NAME", default=None,
                        help="Store the scan in the history under model NAME.")(command)


def check_record_options(record: str | None, label: str | None, db: str | None) -> None:
    """Refuse a bad ``--record NAME``/``--label``/``--db`` before the scan runs, not after.

    ``--record ''`` is a mistake (an unset shell variable, typically), not "do not record".
    """
    if record is None:
        return
    from redaudit.history import db as history_db
    from redaudit.history.writes import validate_name

    validate_name(record, "--record NAME")
    if label is not None:
        validate_name(label, "--label")
    history_db.parse_url(db)
