"""Where the history lives and how we open it: URL resolution, engines, driver errors.

One place decides the database URL (``--db`` > ``REDAUDIT_DB`` > a SQLite file in the user's
data directory), so the CLI, the library and Alembic's ``env.py`` agree. SQLite gets WAL mode,
a busy timeout and ``BEGIN IMMEDIATE`` for writers, so two processes recording at once queue
instead of failing. The schema revision is ``schema.py``'s job.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from redaudit.history.errors import DatabaseUnavailableError

ENV_VAR = "REDAUDIT_DB"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5


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


def parse_url(db: str | None = None) -> URL:
    """``db`` resolved (:func:`resolve_url`) and parsed, or one line saying what is wrong.

    Cheap (no connection, no driver import), so commands call it before long work.
    """
    url_text = resolve_url(db)
    try:
        url = make_url(url_text)
        url.port  # noqa: B018  (parsed lazily: a port like 'abc' fails only here)
    except (ArgumentError, ValueError) as exc:
        raise DatabaseUnavailableError(f"not a database URL: {url_text!r} ({_first_line(exc)}); "
                                       f"expected e.g. postgresql://user@host:5432/db or a file path") from None
    return url


def make_engine(db: str | None = None) -> Engine:
    """An engine for ``db`` (resolved as in :func:`resolve_url`), with SQLite pragmas installed."""
    url = parse_url(db)
    url_text = url.render_as_string(hide_password=False)
    if url.get_backend_name() == "sqlite":
        folder = Path(url.database).parent if url.database and url.database != ":memory:" else None
        if folder is not None and not folder.is_dir():
            raise DatabaseUnavailableError(f"cannot create {url.database}: folder {folder} does not exist")
        read_only = _read_only_file(url.database)
        options: dict = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
        if read_only:  # opened as it is: no -wal/-shm beside it, no journal-mode switch
            import sqlite3

            uri = f"file:{quote(str(Path(url.database).resolve()))}?mode=ro&immutable=1"
            options = {"creator": lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)}
        engine = create_engine(url, **options)
        _install_sqlite_pragmas(engine, wal=not read_only)
        return engine
    connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S} if url.get_backend_name() == "postgresql" else {}
    try:
        return create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    except (ImportError, ArgumentError) as exc:
        raise DatabaseUnavailableError(f"no database driver for {display_url(url_text)}: {exc}") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _switch_to_wal(cursor) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the lock.

    On a brand-new (empty) file the switch is a write: it reads page 1 and then upgrades to a
    write lock. If another process holds that lock (it is creating the schema), SQLite returns
    SQLITE_BUSY at once *without* calling the busy handler, because a reader waiting for a
    writer that waits for the reader would deadlock. That was the two-process flake: one
    process failed with "database is locked" 30 ms into a 30 s busy timeout. Retrying the
    statement (which drops the read lock in between) lets the other commit first. On a file
    already in WAL mode the pragma is a no-op and succeeds at once.
    """
    import sqlite3

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _read_only_file(database: str | None) -> bool:
    """An existing SQLite file this process may not change (a read-only file, folder or mount).
    Reading it in WAL mode would create ``-wal``/``-shm`` files beside it (or fail): it is
    opened read-only and immutable instead, which suits a file nobody writes while we read."""
    if not database or database == ":memory:" or not os.path.isfile(database):
        return False
    return not os.access(database, os.W_OK) or not os.access(os.path.dirname(os.path.abspath(database)), os.W_OK)


def _ours_or_new(cursor) -> bool:
    """Whether the file is empty or carries a schema version table (redaudit's, or Optuna's in a
    NAS study database): a foreign SQLite file is refused later by the revision check, and
    must not have its journal mode switched to WAL on the way (that changes the file)."""
    tables = {row[0] for row in cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return not tables or bool(tables & {"redaudit_alembic_version", "alembic_version", "version_info"})


def _install_sqlite_pragmas(engine: Engine, wal: bool = True) -> None:
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
        if wal and _ours_or_new(cursor):
            _switch_to_wal(cursor)
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
