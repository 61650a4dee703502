"""What healing costs: fitting the map for one span on 2,560 samples vs one default scan of the
model on the same 2,560 samples, measured alternately in one process.

Run: python benchmarks/heal_cost.py [--subjects digits,minilm] [--repeats 2] [--no-trim] [--attention]

The fit is the whole of it, as prune runs it: a calibration pass of the original model (run only
as far as the span's exit; token batches sorted by length and cut after their longest real
sequence once that is proven exact), the float64 accumulation and the ridge solve with α chosen
over 10 candidates by 5-fold held-out error. ``--no-trim`` also times the fit on full-length
batches in the given order (every padding token computed), interleaved with the rest. The calibration pass runs the model only as far as the span's exit, so
the cost depends on where the span is: the first, middle and last removable block are measured
(the last one runs the whole model: the dearest span there is). The scan is ``redaudit.scan`` with its defaults
(block-level IRs, CKA per batch of 256) and the same inputs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redaudit import scan  # noqa: E402
from redaudit.prune import find_candidates  # noqa: E402
from redaudit.prune.calibrate import batches, calibrate_spans, calibration_batches, outputs_only  # noqa: E402
from redaudit.core.run import SessionFactory  # noqa: E402
from redaudit.prune.heal_mix import removal_prior, upstream_attention  # noqa: E402

SAMPLES = 2560


def digits_inputs(folder: Path) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    from benchmarks.digits_cnn import digits_splits, train_digits_cnn

    splits = digits_splits()
    train_digits_cnn(folder / "digits.onnx", splits, epochs=3)  # cost does not depend on accuracy
    rng = np.random.default_rng(0)
    pool = np.concatenate([splits.train_x, splits.calib_x])
    picks = rng.integers(0, len(pool), SAMPLES)
    shifted = np.stack([np.roll(pool[i], tuple(rng.integers(-1, 2, 2)), axis=(1, 2)) for i in picks])
    return onnx.load(str(folder / "digits.onnx")), {"image": shifted.astype(np.float32)}


def minilm_inputs(folder: Path) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    from examples.minilm_export import export_minilm, tokenize
    from benchmarks.sentence_sets import docstring_sentences

    sentences = docstring_sentences(limit=SAMPLES)
    return onnx.load(str(export_minilm(folder / "minilm.onnx"))), tokenize(sentences, max_length=64)


def fit_once(model: onnx.ModelProto, arrays: dict[str, np.ndarray], position: int,
             trim: bool = True, attention: bool = False) -> tuple[float, float]:
    """(seconds for the whole fit, seconds a bare forward pass to the exit over the full-length
    batches takes). ``trim``: as prune does (token batches sorted by length, trailing padding
    cut where proven exact); False: full-length batches in the given order. ``attention``: the
    ``--heal attention`` map (features [x, P̄x]; the plain map where no attention is upstream)."""
    block = find_candidates(model)[position]
    mixer = upstream_attention(model, block.entry) if attention else None
    span = (block.entry, block.exit) + ((mixer,) if mixer else ())
    started = time.perf_counter()
    feeds = calibration_batches(model, arrays, 256, "auto" if trim else None)
    (accumulator,) = calibrate_spans(model, [span], feeds, trim_padding=trim)
    accumulator.solve(prior=removal_prior(accumulator.d_in, accumulator.d_out) if mixer else "identity")
    fit = time.perf_counter() - started
    tensors = [name for name in (block.entry, block.exit) if name not in arrays]
    started = time.perf_counter()
    session = SessionFactory("cpu").create(outputs_only(model, tensors))[0]
    for feed in batches(arrays, 256):
        session.run(tensors, feed)
    return fit, time.perf_counter() - started


def scan_once(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> float:
    started = time.perf_counter()
    scan(model, inputs=arrays, samples=SAMPLES)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", default="digits,minilm")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--attention", action="store_true",
                        help="also time the --heal attention map's fit (tokens mixed through the upstream attention)")
    parser.add_argument("--no-trim", action="store_true",
                        help="also time the fit on full-length batches (padding computed, as before trimming)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as temporary:
        for name in args.subjects.split(","):
            model, arrays = (minilm_inputs if name == "minilm" else digits_inputs)(Path(temporary))
            assert len(next(iter(arrays.values()))) == SAMPLES
            count = len(find_candidates(model))
            positions = {"first": 0, "middle": count // 2, "last": count - 1}
            fits: dict[str, list[tuple[float, float]]] = {where: [] for where in positions}
            untrimmed: dict[str, list[float]] = {where: [] for where in positions}
            mixing: dict[str, list[float]] = {where: [] for where in positions}
            scans: list[float] = []
            for _ in range(args.repeats):  # alternate, so load on the machine hits both alike
                for where, position in positions.items():
                    fits[where].append(fit_once(model, arrays, position))
                    if args.no_trim:
                        untrimmed[where].append(fit_once(model, arrays, position, trim=False)[0])
                    if args.attention:
                        mixing[where].append(fit_once(model, arrays, position, attention=True)[0])
                scans.append(scan_once(model, arrays))
            full = float(np.median(scans))
            print(f"{name}: one scan on {SAMPLES} samples {full:.2f} s (runs {[round(t, 2) for t in scans]})")
            for where, times in fits.items():
                fit, forward = (float(np.median([t[i] for t in times])) for i in (0, 1))
                print(f"  fit one span ({where} block {positions[where]} of {count}) {fit:.2f} s "
                      f"(runs {[round(t[0], 2) for t in times]}), of which a bare forward pass to the "
                      f"exit takes {forward:.2f} s; fit ÷ scan = {fit / full:.3f}", flush=True)
                if mixing[where]:
                    mixed = float(np.median(mixing[where]))
                    print(f"    the attention map: {mixed:.2f} s (runs {[round(t, 2) for t in mixing[where]]}); "
                          f"fit ÷ scan = {mixed / full:.3f}", flush=True)
                if untrimmed[where]:
                    plain = float(np.median(untrimmed[where]))
                    print(f"    without cutting padding: {plain:.2f} s (runs {[round(t, 2) for t in untrimmed[where]]}); "
                          f"fit ÷ scan = {plain / full:.3f}", flush=True)


if __name__ == "__main__":
    main()
