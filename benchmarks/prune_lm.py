"""The tiny decoder LM (examples/train_tiny_lm.py) as a subject of benchmarks/prune_compare.py.

Calibration and evaluation are token windows from DIFFERENT packages' text (examples/lm_corpus.py:
the packages are split train / calibration / evaluation, so no package's wording is on two sides):
policies score layers and healing fits its maps on the calibration windows, every figure is
measured on the evaluation windows. Quality is the LM verification of ``redaudit prune``
(:mod:`redaudit.prune.lm_metrics`): next-token top-1 agreement with the original, mean KL(original
‖ pruned) in nats, and the perplexity ratio pruned / original on the held-out text.

Units are whole decoder layers. Where the candidates are still the two residual halves of each
layer (attention, MLP), a layer is the span from the first half's entry to the second half's exit;
the entry is taken above the no-op ``Cast`` that Llama's RMSNorm export puts first, so that one
layer's exit is the next one's entry (contiguous spans for ``angular``, merged healing spans).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from redaudit.core.graph import GraphIndex
from redaudit.prune import find_candidates
from redaudit.prune.candidates import Block, _make_block
from redaudit.prune.lm_metrics import next_token_agreement

#: Samples per onnxruntime call (64 windows of 128 tokens each side).
FEED = 16


def _above_noop_cast(index: GraphIndex, name: str) -> str:
    """The input of a Cast that does not change the element type (else ``name`` itself)."""
    position = index.producer.get(name)
    if position is None:
        return name
    node = index.nodes[position]
    if node.op_type != "Cast" or not node.input:
        return name
    before, after = index.types.get(node.input[0]), index.types.get(name)
    return node.input[0] if before is not None and after is not None and before.same_as(after) else name


def decoder_layers(model: onnx.ModelProto) -> list[Block]:
    """One removable block per decoder layer (see the module doc)."""
    index = GraphIndex.build(model)
    blocks = find_candidates(model, index)
    if all(block.kind != "residual" for block in blocks):
        return blocks  # the candidates are already whole layers
    halves = [block for block in blocks if block.kind == "residual"]
    if len(halves) % 2:
        raise ValueError(f"{len(halves)} residual halves cannot pair into decoder layers")
    layers = []
    for attention, mlp in zip(halves[0::2], halves[1::2]):
        entry = _above_noop_cast(index, attention.entry)
        layer = _make_block(index, entry, mlp.exit, "decoder-layer") or \
            _make_block(index, attention.entry, mlp.exit, "decoder-layer")
        if layer is None:
            raise ValueError(f"{attention.entry} → {mlp.exit} is not a removable layer")
        layers.append(layer)
    return layers


def _feeds(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    count = len(arrays["input_ids"])
    return [{name: array[start:start + FEED] for name, array in arrays.items()} for start in range(0, count, FEED)]


def lm_subject(subject_class, folder: Path | None = None):
    """A ``Subject`` (prune_compare's dataclass) for the trained tiny LM: the one in ``folder``,
    else the cached default one (trained first if needed)."""
    from examples.train_tiny_lm import build

    folder = folder or build()
    calibration = dict(np.load(folder / "calibration.npz"))
    evaluation = dict(np.load(folder / "evaluation.npz"))
    ids, mask = evaluation["input_ids"], evaluation["attention_mask"]

    def quality(reference: np.ndarray, pruned: np.ndarray) -> dict[str, float]:
        lm = next_token_agreement(reference, pruned, ids, mask)
        return {"top1": lm.top1_agreement, "KL": lm.kl_mean, "ppl ratio": lm.perplexity_ratio}

    model = onnx.load(str(folder / "lm.onnx"))
    subject = subject_class(f"tiny LM ({Path(folder).name}, 8 layers)", model, _feeds(calibration),
                            _feeds(evaluation), quality, [1, 2, 3], calibration)
    subject.blocks = decoder_layers(model)
    return subject


def original_perplexity(folder: Path, reference: np.ndarray) -> float:
    """The original model's perplexity on the evaluation windows (for the table's caption)."""
    evaluation = dict(np.load(folder / "evaluation.npz"))
    lm = next_token_agreement(reference, reference, evaluation["input_ids"], evaluation["attention_mask"])
    return float(lm.perplexity_original)
