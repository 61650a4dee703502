"""Expose chosen IRs as extra graph outputs, reduced inside the graph when pooling.

Only the chosen tensors become outputs (every extra output costs time and blocks fusion of
what consumes it). With ``reduce="pool"`` a ReduceMean node per tap is appended so that only
(N, C) tensors leave onnxruntime: global average pooling over spatial axes for channel-first
maps, mean over tokens for (N, T, D) sequences.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx
from onnx import helper

from redaudit.core.graph import GraphIndex
from redaudit.core.tap import TapPoint

from redaudit.core.spec import REDUCTIONS  # noqa: E402,F401 - defined once, re-exported
_CHANNEL_FIRST_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "ConvInteger", "QLinearConv",
                      "FusedConv", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "Resize", "Upsample"}


@dataclass(frozen=True)
class AugmentedModel:
    proto: onnx.ModelProto
    fetch_names: list[str]  # graph output to fetch per tap, in tap order
    pooled_axes: list[tuple[int, ...]]  # axes reduced inside the graph per tap (empty = none)


def _is_channel_first(index: GraphIndex, tensor: str, depth: int = 64) -> bool:
    """Whether the nearest spatial/weighted ancestor of a rank-3 tensor is a convolution-like op."""
    frontier, seen = [tensor], set()
    while frontier and depth > 0:
        current = frontier.pop(0)
        if current in seen:
            continue
        seen.add(current)
        node = index.node_of(current)
        if node is None:
            continue
        depth -= 1
        if node.op_type in _CHANNEL_FIRST_OPS:
            return True
        if node.op_type in ("MatMul", "Gemm", "Einsum", "Attention", "MultiHeadAttention"):
            return False
        frontier.extend(name for name in node.input if name in index.activations)
    return False


def pool_axes(index: GraphIndex, tap: TapPoint, layout: str | None = None) -> tuple[int, ...]:
    """Axes the documented reduction averages: tokens of (N, T, D), spatial axes of (N, C, ...).
    ``layout`` ("tokens"/"channels") overrides what the graph suggests for a rank-3 tensor."""
    rank = len(tap.shape)
    if rank <= 2:
        return ()
    if rank == 3 and layout == "tokens":
        return (1,)
    if rank == 3 and layout is None and not _is_channel_first(index, tap.tensor):
        return (1,)  # (N, T, D): mean over tokens
    return tuple(range(2, rank))  # (N, C, *spatial): global average pooling


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def augment(model: onnx.ModelProto, index: GraphIndex, taps: list[TapPoint], reduce: str,
            layouts: Mapping[str, str] | None = None) -> AugmentedModel:
    """Return a copy of ``model`` whose outputs include one (optionally pooled) tensor per tap.
    The model's own outputs stay as they are."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    graph = augmented.graph
    existing_outputs = {output.name for output in graph.output}
    opset = _default_opset(model)
    fetch_names, pooled = [], []
    taken = set(index.producer) | index.initializers | set(index.graph_inputs)
    for position, tap in enumerate(taps):
        tensor_type = index.types.get(tap.tensor)
        elem_type = tensor_type.elem_type if tensor_type else onnx.TensorProto.FLOAT
        axes = pool_axes(index, tap, (layouts or {}).get(tap.tensor)) if reduce == "pool" else ()
        if not axes:
            if tap.tensor not in existing_outputs:
                graph.output.append(helper.make_tensor_value_info(tap.tensor, elem_type, None))
                existing_outputs.add(tap.tensor)
            fetch_names.append(tap.tensor)
            pooled.append(())
            continue
        out_name = f"redaudit_pool_{position}"
        while out_name in taken:
            out_name += "_"
        taken.add(out_name)
        if opset >= 18:
            axes_name = f"{out_name}_axes"
            graph.initializer.append(helper.make_tensor(axes_name, onnx.TensorProto.INT64, [len(axes)], list(axes)))
            node = helper.make_node("ReduceMean", [tap.tensor, axes_name], [out_name], keepdims=0,
                                    name=f"{out_name}_node")
        else:
            node = helper.make_node("ReduceMean", [tap.tensor], [out_name], axes=list(axes), keepdims=0,
                                    name=f"{out_name}_node")
        graph.node.append(node)
        graph.output.append(helper.make_tensor_value_info(out_name, elem_type, None))
        fetch_names.append(out_name)
        pooled.append(axes)
    return AugmentedModel(augmented, fetch_names, pooled)
