"""Inlining an If keeps the graph in SSA form whatever names its branch uses: a branch may produce,
under one of the If's output names, a tensor that is not the branch's output at that position
(its outputs swapped), and the inlined graph must still have one producer per name and compute
what the If did."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from redaudit.core.branches import inline_known_branches


def _swapped_names_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    cond = helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3]) for name in ("a", "b")]
    then_branch = helper.make_graph([helper.make_node("Relu", ["x"], ["b"]), helper.make_node("Neg", ["x"], ["a"])],
                                    "then", [], [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3])
                                                 for n in ("b", "a")])
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["e0"]), helper.make_node("Identity", ["x"], ["e1"])],
                                    "else", [], [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3])
                                                 for n in ("e0", "e1")])
    node = helper.make_node("If", ["use_cache_branch"], ["a", "b"], then_branch=then_branch, else_branch=else_branch)
    graph = helper.make_graph([node, helper.make_node("Add", ["a", "b"], ["y"])], "g", [x, cond],
                              [*outs, helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_inlined_branch_with_swapped_output_names_stays_ssa_and_computes_the_if():
    model = _swapped_names_model()
    flat, inlined = inline_known_branches(model)
    assert len(inlined) == 1
    onnx.checker.check_model(flat, full_check=True)
    produced = [name for node in flat.graph.node for name in node.output]
    assert len(produced) == len(set(produced))
    x = np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]], dtype=np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "use_cache_branch": np.array([True])})
    got = ort.InferenceSession(flat.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for expected, actual in zip(want, got):
        np.testing.assert_array_equal(actual, expected)
