"""An encoder-decoder's merged decoder (optimum-onnx 0.1.0 merges T5's by itself:
``text2text-generation-with-past`` → ``decoder_model_merged.onnx``). Its with-past branch reads
each layer's cross-attention keys/values from ``past_key_values.N.encoder.*`` and never reads
``encoder_hidden_states``, so no past the probe can give makes it the first step: redaudit must
inline the without-past branch instead (measured on the real T5 export: the with-past branch fed
an empty past returns other logits than the without-past branch). The model is built by hand
with the real file's structure (``tests/merged_models.py``: ``seq2seq``).
"""
from __future__ import annotations

import merged_models
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from redaudit.core.prepared import PreparedModel
from redaudit.errors import ProbeInputError

NOTE = ("inlined the If 'optimum::if' on input 'use_cache_branch' (else-branch: without past): the with-past "
        "branch does not read 'encoder_hidden_states'")


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    model = merged_models.seq2seq()
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path_factory.mktemp("seq2seq") / "decoder_model_merged.onnx"
    onnx.save(model, str(path))
    return path


def _feed(count: int = 3, source: int = 5, length: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"encoder_attention_mask": np.ones((count, source), np.int64),
            "input_ids": rng.integers(0, 32, (count, length)).astype(np.int64),
            "encoder_hidden_states": rng.standard_normal((count, source, 16)).astype(np.float32)}


def _run(model, feed):
    source = str(model) if not isinstance(model, onnx.ModelProto) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = {item.name for item in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in names})


def test_the_without_past_branch_is_inlined(merged):
    prepared = PreparedModel.load(merged)
    assert prepared.notes == (NOTE,)
    assert not [node for node in prepared.proto.graph.node if node.op_type == "If"]
    inputs = [item.name for item in prepared.proto.graph.input]
    assert inputs == ["encoder_attention_mask", "input_ids", "encoder_hidden_states"]  # the unread pasts leave
    onnx.checker.check_model(prepared.proto, full_check=True)
    feed = _feed()
    past = {f"past_key_values.{i}.encoder.{kind}": np.zeros((3, 1, 5, 16), np.float32)
            for i in range(2) for kind in ("key", "value")}
    without_past = _run(merged, {**feed, **past, "use_cache_branch": np.array([False])})
    with_past = _run(merged, {**feed, **past, "use_cache_branch": np.array([True])})
    assert not np.allclose(with_past[0], without_past[0])  # what inlining the with-past branch scanned
    inlined = _run(prepared.proto, feed)
    for got, want in zip(inlined, without_past):
        assert np.array_equal(got, want)


def test_taps_are_the_decoder_layers(merged):
    taps = PreparedModel.load(merged).taps("block")
    assert [point.tensor for point in taps.points][-2:] == ["/decoder/block.0/layer.2/Add_output_0",
                                                          "/decoder/block.1/layer.2/Add_output_0"]


def test_use_cache_branch_in_inputs_must_be_false(merged):
    from redaudit.core.branches import check_condition_inputs

    prepared = PreparedModel.load(merged)
    assert "use_cache_branch" not in check_condition_inputs(prepared.inlined, {**_feed(), "use_cache_branch":
                                                                                np.zeros(3, bool)})
    with pytest.raises(ProbeInputError, match="must be False"):
        check_condition_inputs(prepared.inlined, {**_feed(), "use_cache_branch": np.ones(3, bool)})
