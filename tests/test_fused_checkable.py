"""onnxruntime's SimplifiedLayerNormalization (its RMSNorm, in the ONNX domain, with no onnx
schema) is shown to the checker as a contrib op wherever it sits: at the top level, or inside an
If's branches — an onnxruntime-optimized merged decoder, which the checker sees before the If is
inlined. The caller's model is the same afterwards."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from redaudit.core.model import check_model


def _norm(prefix: str) -> list[onnx.NodeProto]:
    return [helper.make_node("SimplifiedLayerNormalization", ["x", "scale"], [f"{prefix}_y"], axis=-1, epsilon=1e-6,
                             name=f"{prefix}_norm")]


def _model(inside_if: bool) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    scale = numpy_helper.from_array(np.ones(4, dtype=np.float32), "scale")
    if not inside_if:
        graph = helper.make_graph(_norm("top"), "g", [x], [helper.make_tensor_value_info("top_y", TensorProto.FLOAT, [2, 4])],
                                  [scale])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    branches = [helper.make_graph(_norm(name), name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [2, 4])])
                for name in ("then", "else")]
    node = helper.make_node("If", ["use_cache_branch"], ["y"], then_branch=branches[0], else_branch=branches[1])
    graph = helper.make_graph([node], "g", [x, helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("inside_if", [False, True])
def test_the_checker_accepts_onnxruntimes_rmsnorm_anywhere_and_the_model_is_unchanged(inside_if):
    model = _model(inside_if)
    before = model.SerializeToString()
    check_model(model, "model")
    assert model.SerializeToString() == before
