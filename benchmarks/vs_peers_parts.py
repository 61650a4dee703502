"""Where the time of benchmarks/vs_peers.py goes, part by part, on both sides (issue 27).

Same network, inputs and batches as vs_peers.py (flattened block outputs, n = 1,024, CKA batch
64). Each part is timed alone over the 16 batches, interleaved over ``--repeats`` rounds (median):

* ``ort_plain``: onnxruntime on the original graph, the logits only (no taps);
* ``ort_taps``: onnxruntime on redaudit's augmented graph, every tap fetched (what a scan runs);
* ``our_hsic``: redaudit's similarity on the fetched taps (``SimilarityAccumulator.add_batch``:
  float64 centring, one Gram per layer, all pairs), alone, not overlapped with inference, on one
  BLAS thread as inside a scan;
* ``redaudit``: the whole library call ``redaudit.scan`` (load, taps, session, overlap included);
* ``torch_forward``: the torch model alone; ``torch_hooked``: with pytorch-cka's flattening hooks;
* ``peer_hsic``: pytorch-cka's Grams + all-pairs HSIC on the hooked features (its
  ``_accumulate_hsic`` code path: float32 ``mm`` per layer, ``hsic_cross``);
* ``pytorch_cka``: its whole ``compute_cka`` call.

Threads: ``--threads`` (default 2, this machine's cores) is torch's intra-op count and
onnxruntime's intra-op count (redaudit's ``threads``); NumPy's BLAS keeps its default (every core).

Usage: python benchmarks/vs_peers_parts.py [--sizes 15 45] [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redaudit  # noqa: E402
from benchmarks.vs_torchcka import BATCH, SAMPLES, _namespace, prepare  # noqa: E402
from redaudit.core.backend import select_backend  # noqa: E402
from redaudit.core.prepared import PreparedModel  # noqa: E402
from redaudit.core.run import BatchRunner, SessionFactory  # noqa: E402
from redaudit.core.similarity import SimilarityAccumulator  # noqa: E402


def _load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def _timed(function) -> float:
    begin = time.perf_counter()
    function()
    return time.perf_counter() - begin


def parts(blocks: int, repeats: int, threads: int) -> dict:
    import torch
    from cka import compute_cka
    from cka.hsic import hsic_cross

    onnx_path, weights, _inputs_path, taps = prepare(blocks)
    inputs = np.load(_inputs_path)["input"]
    batches = [inputs[start:start + BATCH] for start in range(0, SAMPLES, BATCH)]
    model = _namespace["build"](blocks, weights)
    names = _namespace["block_names"](blocks)
    loader = _namespace["loader"](inputs)

    plain_session, _ = SessionFactory("cpu", threads).create(onnx_path.read_bytes())
    prepared = PreparedModel.load(onnx_path, device="cpu").on_device("cpu", threads)
    selection = prepared.taps("block", tuple(taps))
    augmented = prepared.augmented(selection, "flatten")
    tapped, _ = prepared.session(augmented)
    runner = BatchRunner(tapped, augmented.fetch_names)
    fetched = [[out.reshape(len(out), -1) for out in runner.run({"input": batch})] for batch in batches]
    backend = select_backend("numpy")

    hooked: list[list[torch.Tensor]] = []
    current: dict[str, torch.Tensor] = {}

    def hook(name):
        return lambda _m, _i, out: current.__setitem__(name, out.detach().flatten(1))

    def torch_hooked() -> None:
        hooked.clear()
        handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in names]
        try:
            with torch.inference_mode():
                for (batch,) in loader:
                    current.clear()
                    model(batch)
                    hooked.append([current[name] for name in names])
        finally:
            for handle in handles:
                handle.remove()

    def peer_hsic() -> None:
        with torch.inference_mode():
            total = torch.zeros(blocks, blocks)
            for features in hooked:
                grams = torch.stack([torch.mm(f, f.T) for f in features])
                total += hsic_cross(grams, grams)

    def our_hsic() -> None:  # on one BLAS thread, as inside a scan (core/backend.py)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            accumulator = SimilarityAccumulator(blocks, backend, "unbiased", "hsic")
            for features in fetched:
                accumulator.add_batch(features)

    def torch_forward() -> None:
        with torch.inference_mode():
            for (batch,) in loader:
                model(batch)

    torch_hooked()
    sides = {
        "ort_plain": lambda: [plain_session.run(["logits"], {"input": batch}) for batch in batches],
        "ort_taps": lambda: [runner.run({"input": batch}) for batch in batches],
        "our_hsic": our_hsic,
        "redaudit": lambda: redaudit.scan(str(onnx_path), taps=tuple(taps), reduce="flatten", cka_batch=BATCH,
                                          aggregate="hsic", inputs={"input": inputs}, samples=SAMPLES,
                                          device="cpu", backend="numpy", threads=threads),
        "torch_forward": torch_forward,
        "torch_hooked": torch_hooked,
        "peer_hsic": peer_hsic,
        "pytorch_cka": lambda: compute_cka(model, model, loader, layers=names, device="cpu", progress=False),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, side in sides.items():
            times[name].append(_timed(side))
            print(f"L = {blocks}: {name} {times[name][-1]:.2f} s (load {_load()})", file=sys.stderr, flush=True)
    return {"L": blocks, "threads": threads, "median_s": {k: statistics.median(v) for k, v in times.items()},
            "runs_s": times, "load": _load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[15, 45])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    rows = [parts(blocks, args.repeats, args.threads) for blocks in args.sizes]
    keys = list(rows[0]["median_s"])
    print("| L | " + " | ".join(keys) + " | ort_plain / pytorch_cka | load |")
    print("|---" * (len(keys) + 3) + "|")
    for row in rows:
        t = row["median_s"]
        print(f"| {row['L']} | " + " | ".join(f"{t[k]:.2f}" for k in keys)
              + f" | {t['ort_plain'] / t['pytorch_cka']:.2f} | {row['load']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
