"""A corrupt or foreign SQLite file and an unreachable server each give one line, exit 2."""
from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from redaudit.cli.history import db_group, history_command
from redaudit.history import DatabaseUnavailableError, NotAHistoryDatabaseError, record_scan
from tests.history.conftest import make_result


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    return result.stderr


def test_corrupt_sqlite_file(tmp_path):
    path = tmp_path / "history.db"
    path.write_bytes(b"this is not a database, it is a text file" * 100)
    message = _one_line_error(CliRunner().invoke(history_command, ["net", "--db", str(path)]))
    assert "file is not a database" in message
    with pytest.raises(DatabaseUnavailableError):
        record_scan(str(path), make_result(), "net")


def test_foreign_sqlite_file_is_left_alone(tmp_path):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    message = _one_line_error(CliRunner().invoke(history_command, ["net", "--db", str(path)]))
    assert "not a redaudit history database" in message
    with pytest.raises(NotAHistoryDatabaseError):
        record_scan(str(path), make_result(), "net")
    _one_line_error(CliRunner().invoke(db_group, ["upgrade", "--db", str(path)]))
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"customers"}


def test_unreachable_postgresql(tmp_path):
    url = "postgresql://postgres@127.0.0.1:1/test"
    message = _one_line_error(CliRunner().invoke(history_command, ["net", "--db", url]))
    assert "127.0.0.1" in message and "postgresql" in message
    with pytest.raises(DatabaseUnavailableError):
        record_scan(url, make_result(), "net")


def test_unknown_model_and_bad_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    record_scan(url, make_result(), "net")
    assert "no model named 'nope'" in _one_line_error(CliRunner().invoke(history_command, ["nope", "--db", url]))
    assert "no database driver" in _one_line_error(
        CliRunner().invoke(history_command, ["net", "--db", "nosuchdb://host/x"]))
    assert "does not exist" in _one_line_error(
        CliRunner().invoke(history_command, ["net", "--db", str(tmp_path / "missing" / "h.db")]))
