"""Exporters write -1 (paddle2onnx) or 0 for a dynamic dimension: that is unknown, not a size,
so such a model's activations still count as carrying the batch axis."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from redaudit.core.graph import GraphIndex
from redaudit.core.tap import select_taps


def _model_with_batch(dim: int):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [dim, 8])
    weights = [numpy_helper.from_array(np.eye(8, dtype=np.float32) * (k + 1), f"w{k}") for k in range(3)]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"]), helper.make_node("Relu", ["h0"], ["a0"]),
             helper.make_node("MatMul", ["a0", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["a1"]),
             helper.make_node("MatMul", ["a1", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_minus_one_batch_is_dynamic_like_a_symbol():
    for dim in (-1, 0):
        index = GraphIndex.build(_model_with_batch(dim))
        assert index.types["x"].shape == (None, 8)
        assert select_taps(index, "layer").level == "layer"  # weighted layers are tappable
