"""The console entry point caps OpenBLAS at one thread unless the user chose a number: the CKA
products run beside onnxruntime, and a second OpenBLAS thread only spins (cli/main.py has the
measurement). Real processes: the setting must reach numpy before it loads."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import os, sys
from redaudit.cli.main import main
sys.argv = ["redaudit", "--version"]
try:
    main()
except SystemExit:
    pass
import numpy, threadpoolctl
blas = [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
print(os.environ.get("OPENBLAS_NUM_THREADS"), blas)
"""


def _run(env: dict[str, str]) -> str:
    environment = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    environment.update(env, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_blas_runs_one_thread_by_default():
    assert _run({}) == "1 [1]"


def test_the_users_choice_wins():
    assert _run({"OPENBLAS_NUM_THREADS": "2"}) == "2 [2]"
