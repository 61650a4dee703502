"""The issue-22 catalogue as a script: every case of the issue run as a real process against a
source tree, each outcome classified the way the outside run classified it.

    python tests/hostile/catalogue.py [--root TREE] [--only PREFIX]

``--root`` is the tree whose ``redaudit`` runs (default: this one): run it on an older checkout
to see the cases fail there. Per case: *handled* (exit 0 where that is right, or exit 2 with
one ``error:`` line), *traceback* (a Python traceback or a crash by signal), *data lost* (a file
the case names as the user's changed or vanished), *mishandled* (any other break of the
contract: exit 0 where it must refuse, several lines, a stray file). Prints one line per case
and the totals.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from builders import save, tiny_mlp
from prune_models import residual_mlp
from test_underflow import shrinking_chain

Q = ["--samples", "64", "--cka-batch", "32", "--quiet"]
P = ["--samples", "64", "--cka-batch", "32", "--no-latency"]
PG = "postgresql://postgres@127.0.0.1:5432/test"
FF = b"\xff\xfe"


@dataclass
class Case:
    id: str
    args: list            # str or bytes words; "{db}" etc. filled from the prepared folder
    expect: str = "refuse"  # refuse | ok | either
    precious: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    pause: tuple[str, int] | None = None  # (stage, signal) via REDAUDIT_TEST_PAUSE
    setup: str = ""       # extra preparation: see prepare()


CASES = [
    # A. an output over a file the command uses
    Case("A scan --heatmap onto --db", ["scan", "m.onnx", *Q, "--record", "res", "--db", "h.db", "--heatmap", "h.db"], precious=("h.db",)),
    Case("A scan --json onto --db", ["scan", "m.onnx", *Q, "--record", "res", "--db", "h.db", "--json", "h.db"], precious=("h.db",)),
    Case("A scan --json onto $REDAUDIT_DB", ["scan", "m.onnx", *Q, "--record", "res", "--json", "h.db"], precious=("h.db",),
         env={"REDAUDIT_DB": "h.db"}),
    Case("A diff --html onto --db", ["diff", "res", "1", "2", "--db", "h.db", "--html", "h.db"], precious=("h.db",)),
    Case("A history --plot onto --db", ["history", "res", "--db", "h.db", "--plot", "h.db"], precious=("h.db",)),
    Case("A prune -o onto --db", ["prune", "r.onnx", *P, "--remove", "1", "--force", "-o", "h.db", "--record", "res", "--db", "h.db"],
         precious=("h.db",)),
    Case("A nas export -o onto --db", ["nas", "export", "s", "--trial", "0", "-o", "nas.db", "--db", "nas.db"],
         precious=("nas.db",), setup="nas"),
    Case("A prune -o onto --calibrate", ["prune", "r.onnx", *P, "--remove", "1", "--force", "--heal", "linear",
                                         "--calibrate", "c.npz", "-o", "c.npz"], precious=("c.npz",)),
    Case("A prune -o onto --inputs", ["prune", "r.onnx", *P, "--remove", "1", "--force", "--inputs", "i.npz", "-o", "i.npz"],
         precious=("i.npz",)),
    Case("A scan --json onto a hard link of --db", ["scan", "m.onnx", *Q, "--record", "res", "--db", "h.db", "--json", "link.db"],
         precious=("h.db",), setup="link"),
    # B. nan and out-of-range gates
    Case("B prune --min-cosine nan", ["prune", "r.onnx", *P, "--remove", "3", "--min-cosine", "nan", "-o", "out.onnx"]),
    Case("B prune --min-cosine nan --iterative --heal", ["prune", "r.onnx", *P, "--remove", "3", "--iterative", "--heal",
                                                         "linear", "--min-cosine", "nan", "-o", "out.onnx"]),
    Case("B prune --min-cosine -1 --min-top1 nan", ["prune", "r.onnx", *P, "--remove", "3", "--min-cosine", "-1",
                                                   "--min-top1", "nan", "-o", "out.onnx"]),
    Case("B nas report --tolerance nan", ["nas", "report", "s", "--db", "nas.db", "--tolerance", "nan", "--no-plot"],
         setup="nas"),
    Case("B nas export --tolerance nan", ["nas", "export", "s", "--db", "nas.db", "--tolerance", "nan", "-o", "x.onnx"],
         setup="nas"),
    Case("B nas run --tolerance nan", ["nas", "run", "--trials", "1", "--tolerance", "nan", "--db", "nas2.db"]),
    Case("B serve --lease nan", ["serve", "--lease", "nan", "--db", "svc.db"]),
    # C. bytes that are not UTF-8
    Case("C scan --record \\xff\\xfe", ["scan", "m.onnx", *Q, "--record", FF, "--db", "h.db"], precious=("h.db",)),
    Case("C scan --label v\\xff", ["scan", "m.onnx", *Q, "--record", "res", "--label", b"v\xff", "--db", "h.db"], precious=("h.db",)),
    Case("C history \\xff\\xfe", ["history", FF, "--db", "h.db"], precious=("h.db",)),
    Case("C PostgreSQL --record \\xe9t\\xe9", ["scan", "m.onnx", *Q, "--record", b"\xe9t\xe9", "--db", PG]),
    Case("C diff res v1 \\xff", ["diff", "res", "v1", b"\xff", "--db", "h.db"], precious=("h.db",)),
    Case("C check --against \\xff", ["check", "m.onnx", *Q[:4], "--against", b"\xff", "--max-increase", "5", "--db", "h.db"],
         precious=("h.db",)),
    Case("C model \\xff.onnx --json", ["scan", b"\xff.onnx", *Q, "--json", "o.json"], setup="ffmodel"),
    Case("C prune --record \\xff", ["prune", "r.onnx", *P, "--remove", "1", "--force", "-o", "p.onnx", "--record", b"\xff",
                                    "--db", "h.db"], precious=("h.db",)),
    # D. underflowing activations
    Case("D 80-layer tanh chain table", ["scan", "chain.onnx", "--level", "layer", *Q[:4]], expect="ok"),
    Case("D 80-layer tanh chain --json", ["scan", "chain.onnx", "--level", "layer", *Q, "--json", "c.json"], expect="ok"),
    # E. signals, at named stages
    Case("E SIGINT during native imports", ["scan", "m.onnx", *Q, "--json", "o.json"], expect="interrupted",
         pause=("imports", signal.SIGINT)),
    Case("E SIGTERM during native imports", ["scan", "m.onnx", *Q, "--json", "o.json"], expect="interrupted",
         pause=("imports", signal.SIGTERM)),
    Case("E SIGTERM with reports staged", ["scan", "m.onnx", *Q, "--json", "o.json", "--record", "res", "--db", "h.db"],
         expect="interrupted", precious=("h.db",), pause=("record", signal.SIGTERM)),
    Case("E SIGINT during prune work", ["prune", "r.onnx", *P, "--remove", "1", "--force", "-o", "p.onnx"],
         expect="interrupted", pause=("work", signal.SIGINT)),
    # F. nas
    Case("F space widths [\"a\"]", ["nas", "run", "--space", "sp.toml", "--trials", "1", "--budget", "1", "--db", "n.db"],
         setup='space:widths = ["a"]'),
    Case("F space train = 5", ["nas", "run", "--space", "sp.toml", "--trials", "1", "--budget", "1", "--db", "n.db"],
         setup="space:train = 5"),
    Case("F space kernels [\"x\"]", ["nas", "run", "--space", "sp.toml", "--trials", "1", "--budget", "1", "--db", "n.db"],
         setup='space:kernels = ["x"]'),
    Case("F space learning_rate nan", ["nas", "run", "--space", "sp.toml", "--trials", "1", "--budget", "1", "--db", "n.db"],
         setup="space:[train]\nlearning_rate = nan"),
    Case("F space widths [200000]", ["nas", "run", "--space", "sp.toml", "--trials", "1", "--budget", "1", "--db", "n.db"],
         setup="space:widths = [200000]"),
    Case("F report --plot /dev/full", ["nas", "report", "s", "--db", "nas.db", "--plot", "/dev/full"], setup="nas"),
    Case("F report --plot read-only folder", ["nas", "report", "s", "--db", "nas.db", "--plot", "ro/front.png"],
         setup="nas+ro"),
    Case("F --budget 999999999999", ["nas", "run", "--trials", "1", "--budget", "999999999999", "--db", "n.db"]),
    # minor
    Case("m foreign SQLite keeps its journal mode", ["history", "res", "--db", "foreign.db"], precious=("foreign.db",),
         setup="foreign"),
    Case("m history on a missing SQLite file", ["history", "res", "--db", "missing.db"]),
    Case("m check --against on a missing SQLite file", ["check", "m.onnx", *Q[:4], "--against", "res",
                                                        "--max-increase", "5", "--db", "missing.db"]),
    Case("m --calibrate without --heal", ["prune", "r.onnx", *P, "--remove", "1", "--calibrate", "c.npz", "-o", "p.onnx"]),
    Case("m contradictory --layout", ["scan", "m.onnx", *Q, "--layout", "a=tokens", "--layout", "a=channels"]),
    Case("m escape codes in --record", ["scan", "m.onnx", *Q, "--record", "m\x1b[2J", "--db", "h.db"], precious=("h.db",)),
]


def prepare(folder: Path, case: Case, root: Path, shared: Path) -> None:
    save(tiny_mlp(), folder, "m.onnx")
    save(residual_mlp(), folder, "r.onnx")
    (folder / "chain.onnx").write_bytes(shrinking_chain().SerializeToString())
    np.savez(folder / "c.npz", x=np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))
    np.savez(folder / "i.npz", x=np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32))
    (folder / "h.db").write_bytes((shared / "h.db").read_bytes())
    if case.setup == "link":
        os.link(folder / "h.db", folder / "link.db")
    if case.setup.startswith("nas"):
        (folder / "nas.db").write_bytes((shared / "nas.db").read_bytes())
    if case.setup == "nas+ro":
        (folder / "ro").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(folder / "ro")], check=True)
    if case.setup == "ffmodel":
        (folder / os.fsdecode(b"\xff.onnx")).write_bytes(tiny_mlp().SerializeToString())
    if case.setup.startswith("space:"):
        (folder / "sp.toml").write_text(case.setup[len("space:"):] + "\n")
    if case.setup == "foreign":
        import sqlite3

        with sqlite3.connect(folder / "foreign.db") as connection:
            connection.execute("CREATE TABLE notes (body TEXT)")


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _listing(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")} if folder.exists() else set()


def run_case(case: Case, root: Path, shared: Path) -> tuple[str, str]:
    with tempfile.TemporaryDirectory(prefix="catalogue-") as name:
        folder = Path(name)
        prepare(folder, case, root, shared)
        try:
            return _classify(case, folder, root)
        finally:
            if case.setup == "nas+ro":
                subprocess.run(["umount", "-l", str(folder / "ro")], check=False, capture_output=True)


def _classify(case: Case, folder: Path, root: Path) -> tuple[str, str]:
    precious = {name: _digest(folder / name) for name in case.precious}
    if case.setup == "foreign":
        precious["foreign.db journal"] = _journal(folder / "foreign.db")
    before = _listing(folder)
    env = {**os.environ, "PYTHONPATH": str(root), "REDAUDIT_DB": str(folder / "default.db"), **case.env}
    command = [sys.executable, "-m", "redaudit.cli.main", *case.args]
    try:
        if case.pause:
            result = _paused(command, folder, env, *case.pause)
        else:
            result = subprocess.run(command, check=False, cwd=folder, env=env, capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "mishandled", "hung (killed after 600 s)"
    stderr = result.stderr.decode("utf-8", "replace")
    if case.pause and "(no pause point" in stderr:  # the command ran to its end: judged on that alone
        return "mishandled", f"exit {result.returncode}: no pause point, the signal could not be placed"
    lines = [line for line in stderr.splitlines() if line.strip() and not re.match(r"^\d\d:\d\d:\d\d ", line)
             and not line.startswith(("warning:", "paused at "))]
    after = {name: _digest(folder / name) for name in case.precious}
    if case.setup == "foreign":
        after["foreign.db journal"] = _journal(folder / "foreign.db")
    if any(precious[name] != after[name] for name in precious):
        return "data lost", f"exit {result.returncode}; changed: {[n for n in precious if precious[n] != after[n]]}"
    if "Traceback" in stderr or result.returncode < 0 or "terminate called" in stderr:
        return "traceback", f"exit {result.returncode}: {lines[-1] if lines else ''}"[:160]
    stray = {p for p in _listing(folder) - before if not p.startswith(("default.db", "h.db-", "nas.db-", "n.db"))}
    if case.expect == "interrupted":
        good = result.returncode in (130, 143) and len(lines) == 1 and not stray
    elif case.expect == "ok":
        good = result.returncode == 0 and not any(line.startswith("error") for line in lines) \
            and "RuntimeWarning" not in stderr and not re.search(rb"\binf\b", result.stdout)
    else:
        good = result.returncode == 2 and len(lines) == 1 and lines[0].lower().startswith("error") and not stray
        good = good or (case.expect == "either" and result.returncode == 0)
    detail = f"exit {result.returncode}: {lines[-1] if lines else ''}" + (f" stray {sorted(stray)}" if stray else "")
    return ("handled" if good else "mishandled"), detail[:200]


def _journal(path: Path) -> str:
    import sqlite3

    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]


def _paused(command: list, folder: Path, env: dict, stage: str, signum: int) -> subprocess.CompletedProcess:
    process = subprocess.Popen(command, cwd=folder, env={**env, "REDAUDIT_TEST_PAUSE": stage}, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    while (line := process.stderr.readline()) and line.strip() != f"paused at {stage}".encode():
        seen += line
    if line:
        process.send_signal(signum)
        try:
            process.stdin.write(b"\n")
            process.stdin.flush()
        except BrokenPipeError:
            process.stdin = None
    stdout, stderr = process.communicate(timeout=600)
    if not line:  # the tree has no pause point: it ran to the end, the signal never came
        stderr = seen + stderr + b"\n(no pause point: the signal could not be placed)"
        return subprocess.CompletedProcess(command, 0 if process.returncode == 0 else process.returncode, stdout, stderr)
    return subprocess.CompletedProcess(command, process.returncode, stdout, seen + stderr)


def shared_files(root: Path, folder: Path) -> None:
    """A history with two scans of model 'res' and a finished two-trial NAS study 's'."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    save(tiny_mlp(), folder, "m.onnx")
    for _ in range(2):
        subprocess.run([sys.executable, "-m", "redaudit.cli.main", "scan", "m.onnx", *Q, "--record", "res",
                        "--db", "h.db"], cwd=folder, env=env, check=True, capture_output=True)
    (folder / "space.toml").write_text('families = ["cnn"]\ndepth = [1, 1]\nwidths = [4]\nkernels = [3]\n')
    subprocess.run([sys.executable, "-m", "redaudit.cli.main", "nas", "run", "--study", "s", "--space", "space.toml",
                    "--trials", "2", "--budget", "1", "--sampler", "random", "--db", "nas.db", "--artifacts", "art"],
                   cwd=folder, env=env, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=HERE.parents[1], help="source tree to run")
    parser.add_argument("--only", default="", help="run the cases whose id starts with this")
    args = parser.parse_args()
    totals: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="catalogue-shared-") as name:
        shared = Path(name)
        shared_files(args.root.resolve(), shared)
        for case in CASES:
            if not case.id.startswith(args.only):
                continue
            verdict, detail = run_case(case, args.root.resolve(), shared)
            totals[verdict] += 1
            print(f"{verdict:<10} {case.id:<48} {detail}", flush=True)
    tried = sum(totals.values())
    print(f"tried {tried}, handled {totals['handled']}, tracebacks {totals['traceback']}, "
          f"data lost {totals['data lost']}, mishandled otherwise {totals['mishandled']}")


if __name__ == "__main__":
    main()
