"""Typing a graph writes nothing: onnxruntime's symbolic shape inference, which types the contrib
ops' outputs, saves the whole model (weights as external data) as ``sym_shape_infer_temp.onnx``
in the working directory whenever it cannot type every tensor, then raises. Found on a real
optimum export; a scan must never leave files where the user happens to stand."""
from __future__ import annotations

import os

from onnx import TensorProto, helper

from redaudit.core.tensor_types import infer_types


def _half_typed_model():
    """A contrib op symbolic inference has no rule for, between two it types."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("FastGelu", ["a"], ["g"], domain="com.microsoft"),
             helper.make_node("MysteryOp", ["g"], ["b"], domain="com.microsoft"),
             helper.make_node("Relu", ["b"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def test_incomplete_symbolic_inference_writes_nothing_and_keeps_what_it_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    types = infer_types(_half_typed_model())
    assert os.listdir(tmp_path) == []
    assert types["a"].shape == ("N", 4)
    assert types["g"].elem_type == TensorProto.FLOAT and types["g"].shape == ("N", 4)  # FastGelu: typed
