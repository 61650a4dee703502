"""The tiny decoder LM (examples/train_tiny_lm.py) as a subject of benchmarks/prune_compare.py.

Calibration and evaluation are token windows from DIFFERENT packages' text (examples/lm_corpus.py:
the packages are split train / calibration / evaluation, so no package's wording is on two sides):
policies score layers and healing fits its maps on the calibration windows, every figure is
measured on the evaluation windows. Quality is the LM verification of ``redaudit prune``
(:mod:`redaudit.prune.lm_metrics`): next-token top-1 agreement with the original, mean KL(original
‖ pruned) in nats, and the perplexity ratio pruned / original on the held-out text.

Units are whole decoder layers, as ``prune`` offers them (``redaudit.core.units``): a layer
is the span from its input (the previous layer's output) to its MLP residual merge.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from redaudit.prune import find_candidates
from redaudit.prune.lm_metrics import next_token_agreement

#: Samples per onnxruntime call (64 windows of 128 tokens each side).
FEED = 16


def _feeds(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    count = len(arrays["input_ids"])
    return [{name: array[start:start + FEED] for name, array in arrays.items()} for start in range(0, count, FEED)]


def lm_subject(subject_class, folder: Path | None = None, windows: int | None = None):
    """A ``Subject`` (prune_compare's dataclass) for the trained tiny LM: the one in ``folder``,
    else the cached default one (trained first if needed); ``windows``: use only the first N
    windows of each side (a quick run)."""
    from examples.train_tiny_lm import build

    folder = folder or build()
    calibration = {name: array[:windows] for name, array in np.load(folder / "calibration.npz").items()}
    evaluation = {name: array[:windows] for name, array in np.load(folder / "evaluation.npz").items()}
    ids, mask = evaluation["input_ids"], evaluation["attention_mask"]

    def quality(reference: np.ndarray, pruned: np.ndarray) -> dict[str, float]:
        lm = next_token_agreement(reference, pruned, ids, mask)
        return {"top1": lm.top1_agreement, "KL": lm.kl_mean, "ppl ratio": lm.perplexity_ratio}

    model = onnx.load(str(folder / "lm.onnx"))
    subject = subject_class(f"tiny LM ({Path(folder).name}, 8 layers)", model, _feeds(calibration),
                            _feeds(evaluation), quality, [1, 2, 3], calibration)
    subject.blocks = find_candidates(model)
    kinds = {block.kind for block in subject.blocks}
    if kinds != {"transformer-layer"} or len(subject.blocks) != 8:
        raise RuntimeError(f"expected 8 decoder layers as candidates, got {len(subject.blocks)} of kinds {kinds}")
    return subject


def original_perplexity(folder: Path | None, reference: np.ndarray) -> float:
    """The original model's perplexity on the evaluation windows (for the table's caption)."""
    from examples.train_tiny_lm import CACHE

    folder = folder or CACHE
    evaluation = {name: array[:len(reference)] for name, array in np.load(folder / "evaluation.npz").items()}
    lm = next_token_agreement(reference, reference, evaluation["input_ids"], evaluation["attention_mask"])
    return float(lm.perplexity_original)
