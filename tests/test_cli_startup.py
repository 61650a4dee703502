"""`redaudit --help` and `redaudit scan --help` load none of the heavy dependencies (numpy,
onnx, onnxruntime, SQLAlchemy): printing help is the first thing a new user does, and those
imports cost about a second. Real processes, since what a module set holds depends on what ran
before; the assertion is on the set of modules, never on time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from redaudit.cli.main import _COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "onnx", "onnxruntime", "sqlalchemy", "torch", "scipy", "matplotlib")

PROBE = """
import json, sys
from redaudit.cli.main import main
sys.argv = ["redaudit", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr)
"""


def _top_level_modules(args: list[str]) -> tuple[str, set[str]]:
    environment = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="100")
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], env=environment, capture_output=True,
                          text=True, timeout=120, check=True)
    *said, modules = done.stderr.strip().splitlines()
    return done.stdout + "\n".join(said), set(json.loads(modules))  # no arguments: help goes to stderr


@pytest.mark.parametrize("args", [["--help"], [], ["scan", "--help"], ["taps", "--help"]])
def test_help_imports_nothing_heavy(args):
    output, modules = _top_level_modules(args)
    assert "Usage: redaudit" in output
    assert modules.isdisjoint(HEAVY), sorted(modules.intersection(HEAVY))


def test_group_help_lists_every_command_with_its_own_short_help():
    output, _ = _top_level_modules(["--help"])
    listed = output.split("Commands:\n", 1)[1]
    assert [line.split()[0] for line in listed.splitlines() if line.strip()] == list(_COMMANDS)
    assert "Measure layer similarity (CKA) and MSRS of an ONNX MODEL." in listed


@pytest.mark.parametrize("name", list(_COMMANDS))
def test_table_short_help_equals_the_commands_own(name):
    """The table is a copy of each command's first sentence: this keeps the copy honest."""
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    assert _COMMANDS[name][2] == command.get_short_help_str(limit=10_000)


def test_a_scan_without_record_loads_no_sqlalchemy(tmp_path):
    """The history layer (SQLAlchemy, Alembic) is imported for ``--record`` only: about 0.2 s of a
    scan's fixed cost otherwise (issue 27). With ``--record`` it is, so the probe can see it."""
    import onnx

    from tests import models

    path = tmp_path / "m.onnx"
    onnx.save(models.residual_cnn(), str(path))
    scan = ["scan", str(path), "--samples", "32", "--cka-batch", "16", "--device", "cpu", "--quiet"]
    _, plain = _top_level_modules(scan)
    _, recorded = _top_level_modules([*scan, "--record", "m", "--db", str(tmp_path / "h.db")])
    assert "onnxruntime" in plain and "sqlalchemy" not in plain
    assert "sqlalchemy" in recorded
