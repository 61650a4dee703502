"""The schema lives in Alembic revisions; the ORM tables and the revisions must agree."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect, text

from redaudit.cli.history import db_group, history_command
from redaudit.history import SchemaOutdatedError, model_history, record_scan
from redaudit.history.db import make_engine
from redaudit.history.schema import (OUR_TABLES, SERVICE_TABLES, VERSION_TABLE, downgrade, head_revision,
                                     revision_status, upgrade)
from redaudit.history.models import Base
from redaudit.service import models as service_models
from tests.history.conftest import make_result


def _tables(engine) -> set[str]:
    with engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def test_schema_revision_constant_is_the_alembic_head():
    from alembic.script import ScriptDirectory

    from redaudit.history.schema import SCHEMA_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == SCHEMA_REVISION


def test_upgrade_from_empty_to_head_and_back(db_url):
    engine = make_engine(db_url)
    try:
        assert revision_status(engine) == (None, head_revision())
        assert upgrade(engine) == (None, head_revision())
        assert OUR_TABLES | {VERSION_TABLE} <= _tables(engine)
        assert upgrade(engine) == (head_revision(), head_revision())  # idempotent
        assert downgrade(engine, "base") == (head_revision(), None)
        assert _tables(engine) & OUR_TABLES == set()
    finally:
        engine.dispose()


def test_the_schema_knows_every_table_of_the_one_metadata():
    """History's models and the service's share redaudit.orm's metadata; history names the
    service's tables without importing the service, and the names must be the models'."""
    service = {mapper.local_table.name for mapper in Base.registry.mappers
               if mapper.class_.__module__ == service_models.__name__}
    assert service_models.Base is Base
    assert SERVICE_TABLES == service
    assert OUR_TABLES == frozenset(Base.metadata.tables)


def test_models_and_migrations_agree(db_url):
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_unknown_revision_means_newer_redaudit(db_url):
    record_scan(db_url, make_result(), "net")
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff'"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaOutdatedError, match="written by a newer redaudit"):
        model_history(db_url, "net")
    with pytest.raises(SchemaOutdatedError):  # and nothing is written into it either
        record_scan(db_url, make_result(), "net")


def test_db_at_base_is_told_to_upgrade_and_cli_upgrades(db_url):
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        downgrade(engine, "base")  # leaves the version table empty: "no schema"
    finally:
        engine.dispose()
    runner = CliRunner()
    result = runner.invoke(history_command, ["net", "--db", db_url])
    assert result.exit_code == 2
    assert "redaudit db upgrade" in result.stderr and result.stderr.count("\n") == 1
    current = runner.invoke(db_group, ["current", "--db", db_url])
    assert current.exit_code == 0 and "revision none" in current.output
    upgraded = runner.invoke(db_group, ["upgrade", "--db", db_url])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded from empty to {head_revision()}" in upgraded.output
    current = runner.invoke(db_group, ["current", "--db", db_url])
    assert f"revision {head_revision()}" in current.output and "up to date" in current.output


def test_old_revision_is_told_to_upgrade_and_0002_copies_labels_into_aliases(db_url):
    """A database at 0001 (labels only on versions and scans) is refused with the command to
    run; `db upgrade` then turns every label into a version label: the relabel of an unchanged
    file, kept only on its scan under 0001, becomes an alias of the version."""
    record_scan(db_url, make_result(file_tag="a"), "net", label="v1")
    record_scan(db_url, make_result(file_tag="a", seed=1), "net", label="v1.1")  # same bytes
    record_scan(db_url, make_result(file_tag="b"), "net", label="v2")
    engine = make_engine(db_url)
    try:
        assert downgrade(engine, "0001") == (head_revision(), "0001")
    finally:
        engine.dispose()
    with pytest.raises(SchemaOutdatedError, match=rf"revision 0001, this redaudit needs {head_revision()}: run `redaudit db upgrade`"):
        model_history(db_url, "net")
    upgraded = CliRunner().invoke(db_group, ["upgrade", "--db", db_url])
    assert upgraded.exit_code == 0 and f"upgraded from 0001 to {head_revision()}" in upgraded.output
    versions = model_history(db_url, "net").versions
    assert [(v.label, v.aliases) for v in versions] == [("v1", ("v1.1",)), ("v2", ())]
