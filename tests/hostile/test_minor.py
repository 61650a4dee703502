"""Issue 22, "also (minor)": each a case that failed before the fix."""
from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from builders import save, tiny_mlp
from conftest import FAST, assert_refused, invoke, snapshot


def _foreign_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("INSERT INTO notes VALUES ('mine')")


def _journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]


@pytest.mark.parametrize("command", [["history", "m"], ["db", "upgrade"], ["db", "current"]])
def test_refusing_a_foreign_sqlite_file_leaves_its_journal_mode(workdir, command):
    _foreign_sqlite(workdir / "other.db")
    assert _journal_mode(workdir / "other.db") == "delete"
    before = snapshot(workdir)
    outcome = invoke(*command, "--db", "other.db")
    assert "Traceback" not in outcome.stderr
    assert outcome.exit_code != 0 or "revision none" in outcome.stdout  # db current only reports
    assert _journal_mode(workdir / "other.db") == "delete"
    assert snapshot(workdir) == before


@pytest.mark.parametrize("command", [["history", "m"], ["diff", "m", "a", "b"],
                                     ["check", "MODEL", "--against", "m", "--max-increase", "5"]])
def test_reading_a_missing_sqlite_file_creates_nothing(workdir, command):
    model = save(tiny_mlp(), workdir)
    before = snapshot(workdir)
    args = [str(model) if word == "MODEL" else word for word in command]
    assert_refused(invoke(*args, *(FAST if command[0] == "check" else []), "--db", "missing.db"),
                   "missing.db", "does not exist")
    assert snapshot(workdir) == before


def test_read_only_database_is_read_without_wal_files(workdir):
    """A recorded history on a read-only mount (what a user without write access sees; root
    ignores permission bits, not a read-only file system): readable, and nothing is created."""
    model = save(tiny_mlp(), workdir)
    assert invoke("scan", model, *FAST, "--quiet", "--record", "m", "--db", "h.db").exit_code == 0
    shared = workdir / "shared"
    shared.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(shared)], check=False, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (shared / "h.db").write_bytes((workdir / "h.db").read_bytes())
        assert subprocess.run(["mount", "-o", "remount,ro", str(shared)], check=False, capture_output=True).returncode == 0
        outcome = invoke("history", "m", "--db", shared / "h.db")
        listing = sorted(os.listdir(shared))
    finally:
        subprocess.run(["umount", "-l", str(shared)], check=False, capture_output=True)
    assert outcome.exit_code == 0, outcome.stderr
    assert "1 versions, 1 scans" in outcome.stdout
    assert listing == ["h.db"]


def test_an_error_over_an_immutable_target_names_the_target(workdir):
    model = save(tiny_mlp(), workdir)
    target = workdir / "out.json"
    target.write_text("{}\n")
    if subprocess.run(["chattr", "+i", str(target)], check=False, capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        outcome = invoke("scan", model, *FAST, "--quiet", "--json", target)
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=False, capture_output=True)
    assert_refused(outcome, "out.json")
    assert ".tmp" not in outcome.stderr and "/.out.json." not in outcome.stderr


def test_calibrate_without_heal_is_refused(workdir):
    model = save(tiny_mlp(), workdir)
    np.savez(workdir / "c.npz", x=np.ones((64, 8), np.float32))
    before = snapshot(workdir)
    assert_refused(invoke("prune", model, *FAST, "--remove", "1", "--calibrate", "c.npz", "-o", "p.onnx"),
                   "--calibrate", "--heal")
    assert snapshot(workdir) == before


def test_one_sample_calibration_is_warned(workdir):
    from prune_models import residual_mlp  # a model with removable blocks

    model = save(residual_mlp(), workdir)
    np.savez(workdir / "c.npz", x=np.ones((1, 8), np.float32))
    outcome = invoke("prune", model, *FAST, "--remove", "1", "--heal", "linear", "--calibrate", "c.npz",
                     "--force", "--no-latency", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert "only 1 calibration sample" in outcome.stdout + outcome.stderr


@pytest.mark.parametrize("option", [["--layout", "a=tokens", "--layout", "a=channels"],
                                    ["--dim", "N=4", "--dim", "N=8"]])
def test_contradictory_repeated_options_are_refused(workdir, option):
    model = save(tiny_mlp(), workdir)
    assert_refused(invoke("scan", model, *FAST, "--quiet", *option), "twice")


def test_escape_codes_in_names_are_refused(workdir):
    model = save(tiny_mlp(), workdir)
    assert_refused(invoke("scan", model, *FAST, "--quiet", "--record", "m\x1b[2J"), "control characters")


def test_history_escapes_a_stored_name_with_escape_codes(workdir, monkeypatch):
    """A name recorded before names were checked (or written by another tool) is printed with
    its control characters escaped: the terminal is not cleared or recoloured."""
    from redaudit.history import writes

    checked = writes.validate_name
    model = save(tiny_mlp(), workdir)
    unchecked = lambda name, what="model name": name
    monkeypatch.setattr(writes, "validate_name", unchecked)
    name = "evil\x1b[2J\x1b[31m"
    db = workdir / "h.db"
    assert invoke("scan", model, *FAST, "--quiet", "--record", name, "--label", "v\x1b[1m", "--db", db).exit_code == 0
    monkeypatch.setattr(writes, "validate_name", checked)
    for extra in ([], ["--scans"]):
        outcome = invoke("history", name, "--db", db, *extra)
        assert outcome.exit_code == 0, outcome.stderr
        assert "\x1b" not in outcome.stdout and "\\x1b[2J" in outcome.stdout
