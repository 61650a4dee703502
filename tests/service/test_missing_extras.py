"""Each command that needs the ``service`` extra says so in one line, exit 2, no traceback (issue 24
item 14). A plain ``pip install .`` lacks the extra's modules; the child process is that install:
the modules are blocked before anything imports them (``sys.modules[name] = None`` makes every
``import name`` raise ModuleNotFoundError and ``importlib.util.find_spec`` answer None, exactly as
for a package that is not installed), so the test needs no second environment and no network.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE_MODULES = ("fastapi", "uvicorn", "multipart", "celery", "httpx", "starlette", "kombu", "threadpoolctl")


def run_without(modules: tuple[str, ...], *args: str) -> subprocess.CompletedProcess:
    code = (f"import sys\nfor name in {modules!r}: sys.modules[name] = None\n"
            "sys.argv = ['redaudit', *sys.argv[1:]]\nfrom redaudit.cli.main import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args", [["serve"], ["serve", "--port", "9999"],
                                  ["worker", "--broker", "redis://x", "--server", "http://x"],
                                  ["push", "m.onnx", "--server", "http://x", "--name", "m"]])
def test_a_command_without_its_extra_names_it_in_one_line(args):
    completed = run_without(SERVICE_MODULES, *args)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr
    assert completed.stderr.startswith(f"error: redaudit {args[0]} needs the service extra (")
    assert completed.stderr.rstrip().endswith("pip install 'redaudit[service]'")
    assert completed.stdout == ""


def test_commands_that_need_no_extra_still_run_without_it():
    completed = run_without(SERVICE_MODULES, "--help")
    assert completed.returncode == 0 and "serve" in completed.stdout
    completed = run_without(SERVICE_MODULES, "doctor")
    assert completed.returncode == 0, completed.stderr
