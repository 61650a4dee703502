"""Tap selection and graph augmentation on generated models with known structure."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import models
import redaudit
from redaudit.core.augment import augment
from redaudit.errors import TapError
from redaudit.core.graph import GraphIndex
from redaudit.core.tap import chain_end, find_residual_merges, select_taps


def test_block_level_taps_stem_and_every_block_after_activation():
    index = GraphIndex.build(models.residual_cnn(blocks=4))
    selection = select_taps(index, "block")
    assert selection.level == "block"
    assert [p.tensor for p in selection.points] == ["stem_out"] + [f"block{i}_out" for i in range(4)]
    assert all(p.op == "Add+Relu" for p in selection.points[1:])


def test_layer_level_takes_chain_end_of_weighted_ops():
    index = GraphIndex.build(models.residual_cnn(blocks=2))
    tensors = [p.tensor for p in select_taps(index, "layer").points]
    # conv1 → relu1 is one chain; conv2 feeds the residual Add (not elementwise-with-constant) so it
    # ends at its own output; the head Gemm too.
    assert tensors == ["stem_out", "block0_r1", "block0_c2", "block1_r1", "block1_c2", "logits"]


def test_no_blocks_falls_back_to_layer_with_warning():
    selection = select_taps(GraphIndex.build(models.mlp()), "block")
    assert selection.level == "layer"
    assert any("no residual blocks" in w for w in selection.warnings)
    assert [p.tensor for p in selection.points] == ["a0", "a1", "a2"]


def test_op_level_skips_non_float_and_non_batch_tensors():
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),  # int64, no batch axis
             helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Cast", ["r"], ["r_int"], to=TensorProto.INT32),
             helper.make_node("Sigmoid", ["r"], ["s"])]
    model = models.make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
                               helper.make_tensor_value_info("r_int", TensorProto.INT32, ["N", 4])], [])
    points = select_taps(GraphIndex.build(model), "op").points
    assert [p.tensor for p in points] == ["r", "s"]


def test_gelu_decomposition_is_not_a_residual_block():
    """x + 0.044715·x³ (tanh-GELU) has the shape of a skip connection but no weighted branch."""
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4).ravel().tolist()),
             helper.make_tensor("c", TensorProto.FLOAT, [], [0.044715])]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Mul", ["h", "h"], ["h2"]), helper.make_node("Mul", ["h2", "h"], ["h3"]),
             helper.make_node("Mul", ["h3", "c"], ["h3c"]), helper.make_node("Add", ["h", "h3c"], ["inner"]),
             helper.make_node("Tanh", ["inner"], ["t"]), helper.make_node("Mul", ["h", "t"], ["y"])]
    model = models.make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    index = GraphIndex.build(model)
    assert find_residual_merges(index) == []
    assert chain_end(index, "h") == "y"  # the whole decomposed activation is the MatMul's chain


def test_augment_adds_only_pooled_taps_and_keeps_model_outputs():
    model = models.residual_cnn(blocks=2)
    index = GraphIndex.build(model)
    points = select_taps(index, "block").points
    augmented = augment(model, index, points, "pool")
    outputs = [o.name for o in augmented.proto.graph.output]
    assert outputs[0] == "logits" and len(outputs) == 1 + 2 * len(points)  # pooled tap + its runtime shape
    assert all(axes == (2, 3) for axes in augmented.pooled_axes)
    x = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    original = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    session = ort.InferenceSession(augmented.proto.SerializeToString())
    values = session.run(None, {"input": x})
    np.testing.assert_array_equal(values[0], original)
    pooled, shape = session.run([augmented.fetch_names[-1], augmented.shape_names[-1]], {"input": x})
    raw = ort.InferenceSession(_with_output(model, "block1_out")).run(["block1_out"], {"input": x})[0]
    np.testing.assert_allclose(pooled, raw.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    assert shape.tolist() == [[5, 8, 8, 8]]


def _with_output(model: onnx.ModelProto, name: str) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return copy.SerializeToString()


def test_explicit_scaled_copy_has_cka_one():
    result = redaudit.scan(models.mlp(scaled_copy=True), taps=["a0", "a0_scaled", "a1"], samples=512)
    assert result.config.level == "tap"
    assert result.layer_names == ["a0", "a0_scaled", "a1"]
    assert result.similarity[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert result.similarity[0, 2] < 0.99


def test_subgraph_tensor_cannot_be_tapped():
    then_branch = helper.make_graph([helper.make_node("Relu", ["x"], ["inside"])], "then", [],
                                    [helper.make_tensor_value_info("inside", TensorProto.FLOAT, ["N", 4])])
    else_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["inside_else"])], "else", [],
                                    [helper.make_tensor_value_info("inside_else", TensorProto.FLOAT, ["N", 4])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["branch"], then_branch=then_branch, else_branch=else_branch),
             helper.make_node("Sigmoid", ["branch"], ["y"])]
    model = models.make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    index = GraphIndex.build(model)
    with pytest.raises(TapError, match="inside an If/Loop/Scan subgraph"):
        select_taps(index, taps=["inside"])
    assert any("subgraphs cannot be tapped" in w for w in select_taps(index, "op").warnings)


def test_symbolic_dims_default_with_warning_and_dim_option():
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [6, 6], np.random.default_rng(0).normal(size=36).tolist()),
             helper.make_tensor("v", TensorProto.FLOAT, [6, 6], np.random.default_rng(1).normal(size=36).tolist())]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("MatMul", ["a", "v"], ["y"])]
    model = models.make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 6])], inits)
    result = redaudit.scan(model, samples=256, level="layer")
    assert any("'seq'" in w and "--dim" in w for w in result.warnings)
    assert result.config.dims == (("seq", 16),)
    explicit = redaudit.scan(model, samples=256, level="layer", dims={"seq": 5})
    assert not any("'seq'" in w for w in explicit.warnings)
    assert explicit.input_hash != result.input_hash


def test_aggregates_agree_when_every_batch_is_the_same():
    batch = np.random.default_rng(3).normal(size=(64, 16)).astype(np.float32)
    inputs = {"x": np.concatenate([batch] * 3)}
    model = models.mlp()
    mean_cka = redaudit.scan(model, inputs=inputs, samples=192, cka_batch=64, level="op")
    hsic = redaudit.scan(model, inputs=inputs, samples=192, cka_batch=64, level="op", aggregate="hsic")
    np.testing.assert_allclose(mean_cka.similarity, hsic.similarity, atol=1e-12)
    assert mean_cka.msrs_std == pytest.approx(0.0, abs=1e-12)
    different = redaudit.scan(model, samples=192, cka_batch=64, level="op", aggregate="hsic")
    assert np.abs(different.similarity - mean_cka.similarity).max() > 1e-3


def test_cka_batch_all_uses_one_batch():
    result = redaudit.scan(models.mlp(), samples=300, cka_batch=None)
    assert result.batches == 1 and result.samples == 300 and result.dropped_samples == 0
    assert result.msrs_std == 0.0


def test_additive_mask_is_not_a_block_input_in_later_layers():
    """From the second attention layer on, scores depend on the mask through earlier layers, so
    the mask Add looks like y = m + f(m) with a weighted f — but no weighted op reads the mask
    alone (MiniLM-L6 exported by transformers 5 gave 5 such false blocks)."""
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor(f"w{i}", TensorProto.FLOAT, [8, 8], rng.normal(size=64).tolist()) for i in range(4)]
    inits.append(helper.make_tensor("big", TensorProto.FLOAT, [], [-1e4]))
    nodes = [helper.make_node("Mul", ["mask", "big"], ["m"]),
             helper.make_node("MatMul", ["x", "w0"], ["q1"]), helper.make_node("Add", ["q1", "m"], ["s1"]),
             helper.make_node("Softmax", ["s1"], ["p1"]), helper.make_node("MatMul", ["p1", "w1"], ["a1"]),
             helper.make_node("Add", ["x", "a1"], ["h1"]),
             helper.make_node("MatMul", ["h1", "w2"], ["q2"]), helper.make_node("Add", ["q2", "m"], ["s2"]),
             helper.make_node("Softmax", ["s2"], ["p2"]), helper.make_node("MatMul", ["p2", "w3"], ["a2"]),
             helper.make_node("Add", ["h1", "a2"], ["h2"])]
    model = models.make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
                                      helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("h2", TensorProto.FLOAT, ["N", 8])], inits)
    merges = find_residual_merges(GraphIndex.build(model))
    assert [(merge.entry, merge.add) for merge in merges] == [("x", "h1"), ("h1", "h2")]
