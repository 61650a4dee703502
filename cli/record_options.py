"""The ``--record NAME``, ``--label`` and ``--db`` options, without the history's imports.

``scan`` and ``prune`` carry these options, and ``redaudit scan --help`` must not pay for
SQLAlchemy (about a quarter of a second) to print them: the history modules are imported only
when a name is really given.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from redaudit.cli.params import DatabaseUrl

_DB_HELP = "Database URL or SQLite path (default: $REDAUDIT_DB, else the user data directory's history.db)."
db_option = click.option("--db", "db", metavar="URL", type=DatabaseUrl(), default=None, help=_DB_HELP)


def db_option_used_with(parameter: str | None, must_exist: bool = False) -> Callable[..., Any]:
    """``--db`` for a command that opens the database only when ``parameter`` is given (always
    when None); ``must_exist``: the command only reads it."""
    return click.option("--db", "db", metavar="URL", type=DatabaseUrl(used_with=parameter, must_exist=must_exist),
                        default=None, help=_DB_HELP)


def record_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``scan`` adds for recording: ``--record NAME``, ``--label L``, ``--db URL``.

    They arrive as ``record``, ``label`` and ``db`` keyword arguments; pass them on to
    :func:`redaudit.cli.history.record_from_cli` when ``record`` is set.
    """
    command = db_option_used_with("record")(command)
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
