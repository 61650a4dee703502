"""A tap whose leading axis folds the batch with another axis (MobileViT's transformer layers run
on (N·P, tokens, C): the feature map unfolded into P patch positions, reshaped batch-major from
(N, P, tokens, C)). Found on a real optimum-onnx MobileViT export: its 9 transformer layers were
listed by ``taps`` but dropped by the scan as "no batch axis at run time" (4 IRs instead of 13)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import redaudit

SAMPLES, C, H, P = 96, 8, 4, 4  # P patch positions of H*H/P tokens each


def folded_model() -> onnx.ModelProto:
    """x (N, C, H, H) -> conv stem -> unfold to (N·P, H·H/P, C) -> two residual MLP blocks on the
    folded tensor -> fold back -> a residual conv block -> pooled head."""
    rng = np.random.default_rng(0)
    init = lambda name, *shape: numpy_helper.from_array(rng.normal(0, 0.4, shape).astype(np.float32), name)
    shape = lambda name, *dims: numpy_helper.from_array(np.array(dims, np.int64), name)
    nodes = [helper.make_node("Conv", ["x", "w_stem"], ["stem"]),
             helper.make_node("Relu", ["stem"], ["stem_out"]),
             helper.make_node("Transpose", ["stem_out"], ["nhwc"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["nhwc", "folded_shape"], ["folded"])]
    previous = "folded"
    for block in range(2):
        nodes += [helper.make_node("MatMul", [previous, f"w{block}a"], [f"h{block}"]),
                  helper.make_node("Relu", [f"h{block}"], [f"r{block}"]),
                  helper.make_node("MatMul", [f"r{block}", f"w{block}b"], [f"m{block}"]),
                  helper.make_node("Add", [previous, f"m{block}"], [f"fold_block{block}"])]
        previous = f"fold_block{block}"
    nodes += [helper.make_node("Reshape", [previous, "map_shape"], ["unfolded"]),
              helper.make_node("Transpose", ["unfolded"], ["map"], perm=[0, 3, 1, 2]),
              helper.make_node("Conv", ["map", "w_conv"], ["conv"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["conv"], ["conv_r"]),
              helper.make_node("Add", ["map", "conv_r"], ["conv_block"]),
              helper.make_node("GlobalAveragePool", ["conv_block"], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["y"])]
    weights = [init("w_stem", C, 3, 1, 1), init("w0a", C, 16), init("w0b", 16, C), init("w1a", C, 16),
               init("w1b", 16, C), init("w_conv", C, C, 3, 3),
               shape("folded_shape", -1, H * H // P, C), shape("map_shape", -1, H, H, C)]
    graph = helper.make_graph(nodes, "folded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, H, H])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", C])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_folded_batch_taps_are_kept_and_pooled_per_sample():
    from benchmarks.reference import reference_matrix

    model = folded_model()
    x = np.random.default_rng(1).normal(size=(SAMPLES, 3, H, H)).astype(np.float32)
    result = redaudit.scan(model, inputs={"x": x}, samples=SAMPLES, cka_batch=32, device="cpu")
    # the stem is the first block's input, here already folded: the batch is not its leading axis
    assert result.layer_names == ["folded", "fold_block0", "fold_block1", "conv_block"]
    assert not [w for w in result.warnings if "no batch axis" in w]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.extend(onnx.ValueInfoProto(name=name) for name in result.layer_names)
    raw = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        result.layer_names, {"x": x})
    raw = [np.asarray(a, np.float64) for a in raw]
    features = [raw[0].reshape(SAMPLES, P, H * H // P, C).mean(axis=(1, 2)),
                raw[1].reshape(SAMPLES, P, H * H // P, C).mean(axis=(1, 2)),  # sample-major: row b·P + p
                raw[2].reshape(SAMPLES, P, H * H // P, C).mean(axis=(1, 2)),
                raw[3].mean(axis=(2, 3))]
    assert np.abs(result.similarity - reference_matrix(features, 32)).max() < 1e-12


def _position_table_model() -> onnx.ModelProto:
    """x (N, T, 8) -> two residual MLP blocks on the stream, plus a position table gathered by
    Range(T) that no sample owns: (T, 8), T symbolic — T5's relative-position bias in small."""
    rng = np.random.default_rng(2)
    init = lambda name, *shape: numpy_helper.from_array(rng.normal(0, 0.4, shape).astype(np.float32), name)
    scalar = lambda name, value: numpy_helper.from_array(np.array(value, np.int64), name)
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["length"], axis=0),
             helper.make_node("Range", ["zero", "length", "one"], ["positions"]),
             helper.make_node("Gather", ["table", "positions"], ["position_table"], axis=0),
             helper.make_node("Add", ["x", "position_table"], ["stream"])]
    previous = "stream"
    for block in range(2):
        nodes += [helper.make_node("MatMul", [previous, f"w{block}"], [f"h{block}"]),
                  helper.make_node("Relu", [f"h{block}"], [f"r{block}"]),
                  helper.make_node("Add", [previous, f"r{block}"], [f"block{block}"])]
        previous = f"block{block}"
    graph = helper.make_graph(nodes, "positions", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 8])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["N", "T", 8])],
                              [init("table", 256, 8), init("w0", 8, 8), init("w1", 8, 8),
                               scalar("zero", 0), scalar("one", 1)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_tensor_no_sample_owns_is_not_read_as_a_folded_batch():
    """Its length T happens to be twice the CKA batch: still not the batch folded, so the tap is
    dropped as having no batch axis (only a unit's IR, on the stream by construction, is read as
    a fold), and the stream taps are scanned as without it."""
    x = np.random.default_rng(3).normal(size=(64, 32, 8)).astype(np.float32)
    options = dict(inputs={"x": x}, samples=64, cka_batch=16, device="cpu")
    with_table = redaudit.scan(_position_table_model(), taps=("position_table", "block0", "block1"), **options)
    assert with_table.layer_names == ["block0", "block1"]
    assert [w for w in with_table.warnings if "position_table" in w and "no batch axis" in w]
    without = redaudit.scan(_position_table_model(), taps=("block0", "block1"), **options)
    np.testing.assert_array_equal(with_table.similarity, without.similarity)
