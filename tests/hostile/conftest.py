"""Fixtures and the one assertion every hostile case makes.

A case runs the CLI in-process (click's CliRunner) in a fresh folder and checks the contract
for bad input: exit code 2, exactly one line on stderr starting with ``error:``, no traceback,
and no file created or changed in the folder (temporary files included). Cases that need a
real process (signals, ``ulimit``) use :func:`run_process`.
"""
from __future__ import annotations

import re

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from redaudit.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--samples", "64", "--cka-batch", "32"]
#: Cases whose fix lives on another branch; HOSTILE_RUN_PENDING=1 runs them anyway (to see them fail
#: here, or pass after the merge).
_RUN_PENDING = os.environ.get("HOSTILE_RUN_PENDING", "1") == "1"  # every fix is merged: run them all
PENDING_HISTORY = pytest.mark.skipif(not _RUN_PENDING, reason="fixed on branch history; unskipped at merge")
PENDING_FEEDBACK = pytest.mark.skipif(not _RUN_PENDING, reason="needs core/memory.py from branch feedback")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) → sha256 of its bytes (or a type tag)."""
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            state[key] = "link:" + os.readlink(path)
        elif path.is_file():
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            state[key] = "dir"
        else:
            state[key] = "special"
    return state


_STAGE_LINE = re.compile(r"^\d\d:\d\d:\d\d ")


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None

    @property
    def stderr_lines(self) -> list[str]:
        """stderr's lines, less the timestamped stage lines long commands print when stderr is
        not a terminal (issue 16): the contract is about what the command says went wrong."""
        return [line for line in self.stderr.splitlines() if line.strip() and not _STAGE_LINE.match(line)]


def invoke(*args: object, env: dict[str, str] | None = None) -> Outcome:
    result = CliRunner().invoke(cli, [str(arg) for arg in args], env=env, catch_exceptions=True)
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return Outcome(result.exit_code, result.stdout, result.stderr, exception)


def assert_refused(outcome: Outcome, *fragments: str, code: int = 2) -> None:
    """Exit ``code``, one ``error:`` line naming ``fragments``, no traceback anywhere."""
    assert outcome.exception is None, f"unhandled {outcome.exception!r}\n{outcome.stderr}"
    assert "Traceback" not in outcome.stdout + outcome.stderr, outcome.stderr
    assert outcome.exit_code == code, (outcome.exit_code, outcome.stdout, outcome.stderr)
    lines = outcome.stderr_lines
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith(("error:", "Error:", "Usage:")) or "interrupted" in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def assert_handled(outcome: Outcome) -> None:
    """Either it worked (exit 0, no error line) or it was refused by the contract."""
    if outcome.exit_code == 0:
        assert outcome.exception is None
        assert "Traceback" not in outcome.stdout + outcome.stderr
        assert not any(line.startswith("error") for line in outcome.stderr_lines), outcome.stderr
    else:
        assert_refused(outcome)


def click_usage_error(outcome: Outcome) -> None:
    """click's own usage errors print 'Usage: …' and 'Try …' lines and an 'Error:' line, exit 2."""
    assert outcome.exception is None, repr(outcome.exception)
    assert "Traceback" not in outcome.stdout + outcome.stderr
    assert outcome.exit_code == 2, (outcome.exit_code, outcome.stderr)
    errors = [line for line in outcome.stderr_lines if line.startswith(("Error:", "error:"))]
    assert len(errors) == 1, outcome.stderr


def run_process(args: list[str], cwd: Path, timeout: float = 120, preexec=None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``redaudit ARGS`` as a real process, importing this worktree's code."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "redaudit.cli.main", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder, also the current directory, with REDAUDIT_DB pointing inside it."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("REDAUDIT_DB", f"sqlite:///{tmp_path / 'default-history.db'}")
    return folder
