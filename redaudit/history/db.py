"""Where the history lives and how we open it: URL resolution, engines, schema revision.

One place decides the database URL (``--db`` > ``REDAUDIT_DB`` > a SQLite file in the user's
data directory), so the CLI, the library and Alembic's ``env.py`` agree. SQLite gets WAL mode,
a busy timeout and ``BEGIN IMMEDIATE`` for writers, so two processes recording at once queue
instead of failing. Every open checks the schema revision: an empty database is created on the
first write, an old one is refused with the command that upgrades it, and a foreign one is left
alone.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from redaudit.history.errors import (DatabaseUnavailableError, NotAHistoryDatabaseError,
                                     SchemaOutdatedError)
from redaudit.history.models import Base

ENV_VAR = "REDAUDIT_DB"
#: Our own Alembic version table, so an Optuna study store (which has its own ``alembic_version``)
#: can share the database with the history.
VERSION_TABLE = "redaudit_alembic_version"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5
OUR_TABLES = frozenset(Base.metadata.tables)
# Tables we tolerate beside ours in a SQLite file: Optuna's RDB storage (the NAS study store).
_SHARED_PREFIXES = ("study", "studies", "trial", "version_info", "alembic_version")


def default_sqlite_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("redaudit")) / "history.db"


def resolve_url(db: str | None = None) -> str:
    """The database URL to use: ``db`` if given, else ``$REDAUDIT_DB``, else the default file.

    A bare path means a SQLite file; ``postgresql://`` and ``postgres://`` select psycopg 3.
    """
    raw = db or os.environ.get(ENV_VAR) or ""
    if not raw:
        path = default_sqlite_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in raw:
        return f"sqlite:///{Path(raw).expanduser().resolve()}"
    for prefix in ("postgresql://", "postgres://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix):]
    return raw


def display_url(engine_or_url: Engine | str) -> str:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.render_as_string(hide_password=True)


def make_engine(db: str | None = None) -> Engine:
    """An engine for ``db`` (resolved as in :func:`resolve_url`), with SQLite pragmas installed."""
    url_text = resolve_url(db)
    try:
        url = make_url(url_text)
    except ArgumentError as exc:
        raise DatabaseUnavailableError(f"not a database URL: {url_text!r}") from exc
    if url.get_backend_name() == "sqlite":
        folder = Path(url.database).parent if url.database and url.database != ":memory:" else None
        if folder is not None and not folder.is_dir():
            raise DatabaseUnavailableError(f"cannot create {url.database}: folder {folder} does not exist")
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _install_sqlite_pragmas(engine)
        return engine
    connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S} if url.get_backend_name() == "postgresql" else {}
    try:
        return create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    except (ImportError, ArgumentError) as exc:
        raise DatabaseUnavailableError(f"no database driver for {display_url(url_text)}: {exc}") from exc


def _install_sqlite_pragmas(engine: Engine) -> None:
    """WAL (readers never block the writer), busy timeout, foreign keys, explicit BEGIN.

    pysqlite's own transaction handling is switched off so that ``BEGIN IMMEDIATE`` can be sent
    for writers: a deferred transaction that later tries to write can fail at once with
    "database is locked" regardless of the busy timeout; an immediate one waits its turn.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe with WAL
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def writer(engine: Engine) -> Engine:
    """The same engine, but its transactions take SQLite's write lock up front."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


@contextmanager
def translated_errors(engine: Engine) -> Iterator[None]:
    """Turn driver errors (unreachable server, corrupt file, lock timeout) into one-line errors."""
    try:
        yield
    except DBAPIError as exc:
        lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
        reason = lines[0] if lines else type(exc.orig or exc).__name__
        raise DatabaseUnavailableError(f"history database {display_url(engine)}: {reason}") from exc


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
SCHEMA_REVISION = "0003"


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


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``revision`` in one transaction; returns (revision before, revision after)."""
    from alembic import command

    with translated_errors(engine), writer(engine).connect() as connection, connection.begin():
        _lock_for_schema(connection)
        before = current_revision(connection)
        if before is None:
            _refuse_foreign(connection, engine)
        command.upgrade(alembic_config(connection), revision)
        return before, current_revision(connection)


def downgrade(engine: Engine, revision: str = "base") -> tuple[str | None, str | None]:
    from alembic import command

    with translated_errors(engine), writer(engine).connect() as connection, connection.begin():
        _lock_for_schema(connection)
        before = current_revision(connection)
        command.downgrade(alembic_config(connection), revision)
        return before, current_revision(connection)


def revision_status(engine: Engine) -> tuple[str | None, str]:
    """(the database's revision or None, the revision this redaudit needs)."""
    with translated_errors(engine), engine.connect() as connection:
        return current_revision(connection), head_revision()
