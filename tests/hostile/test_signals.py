"""Ctrl-C (SIGINT) and SIGTERM anywhere, native imports included: exit 130 "interrupted" or 143
"terminated", one line, no traceback, nothing written. Real processes (the signal policy is the
console entry point's).

Deterministic: no test guesses when to send the signal. The command runs with
``REDAUDIT_TEST_PAUSE=STAGE`` (redaudit.cli.signals.pause_at): it prints ``paused at STAGE`` on
stderr when it gets there and waits for a line on stdin; the test reads that line, sends the
signal, then releases it. The signal therefore lands at a named point of the run on a quiet
machine and on a loaded one alike (before this, "1.5 s after start" sometimes landed after the
work had finished).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from builders import save, tiny_mlp
from conftest import ROOT, snapshot
from sqlalchemy import create_engine, text

SCAN = ["--samples", "2000", "--cka-batch", "250"]


def _signal_at(stage: str, args: list[str], cwd: Path, signum: int = signal.SIGINT) -> subprocess.CompletedProcess:
    """Run ``redaudit ARGS``, send ``signum`` when it reports ``stage``, return what it did."""
    process = subprocess.Popen([sys.executable, "-m", "redaudit.cli.main", *args], cwd=cwd,
                               env={**os.environ, "PYTHONPATH": str(ROOT), "REDAUDIT_TEST_PAUSE": stage},
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    while (line := process.stderr.readline()) and line.strip() != f"paused at {stage}":
        seen.append(line)
    assert line, f"the command never reached stage {stage!r}: {''.join(seen)}"
    process.send_signal(signum)
    try:
        process.stdin.write("\n")  # release the pause (a child the signal already ended is fine)
        process.stdin.flush()
    except BrokenPipeError:
        process.stdin = None
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(seen) + stderr)


def _said(stderr: str) -> list[str]:
    """What the command said, less the timestamped stage lines and the warnings it gives on
    every scan (synthetic inputs), which came before the signal."""
    return [line for line in stderr.strip().splitlines()
            if not re.match(r"^\d\d:\d\d:\d\d ", line) and not line.startswith("warning:")]


def _assert_stopped(result: subprocess.CompletedProcess, signum: int) -> None:
    expected = (143, "terminated") if signum == signal.SIGTERM else (130, "interrupted")
    assert "Traceback" not in result.stderr, result.stderr
    assert (result.returncode, _said(result.stderr)) == (expected[0], [expected[1]]), (result.returncode, result.stderr)


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    with create_engine(f"sqlite:///{db}").connect() as connection:
        tables = {row[0] for row in connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
        return connection.scalar(text("SELECT count(*) FROM scans")) if "scans" in tables else 0


SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


@pytest.mark.parametrize("signum", SIGNALS)
@pytest.mark.parametrize("stage", ["imports", "work", "record"])
def test_signal_during_scan_writes_nothing(tmp_path, stage, signum):
    """imports: while numpy/onnx/onnxruntime load (signals held pending, delivered after);
    work: in the scan; record: with the reports staged as temporary files, before the history
    row is written."""
    model = save(tiny_mlp(width=32, layers=6), tmp_path)
    db = tmp_path / "h.db"
    before = snapshot(tmp_path)
    result = _signal_at(stage, ["scan", str(model), *SCAN, "--quiet", "--json", "out.json", "--html", "out.html",
                                "--record", "m", "--db", f"sqlite:///{db}"], tmp_path, signum)
    _assert_stopped(result, signum)
    created = set(snapshot(tmp_path)) - set(before)
    assert created <= {"h.db", "h.db-wal", "h.db-shm"}, created  # no report, no temporary file
    assert _rows(db) == 0


@pytest.mark.parametrize("signum", SIGNALS)
@pytest.mark.parametrize("stage", ["imports", "work"])
def test_signal_during_prune_writes_nothing(tmp_path, stage, signum):
    model = save(tiny_mlp(width=32, layers=6), tmp_path)
    before = snapshot(tmp_path)
    result = _signal_at(stage, ["prune", str(model), *SCAN, "--remove", "1", "--force", "--no-latency",
                                "-o", "pruned.onnx"], tmp_path, signum)
    _assert_stopped(result, signum)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("signum", SIGNALS)
def test_signal_while_reading_history(tmp_path, signum):
    result = _signal_at("imports", ["history", "m", "--db", f"sqlite:///{tmp_path / 'h.db'}"], tmp_path, signum)
    _assert_stopped(result, signum)
    assert not (tmp_path / "h.db").exists()


def test_numpy_runtime_warnings_do_not_reach_stderr(tmp_path):
    """The application's policy (main): numbers the tool reports as undefined are said so in
    its own words; numpy's "invalid value encountered" lines are noise on top."""
    script = ("import warnings, numpy as np\nfrom redaudit.cli import main as entry\n"
              "@entry.cli.command('warn-probe')\ndef probe():\n    np.log(np.zeros(2)); np.float64(1) / 0\n"
              "import sys\nsys.argv = ['redaudit', 'warn-probe']\nentry.main()\n")
    done = subprocess.run([sys.executable, "-c", script], check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stderr, done.stderr


@pytest.mark.parametrize("signum", SIGNALS)
def test_signal_before_the_handler_is_installed_is_held_until_it_is(tmp_path, signum):
    """Between the first line of ``redaudit/__init__`` and ``main()`` (click and the command
    modules importing) there is no handler yet: the signal is held and delivered to main's. The
    process signals itself at that point, so the moment is exact."""
    script = ("import os, signal, sys\nsys.argv = ['redaudit', 'history', 'm', '--db', 'h.db']\n"
              "import redaudit\n"
              f"os.kill(os.getpid(), {int(signum)})  # held: the start-up block is on\n"
              "from redaudit.cli.main import main\nmain()\n")
    done = subprocess.run([sys.executable, "-c", script], check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    _assert_stopped(done, signum)
    assert not (tmp_path / "h.db").exists()


def test_importing_redaudit_as_a_library_leaves_signals_alone(tmp_path):
    script = "import signal\nimport redaudit\nprint(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))\n"
    done = subprocess.run([sys.executable, "-c", script], check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr)
