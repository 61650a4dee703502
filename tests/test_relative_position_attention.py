"""A self-attention with a relative-position term (Transformer-XL, XLNet, wav2vec2-conformer:
``q · posᵀ`` where ``pos`` is projected from a position table gathered by ``Range(Shape(x))``)
multiplies its queries by a tensor the block input does not compute — but no sample's data
computes it either: it is not a memory, and the half is an attention, not a cross-attention."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from redaudit.core.graph import GraphIndex
from redaudit.core.units import find_units

D = 8


def _relative_position_layer() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    init = lambda name, *shape: numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)
    scalar = lambda name, value: numpy_helper.from_array(np.array(value, np.int64), name)
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["length"], axis=0),
             helper.make_node("Range", ["zero", "length", "one"], ["positions"]),
             helper.make_node("Gather", ["table", "positions"], ["pos_embed"], axis=0),
             helper.make_node("MatMul", ["pos_embed", "w_pos"], ["pos"]),
             helper.make_node("Transpose", ["pos"], ["pos_t"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "w_q"], ["q"]),
             helper.make_node("MatMul", ["x", "w_k"], ["k"]),
             helper.make_node("MatMul", ["x", "w_v"], ["v"]),
             helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "k_t"], ["content"]),
             helper.make_node("MatMul", ["q", "pos_t"], ["position"]),  # q · posᵀ: the relative term
             helper.make_node("Add", ["content", "position"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
             helper.make_node("MatMul", ["probs", "v"], ["context"]),
             helper.make_node("MatMul", ["context", "w_o"], ["attended"]),
             helper.make_node("Add", ["x", "attended"], ["after_attention"]),
             helper.make_node("MatMul", ["after_attention", "w_up"], ["up"]),
             helper.make_node("Relu", ["up"], ["act"]),
             helper.make_node("MatMul", ["act", "w_down"], ["down"]),
             helper.make_node("Add", ["after_attention", "down"], ["y"])]
    weights = [init("table", 64, D), init("w_pos", D, D), init("w_q", D, D), init("w_k", D, D), init("w_v", D, D),
               init("w_o", D, D), init("w_up", D, 2 * D), init("w_down", 2 * D, D), scalar("zero", 0), scalar("one", 1)]
    graph = helper.make_graph(nodes, "relative", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", D])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_relative_position_term_is_not_a_memory():
    layout = find_units(GraphIndex.build(_relative_position_layer()))
    assert [[half.role for half in unit.sublayers] for unit in layout.units] == [["attention", "mlp"]]
