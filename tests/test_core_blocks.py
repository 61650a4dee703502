"""The one block detector: scan's block IRs and prune's residual candidates are the same blocks,
named the same way, on every model the tests build or export."""
from __future__ import annotations

import numpy as np
import pytest

import redaudit
from redaudit.core.blocks import find_residual_merges
from redaudit.core.graph import GraphIndex
from redaudit.core.tap import select_taps
from redaudit.prune.candidates import find_candidates
from tests import models, prune_models, tap_models


def _agreement(model) -> tuple[set[str], set[str]]:
    """(identity-skip block IRs scan taps, residual/transformer-layer candidates prune offers)."""
    index = GraphIndex.build(model)
    selection = select_taps(index, "block")
    merges = find_residual_merges(index)
    removable_irs = {p.tensor for p in selection.points} - {merges[0].entry} if merges else set()
    projection_exits = {m.exit for m in merges if not m.identity_skip}
    scan_blocks = removable_irs - projection_exits
    prune_blocks = {b.name for b in find_candidates(model, index) if b.kind in ("residual", "transformer-layer")}
    return scan_blocks, prune_blocks


MODELS = {
    "residual_cnn": lambda: models.residual_cnn(blocks=3),
    "residual_cnn_dup": lambda: models.residual_cnn(blocks=2, duplicate_block=0),
    "gelu_stem_residual": lambda: models.gelu_stem_residual(blocks=3),
    "masked_attention_encoder": lambda: models.masked_attention_encoder(layers=2),
    "prune_residual_mlp": lambda: prune_models.residual_mlp(blocks=4),
    "prune_residual_mlp_downsample": lambda: prune_models.residual_mlp(blocks=4, downsample_after=1),
    "prune_residual_cnn": lambda: prune_models.residual_cnn(blocks=3),
    "mlp": lambda: models.mlp(),
    "plain_chain": lambda: prune_models.plain_chain(),
    "token_blocks": lambda: tap_models.token_blocks(hidden_rank=False),
    "conv1d_blocks": lambda: tap_models.conv1d_blocks(),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_scan_and_prune_name_the_same_blocks(name):
    scan_blocks, prune_blocks = _agreement(MODELS[name]())
    assert scan_blocks == prune_blocks


def test_decomposed_gelu_add_is_not_a_block():
    """magika's stem: `x + 0.044715·x³` inside a tanh-GELU has no weight on its branch."""
    model = models.gelu_stem_residual(blocks=3)
    candidates = find_candidates(model)
    residual = [b.name for b in candidates if b.kind == "residual"]
    assert residual == ["block0_out", "block1_out", "block2_out"]
    assert not any(b.name.endswith("_inner") for b in candidates)  # the GELU's own x + 0.044715·x³
    chains = [b.name for b in candidates if b.kind == "chain"]
    assert chains == ["ApplyActivation_0_out", "ApplyActivation_1_out"]  # whole Dense+GELU layers
    taps = [p.tensor for p in select_taps(GraphIndex.build(model), "block").points]
    assert taps == ["ApplyActivation_1_out", "block0_out", "block1_out", "block2_out"]


def test_attention_mask_add_is_not_a_block():
    """Scores + an additive mask broadcast with the hidden state's shape is not y = x + f(x):
    one IR per encoder layer, no (N, T, T) score tensors."""
    model = models.masked_attention_encoder(layers=3)
    index = GraphIndex.build(model)
    taps = [p.tensor for p in select_taps(index, "block").points]
    assert taps == ["emb", "layer0_out", "layer1_out", "layer2_out"]
    assert all(not m.add.endswith("_masked") for m in find_residual_merges(index))
    kinds = {b.name: b.kind for b in find_candidates(model, index) if b.kind != "chain"}
    assert kinds == {"layer0_out": "transformer-layer", "layer1_out": "transformer-layer",
                     "layer2_out": "transformer-layer"}


def test_pruning_a_gelu_stem_model_removes_a_weighted_block(tmp_path):
    model = models.gelu_stem_residual(blocks=3)
    result = redaudit.prune.prune_model(model, remove=1, samples=64, cka_batch=32, latency=False,
                                        measure_msrs=False)
    assert result.removed[0].startswith("block")
    assert result.params_after < result.params_before
