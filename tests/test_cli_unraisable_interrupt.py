"""Ctrl-C that lands where Python cannot raise (a weakref callback of the import machinery, a
``__del__``) used to print "Exception ignored in: …" with a traceback and carry on; the entry
point must end it as any other interrupt: exit 130, the one line "interrupted".

Found by tests/hostile/test_signals.py::test_sigint_while_reading_history, where the signal hit
``_get_module_lock.<locals>.cb``; reproduced here deterministically in a real process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
import click
from redaudit.cli import main as entry

class Finalized:
    def __del__(self):
        entry.signals.on_signal(2, None)  # what the SIGINT handler does when the signal lands here

@entry.cli.command("unraisable-probe")
def probe():
    Finalized()  # dropped at once: __del__ runs, its exception is unraisable
    click.echo("carried on")

sys.argv = ["redaudit", "unraisable-probe"]
entry.main()
"""


def test_interrupt_in_a_finalizer_ends_the_command_with_one_line():
    done = subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 130, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.strip().splitlines() == ["interrupted"], done.stderr
    assert "carried on" not in done.stdout
