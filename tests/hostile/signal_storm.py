"""Interrupt `redaudit scan` at random moments of its start-up, many times, and count outcomes.

    python tests/hostile/signal_storm.py [--runs 120] [--max-delay 1.5] [--signal INT|TERM] [--root TREE]

Not a test (it is about timing, which tests may not depend on): a measurement, as in issue 22 E
(120 runs: 5 segfaults, 1 nanobind abort, 2 hangs, 13 of 40 tracebacks in the first 40 ms).
Each run is classified: clean (exit 130/143, the one line), finished (the signal came after the
result), traceback, crash (killed by a signal: segfault, abort), hang (killed after 30 s).
"""
from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from builders import save, tiny_mlp


def one_run(root: Path, folder: Path, delay: float, signum: int) -> str:
    process = subprocess.Popen([sys.executable, "-m", "redaudit.cli.main", "scan", "m.onnx", "--samples", "20000",
                                "--cka-batch", "256", "--quiet"], cwd=folder, env={**os.environ, "PYTHONPATH": str(root)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signum)
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return "hang"
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    if "Traceback" in stderr or "terminate called" in stderr:
        frames = re.findall(r'File "([^"]+)"', stderr)
        ours = [frame for frame in frames if "/redaudit/" in frame]
        if ours and os.environ.get("STORM_SHOW"):
            print(stderr[-2500:], file=sys.stderr)
        return "traceback " + ("in redaudit code" if ours else "before redaudit's first line (interpreter start-up)")
    if process.returncode in (0,) or stdout.startswith("MSRS"):
        return "finished"
    if process.returncode < 0:
        return "killed by the signal before the handler" if process.returncode == -signum else f"crash ({process.returncode})"
    if process.returncode in (130, 143) and len(lines) == 1:
        return "clean"
    return f"other (exit {process.returncode}: {lines[-1] if lines else ''})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=120)
    parser.add_argument("--max-delay", type=float, default=1.5)
    parser.add_argument("--signal", choices=["INT", "TERM"], default="INT")
    parser.add_argument("--root", type=Path, default=HERE.parents[1])
    args = parser.parse_args()
    signum = signal.SIGINT if args.signal == "INT" else signal.SIGTERM
    rng = random.Random(0)
    outcomes: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        save(tiny_mlp(width=32, layers=6), folder, "m.onnx")
        for _ in range(args.runs):
            outcomes[one_run(args.root.resolve(), folder, rng.uniform(0, args.max_delay), signum)] += 1
    print(f"{args.runs} runs, SIG{args.signal} at uniform 0..{args.max_delay} s: " +
          ", ".join(f"{count} {what}" for what, count in outcomes.most_common()))
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
