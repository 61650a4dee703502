"""What a model computes: FLOPs per node, for one sample, at concrete input shapes.

FLOPs count multiply-adds of the weighted operators (MatMul, Gemm, Conv, ConvTranspose) as two
operations (symbolic dims other than the batch default to 1 — pass the probe's sequence length,
say, to get a transformer's share right). Element-wise work is left out: it is small next to the
products and its cost is backend-bound. prune prices its candidate blocks with this and nas its
candidates, so both count the same way; parameters are :func:`redaudit.core.graph.parameter_count`.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from redaudit.core.graph import parameter_count
from redaudit.core.kv_layout import batch_axis, swap_samples
from redaudit.core.tensor_types import infer_types

__all__ = ["concrete_model", "node_flops", "flops_per_node", "flop_count", "parameter_count"]


def concrete_model(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None,
                   default_dim: int = 1) -> onnx.ModelProto:
    """A copy whose graph inputs have fixed shapes (batch 1), so inference yields numbers."""
    fixed = copy.deepcopy(model)
    initializers = {init.name for init in fixed.graph.initializer}
    for graph_input in fixed.graph.input:
        if graph_input.name in initializers or not graph_input.type.HasField("tensor_type"):
            continue
        dims = graph_input.type.tensor_type.shape.dim
        samples = batch_axis(graph_input)  # 1 for a legacy stacked past (2, batch, …)
        given = swap_samples((input_shapes or {}).get(graph_input.name, ()), samples)  # given samples first
        for axis, dim in enumerate(dims):
            value = given[axis] if axis < len(given) else None
            if axis == samples:
                value = 1
            if value is None:
                value = dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else default_dim
            dim.Clear()
            dim.dim_value = int(value)
    return fixed


def node_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple]) -> int:
    """Multiply-add FLOPs (×2) of one weighted node, 0 when shapes are unknown or it is cheap."""
    def shape(name: str) -> tuple | None:
        # A dim inference could not pin down (often the batch, lost at a broadcast) counts as 1.
        found = shapes.get(name)
        return None if found is None else tuple(d if isinstance(d, int) else 1 for d in found)

    out = shape(node.output[0]) if node.output else None
    if out is None:
        return 0
    inputs = [shape(name) for name in node.input]
    if node.op_type == "MatMul" and inputs and inputs[0]:
        return 2 * int(np.prod(out)) * int(inputs[0][-1])
    if node.op_type == "Gemm" and inputs and inputs[0]:
        trans_a = any(a.name == "transA" and a.i for a in node.attribute)
        inner = inputs[0][0] if trans_a else inputs[0][-1]
        return 2 * int(np.prod(out)) * int(inner)
    if node.op_type in ("Conv", "ConvTranspose") and len(inputs) > 1 and inputs[1]:
        weight = inputs[1]
        per_output = int(np.prod(weight[1:]))  # (Cin / group) × kernel
        if node.op_type == "ConvTranspose":
            return 2 * int(np.prod(inputs[0])) * int(np.prod(weight[1:])) if inputs[0] else 0
        return 2 * int(np.prod(out)) * per_output
    return 0


def flops_per_node(model: onnx.ModelProto,
                   input_shapes: Mapping[str, Sequence[int]] | None = None) -> list[int]:
    """FLOPs of each node of ``model`` (same positions), for one sample."""
    types = infer_types(concrete_model(model, input_shapes))
    shapes = {name: t.shape for name, t in types.items() if t.shape is not None}
    return [node_flops(node, shapes) for node in model.graph.node]


def flop_count(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None) -> int:
    """FLOPs of one sample through the whole model."""
    return int(sum(flops_per_node(model, input_shapes)))
