"""The history schema's revision: check it on open, create it on the first write, migrate it.

Every store checks the revision once: an empty database is created on the first write, an old
one is refused with the command that upgrades it, a newer one with "upgrade redaudit", and a
foreign one is left alone. Migrations run through Alembic's Python API on our own connection,
in one transaction, with Alembic errors turned into one-line messages.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from redaudit.history.db import ENV_VAR, _first_line, display_url, translated_errors, writer
from redaudit.history.errors import NotAHistoryDatabaseError, SchemaOutdatedError
from redaudit.history.models import Base

#: Our own Alembic version table, so an Optuna study store (which has its own ``alembic_version``)
#: can share the database with the history.
VERSION_TABLE = "redaudit_alembic_version"
#: The service's tables (``redaudit/service/models.py``): one schema, one set of revisions
#: (0003_service), but history does not import the service, so it knows them by name;
#: tests/history/test_migrations.py checks the names against the service's models.
SERVICE_TABLES = frozenset({"service_blobs", "service_jobs", "service_tokens"})
#: Every table of the schema: history's from its models, the service's by name.
OUR_TABLES = frozenset(Base.metadata.tables) | SERVICE_TABLES
# Tables we tolerate beside ours in a SQLite file: Optuna's RDB storage (the NAS study store).
_SHARED_PREFIXES = ("study", "studies", "trial", "version_info", "alembic_version")


def migrations_dir() -> Path:
    """The Alembic scripts: ``redaudit/migrations`` (installed copy, or the source checkout's
    link to the top-level ``migrations/``), else the top-level folder itself."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "migrations", package_dir.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("redaudit's Alembic migrations are missing from this installation")


def alembic_config(connection: Connection | None = None, url: str | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


_SCRIPTS: list = []


def _script_directory():
    if not _SCRIPTS:  # parsing the revision files once per process is enough
        from alembic.script import ScriptDirectory

        _SCRIPTS.append(ScriptDirectory.from_config(alembic_config()))
    return _SCRIPTS[0]


#: The Alembic head this code needs. Kept as a constant so that opening the database for a read
#: never imports Alembic or parses revision files (a third of a cold `history` call); a test
#: checks it equals the head of migrations/versions.
SCHEMA_REVISION = "0005"


def head_revision() -> str:
    return SCHEMA_REVISION


def known_revision(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return _script_directory().get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(connection: Connection) -> str | None:
    """The revision in our version table (None: no table or no row), read with plain SQL."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return rows[0] if len(rows) == 1 else (None if not rows else ",".join(sorted(rows)))


def _lock_for_schema(connection: Connection) -> None:
    """Serialise schema creation between processes (SQLite does it with BEGIN IMMEDIATE)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(7254916)"))


def _refuse_foreign(connection: Connection, engine: Engine) -> None:
    tables = set(inspect(connection).get_table_names()) - {VERSION_TABLE}
    ours = tables & OUR_TABLES
    others = {name for name in tables - OUR_TABLES
              if not name.startswith(_SHARED_PREFIXES) and not name.startswith("sqlite_")}
    if ours or (others and connection.dialect.name == "sqlite"):
        found = ", ".join(sorted(ours or others)[:3])
        raise NotAHistoryDatabaseError(
            f"{display_url(engine)} is not a redaudit history database (it holds {found} but no "
            f"{VERSION_TABLE}); point --db or ${ENV_VAR} at another database")


def ensure_schema(engine: Engine, create: bool) -> None:
    """Check the schema revision; create the schema in an empty database when ``create``.

    Raises :class:`SchemaOutdatedError` for an older (or newer) revision and
    :class:`NotAHistoryDatabaseError` for a database that holds someone else's tables.
    """
    head = head_revision()
    opened = writer(engine) if create else engine  # readers never take SQLite's write lock
    with translated_errors(engine), opened.connect() as connection, connection.begin():
        if create:
            _lock_for_schema(connection)
        current = current_revision(connection)
        if current == head:
            return
        if current is None:
            _refuse_foreign(connection, engine)
            if not create:
                raise SchemaOutdatedError(
                    f"{display_url(engine)} holds no redaudit history yet; record a scan with "
                    f"`redaudit scan MODEL --record NAME` or run `redaudit db upgrade`")
            from alembic import command

            command.upgrade(alembic_config(connection), "head")
            return
        if known_revision(current):
            raise SchemaOutdatedError(
                f"history database {display_url(engine)} is at schema revision {current}, this "
                f"redaudit needs {head}: run `redaudit db upgrade` (with the same --db/$REDAUDIT_DB)")
        raise SchemaOutdatedError(
            f"history database {display_url(engine)} is at schema revision {current}, unknown to "
            f"this redaudit (which needs {head}): it was written by a newer redaudit; upgrade redaudit")


def _check_target(target: str) -> None:
    if target not in ("head", "base") and not known_revision(target):
        raise SchemaOutdatedError(f"--revision {target!r} is not a schema revision of this redaudit "
                                  f"(known: {', '.join(_known_revisions())}, or head)")


def _check_current(engine: Engine, before: str | None) -> None:
    """One line, before Alembic runs, for what Alembic would answer with a traceback."""
    if before is not None and not known_revision(before):
        raise SchemaOutdatedError(
            f"history database {display_url(engine)} is at schema revision {before}, unknown to this "
            f"redaudit (which knows up to {head_revision()}): it was written by a newer redaudit; "
            f"upgrade redaudit instead")


def _known_revisions() -> list[str]:
    return sorted(script.revision for script in _script_directory().walk_revisions())


def _migrate(engine: Engine, step: str, revision: str) -> tuple[str | None, str | None]:
    from alembic import command
    from alembic.util import CommandError

    _check_target(revision)  # before connecting: a new SQLite file is not even created
    with translated_errors(engine), writer(engine).connect() as connection, connection.begin():
        _lock_for_schema(connection)
        before = current_revision(connection)
        if before is None:
            _refuse_foreign(connection, engine)
        _check_current(engine, before)
        try:
            getattr(command, step)(alembic_config(connection), revision)
        except CommandError as exc:  # e.g. "upgrade" to a revision older than the current one
            raise SchemaOutdatedError(f"cannot {step} {display_url(engine)} from {before or 'empty'} "
                                      f"to {revision}: {_first_line(exc)}") from None
        return before, current_revision(connection)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``revision`` in one transaction; returns (revision before, revision after)."""
    return _migrate(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> tuple[str | None, str | None]:
    return _migrate(engine, "downgrade", revision)


def revision_status(engine: Engine) -> tuple[str | None, str]:
    """(the database's revision or None, the revision this redaudit needs)."""
    with translated_errors(engine), engine.connect() as connection:
        return current_revision(connection), head_revision()
