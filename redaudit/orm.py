"""The one SQLAlchemy registry of redaudit's database: the declarative :class:`Base` (and its
``MetaData``, with explicit constraint names) that every table is declared on.

History's tables (``redaudit/history/models.py``) and the service's (``redaudit/service/models.py``)
live in one database under one set of Alembic revisions, so they share this metadata. Both import
this module; history does not import the service. What needs the whole schema imports both
model modules: Alembic's ``migrations/env.py`` and the test that compares the ORM with the
revisions (``tests/history/test_migrations.py``).
"""
from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Explicit constraint names keep Alembic revisions identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
