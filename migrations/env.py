"""Alembic environment for redaudit's history schema.

Run by ``redaudit db upgrade`` (through Alembic's Python API, with an open connection in
``config.attributes["connection"]``) and by developers with
``alembic -c migrations/alembic.ini ...``; then the URL comes from redaudit's own resolution
(``sqlalchemy.url`` if set, else ``--db``/``$REDAUDIT_DB``/the default SQLite file).
Our version table is ``redaudit_alembic_version`` so an Optuna study store can share the database.
"""
from __future__ import annotations

from alembic import context

import redaudit.history.models  # noqa: F401 - every table of the one schema on Base's metadata:
import redaudit.service.models  # noqa: F401 - history's and the service's (redaudit/orm.py)
from redaudit.history.db import make_engine
from redaudit.history.schema import VERSION_TABLE
from redaudit.orm import Base

config = context.config
target_metadata = Base.metadata
OPTIONS = dict(target_metadata=target_metadata, version_table=VERSION_TABLE,
               render_as_batch=True, compare_type=True)


def run_offline() -> None:
    from redaudit.history.db import resolve_url

    context.configure(url=config.get_main_option("sqlalchemy.url") or resolve_url(None),
                      literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or None)
    with engine.connect() as own_connection:
        context.configure(connection=own_connection, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
