"""Run each fuzz harness for a fixed time, restarting after a crash, and report the totals.

``python fuzz/run.py --seconds 600`` (what ``make fuzz`` calls with FUZZ_SECONDS). Crashing
inputs are kept in ``fuzz/crashes/`` (ignored by git); each one found must become a regression
test in tests/hostile/test_fuzz_regressions.py. Findings are counted as unique by the last line of
the Python traceback (exception type and message shape).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = {"model": HERE / "harness_model.py", "npz": HERE / "harness_npz.py"}


def run_harness(name: str, seconds: int, corpus: Path, crashes: Path) -> tuple[int, set[str]]:
    execs, findings = 0, set()
    deadline = time.monotonic() + seconds
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    while (left := int(deadline - time.monotonic())) > 2:
        command = [sys.executable, str(HARNESSES[name]), str(corpus), f"-max_total_time={left}",
                   "-rss_limit_mb=3000", "-timeout=30", f"-artifact_prefix={crashes}/{name}-",
                   "-print_final_stats=1"]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", result.stderr)
        done = re.findall(r"#(\d+)\s", result.stderr)
        execs += int(runs[-1]) if runs else (int(done[-1]) if done else 0)
        if result.returncode == 0:
            break
        findings.add(_finding(result.stderr) or f"exit {result.returncode}")
    return execs, findings


def _finding(stderr: str) -> str | None:
    """The exception line atheris prints after "Uncaught Python exception", numbers masked."""
    lines = stderr.splitlines()
    for index, line in enumerate(lines):
        if "Uncaught Python exception" in line and index + 1 < len(lines):
            return re.sub(r"\d+", "N", lines[index + 1].strip())
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="per harness")
    parser.add_argument("--only", choices=sorted(HARNESSES))
    args = parser.parse_args()
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    for name in [args.only] if args.only else HARNESSES:
        corpus = HERE / "corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        execs, findings = run_harness(name, args.seconds, corpus, crashes)
        print(f"{name}: {execs:,} execs in {args.seconds} s, {len(findings)} unique finding(s)")
        for finding in sorted(findings):
            print(f"  {finding}")


if __name__ == "__main__":
    main()
