"""Where a prune holds memory: resident set size and live onnxruntime sessions, stage by stage.

Runs ``prune_model(--remove N --heal linear)`` in this process on a Llama-layout decoder
(generated with the export of benchmarks/large_models.py, any size; the issue's 2.5 GB one by
default) while a thread samples ``VmRSS`` every few milliseconds, and counts the onnxruntime
sessions alive whenever one is made (a weak reference to each). Printed per stage (the prune's
progress callback names them; healing calibration runs inside "surgery"): peak RSS, and the
most sessions alive at once. A stage with two sessions alive holds two copies of the weights.

Usage: python benchmarks/prune_memory.py [--hidden 2048 --layers 12 --intermediate 4608]
       [--cache DIR] [--samples 64] [--tokens 32] [--remove 2] [--latency]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from large_models import _EXPORT, CACHE, DECODER


def export(cache: Path, config: dict) -> Path:
    folder = cache / f"llama_decoder_h{config['hidden_size']}_l{config['num_hidden_layers']}_external"
    if config == DECODER:
        folder = cache / "llama_decoder_h2048_l12"
    path = folder / "model.onnx"
    if not path.is_file():
        partial = cache / f"llama_decoder.partial.{os.getpid()}"
        partial.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", _EXPORT.format(config=repr(config), path=str(partial / "model.onnx"))],
                       check=True)
        if not any(file.name != "model.onnx" for file in partial.iterdir()):  # under 2 GB torch writes it inline
            import onnx

            model = onnx.load(str(partial / "model.onnx"))
            onnx.save_model(model, str(partial / "model.onnx"), save_as_external_data=True,
                            all_tensors_to_one_file=False, size_threshold=1024)
        os.replace(partial, folder)
    return path


def rss() -> tuple[int, int, int]:
    """(VmRSS, RssAnon, RssFile) in bytes: file-backed pages count too (mapped weights a session or
    a memmap touched)."""
    with open("/proc/self/status") as status:
        found = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in status
                 if line.startswith(("VmRSS", "RssAnon", "RssFile"))}
    return found["VmRSS"], found["RssAnon"], found["RssFile"]


class Census:
    """Peak RSS and most live sessions per stage."""

    def __init__(self) -> None:
        self.stage, self.peaks, self.sessions = "start", {}, {}
        self.alive: weakref.WeakSet = weakref.WeakSet()
        self.done = False

    def sample(self) -> None:
        while not self.done:
            self.peaks[self.stage] = max(self.peaks.get(self.stage, (0, 0, 0)), rss())
            time.sleep(0.005)

    def on_progress(self, event) -> None:
        self.stage = event.stage.split("/")[0]

    def created(self, session) -> None:
        self.alive.add(session)
        self.sessions[self.stage] = max(self.sessions.get(self.stage, 0), len(self.alive))


def run_cli(path: Path, ids: np.ndarray, folder: Path, args: argparse.Namespace) -> tuple[list[str], float]:
    """The command of benchmarks/large_models.py's prune section, in this process."""
    import contextlib
    import io
    import json

    from redaudit.cli.main import cli

    inputs = folder / "inputs.npz"
    np.savez(inputs, input_ids=ids, attention_mask=np.ones_like(ids))
    command = ["prune", str(path), "--remove", str(args.remove), "--heal", "linear", "--inputs", str(inputs),
               "--samples", str(args.samples), "--cka-batch", str(args.cka_batch), "--device", "cpu", "--json",
               "-o", str(folder / "pruned" / "model.onnx")] + ([] if args.latency else ["--no-latency"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        cli.main(args=command, prog_name="redaudit")
    report = json.loads(printed.getvalue())
    return report["removed"], report["agreement"][0]["cosine_mean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=DECODER["hidden_size"])
    parser.add_argument("--intermediate", type=int, default=DECODER["intermediate_size"])
    parser.add_argument("--layers", type=int, default=DECODER["num_hidden_layers"])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--cka-batch", type=int, default=32)
    parser.add_argument("--remove", type=int, default=2)
    parser.add_argument("--blocks", default=None, help="comma-separated block names instead of --remove")
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--cli", action="store_true",
                        help="run `redaudit prune ... --json -o` in this process (benchmarks/large_models.py's command)")
    args = parser.parse_args()
    config = {**DECODER, "hidden_size": args.hidden, "intermediate_size": args.intermediate,
              "num_hidden_layers": args.layers}
    path = export(args.cache, config)

    from redaudit.core import run
    from redaudit.prune import prune_model

    census = Census()
    create = run.SessionFactory.create

    def counted(self, model, what="the model"):
        made = create(self, model, what)
        census.created(made[0])
        return made

    run.SessionFactory.create = counted
    from redaudit.prune import api

    notify = api.notify

    def noted(progress, stage, done=0, total=None):
        census.on_progress(api.ScanProgress(stage, done, total))
        notify(progress, stage, done, total)

    api.notify = noted
    ids = np.random.default_rng(0).integers(0, config["vocab_size"], (args.samples, args.tokens), dtype=np.int64)
    sampler = threading.Thread(target=census.sample, daemon=True)
    sampler.start()
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="redaudit-prune-memory-") as folder:
        if args.cli:
            removed, cosine = run_cli(path, ids, Path(folder), args)
        else:
            result = prune_model(str(path), remove=None if args.blocks else args.remove,
                                 blocks=args.blocks.split(",") if args.blocks else None, heal="linear",
                                 inputs={"input_ids": ids, "attention_mask": np.ones_like(ids)},
                                 samples=args.samples, cka_batch=args.cka_batch, device="cpu",
                                 latency=args.latency, output=Path(folder) / "pruned.onnx")
            removed, cosine = result.removed, result.agreement[0].cosine_mean
        census.stage = "returned"
        time.sleep(0.05)
    census.done = True
    seconds = time.perf_counter() - begin
    data = sum(file.stat().st_size for file in path.parent.iterdir())
    print(f"{path.parent.name}: {data / 1e9:.2f} GB; removed {', '.join(removed)}; "
          f"{seconds:.1f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for stage, (peak, anon, mapped) in census.peaks.items():
        print(f"  {stage:18} peak RSS {peak / 1e9:6.2f} GB (anonymous {anon / 1e9:5.2f}, file {mapped / 1e9:5.2f})  "
              f"sessions alive at most {census.sessions.get(stage, 0)}")
    with open("/proc/self/status") as status:  # the kernel's own peak: a spike between samples counts too
        hwm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    print(f"  whole run          peak RSS {max(census.peaks.values())[0] / 1e9:6.2f} GB sampled, "
          f"{hwm / 1e9:.2f} GB VmHWM  "
          f"cosine {cosine:.6f}")


if __name__ == "__main__":
    main()
