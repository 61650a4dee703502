"""A recurrent layer is one IR: an ONNX LSTM node's output sequence, or an unrolled recurrence's stack."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import redaudit
import tap_models
from benchmarks.reference import raw_outputs, reduce_as_documented, reference_matrix
from redaudit.core.blocks import find_residual_merges
from redaudit.core.graph import GraphIndex
from redaudit.core.recurrence import find_recurrences
from redaudit.core.tap import select_taps
from redaudit.prune.candidates import find_candidates

SAMPLES = 160


def _check_against_reference(model: onnx.ModelProto, result, inputs) -> None:
    raw = raw_outputs(model, result.layer_names, inputs)
    features = [reduce_as_documented(array, SAMPLES, layer.layout, layer.layout_source == "recurrent")
                for array, layer in zip(raw, result.layers)]
    np.testing.assert_allclose(result.similarity, reference_matrix(features, result.config.cka_batch), atol=1e-6)


def test_onnx_lstm_node_is_one_ir_averaged_over_time():
    model = tap_models.lstm_node()
    selection = select_taps(GraphIndex.build(model), "block")
    assert [p.tensor for p in selection.points] == ["embed_out", "Y", "logits"]  # layer level: no residual blocks
    inputs = {"x": np.random.default_rng(0).normal(size=(SAMPLES, 7, 8)).astype(np.float32)}
    result = redaudit.scan(model, inputs=inputs, samples=SAMPLES, cka_batch=80)
    lstm = result.layers[1]
    assert lstm.op == "LSTM" and lstm.layout_source == "recurrent" and lstm.layout == "tokens"
    assert lstm.reduced_axes == (0,)  # Y is (T, directions, N, hidden): mean over T
    assert lstm.runtime_shape == (7, 2, "N", 12)
    _check_against_reference(model, result, inputs)


@pytest.mark.torch
@pytest.mark.parametrize("cell, bidirectional", [("lstm", False), ("lstm", True), ("gru", True)])
def test_unrolled_recurrence_is_tapped_once_at_its_output_sequence(tmp_path, cell, bidirectional):
    pytest.importorskip("torch")
    path = tmp_path / "unrolled.onnx"
    tap_models.export_unrolled(path, cell=cell, bidirectional=bidirectional)
    model = onnx.load(str(path))
    index = GraphIndex.build(model)
    (recurrence,) = find_recurrences(index)
    assert recurrence.time_axis == 1 and recurrence.batch_axis == 0
    assert find_residual_merges(index) == []  # a GRU's (1 − z)·n + z·h per step is not a block
    for level in ("block", "layer"):
        tensors = [p.tensor for p in select_taps(index, level).points]
        assert tensors == ["/Relu_output_0", recurrence.output, "y"], level
    assert not [block.name for block in find_candidates(model, index) if "_cell" in block.name]
    inputs = {"x": np.random.default_rng(1).normal(size=(SAMPLES, 6, 8)).astype(np.float32)}
    result = redaudit.scan(str(path), inputs=inputs, samples=SAMPLES, cka_batch=80, level="layer")
    sequence = result.layers[1]
    assert sequence.op.startswith("unrolled") and sequence.reduced_axes == (1,)
    assert sequence.runtime_shape == ("N", 6, 32 if bidirectional else 16)
    _check_against_reference(model, result, inputs)


def test_same_layer_applied_to_each_step_is_not_a_recurrence():
    """A time-distributed dense layer (one application per step, stacked) shares weights across
    steps but carries no state: no step depends on more applications than another."""
    from onnx import TensorProto, helper

    from models import _init, make_model

    inits = [_init("w", np.random.default_rng(0).normal(size=(8, 8))),
             helper.make_tensor("axis", TensorProto.INT64, [1], [1])]
    nodes = []
    for t in range(4):
        nodes += [helper.make_node("Gather", ["x", f"i{t}"], [f"x{t}"], axis=1),
                  helper.make_node("Gemm", [f"x{t}", "w"], [f"h{t}"]),
                  helper.make_node("Unsqueeze", [f"h{t}", "axis"], [f"u{t}"])]
        inits.append(helper.make_tensor(f"i{t}", TensorProto.INT64, [], [t]))
    nodes.append(helper.make_node("Concat", [f"u{t}" for t in range(4)], ["seq"], axis=1))
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
                       [helper.make_tensor_value_info("seq", TensorProto.FLOAT, ["N", 4, 8])], inits)
    assert find_recurrences(GraphIndex.build(model)) == []
