"""Folding a healing map into the op after the span, so the healed model gains no parameters.

Where the span's exit has one reader that is itself linear in it, ``exit = entry·T + b`` need
not be computed at all: T and b go into that reader's weight and bias and it reads the entry.
That is a MatMul or Gemm on the last axis (tokens, vectors), or a 1×1 Conv with no padding and
one group on channels; for a channel map also a spatial average (GlobalAveragePool → Flatten,
or ReduceMean over H, W) followed by a MatMul/Gemm head, because a per-pixel map commutes with
averaging. Every fold either rewrites the graph completely or leaves it untouched and returns
None, and :func:`redaudit.prune.heal_graph.heal_span` then inserts the map instead; the two are
separate because a fold's conditions are about the *reader*, an insertion's about the span.
Changed weights are added as new initializers (``…/healed``); the originals stay for the
dead-node cleanup to drop, and one kept in external data is mapped, not read whole.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from redaudit.prune.graph_edit import (
    add_initializer,
    attribute_value,
    initializer_values,
    sole_consumer,
)

_FoldInto = Callable[[onnx.GraphProto, onnx.NodeProto, str, np.ndarray, np.ndarray, np.dtype, str | None],
                     str | None]


def _fold_matmul(graph: onnx.GraphProto, node: onnx.NodeProto, entry: str, weight: np.ndarray, bias: np.ndarray,
                 dtype: np.dtype, folder: str | None) -> str | None:
    w = initializer_values(graph, node.input[1], folder) if node.input[0] != node.input[1] else None
    if w is None or w.ndim != 2:
        return None
    extra = bias @ w.astype(np.float64)
    add = sole_consumer(graph, node.output[0])
    bias_slot = None
    if np.any(extra != 0):
        if add is None or add.op_type != "Add":
            return None
        slot = 1 - list(add.input).index(node.output[0])
        c = initializer_values(graph, add.input[slot], folder)
        if c is None or c.shape != extra.shape:
            return None
        bias_slot = (add, slot, c)
    node.input[1] = add_initializer(graph, f"{node.input[1]}/healed", (weight @ w.astype(np.float64)).astype(dtype))
    node.input[0] = entry
    if bias_slot is not None:
        add, slot, c = bias_slot
        add.input[slot] = add_initializer(graph, f"{add.input[slot]}/healed", (c + extra).astype(dtype))
    return f"folded into MatMul {node.name or node.output[0]}"


def _fold_gemm(graph: onnx.GraphProto, node: onnx.NodeProto, entry: str, weight: np.ndarray, bias: np.ndarray,
               dtype: np.dtype, folder: str | None) -> str | None:
    b = initializer_values(graph, node.input[1], folder)
    alpha, beta = attribute_value(node, "alpha", 1.0), attribute_value(node, "beta", 1.0)
    if b is None or attribute_value(node, "transA", 0) != 0 or beta == 0:
        return None
    transposed = bool(attribute_value(node, "transB", 0))
    matrix = (b.T if transposed else b).astype(np.float64)
    extra = alpha / beta * (bias @ matrix)
    c = initializer_values(graph, node.input[2], folder) if len(node.input) > 2 and node.input[2] else np.zeros(0)
    if c is None or (c.size and np.broadcast_shapes(c.shape, extra.shape) != extra.shape):
        return None
    new_b = weight @ matrix
    node.input[1] = add_initializer(graph, f"{node.input[1]}/healed", (new_b.T if transposed else new_b).astype(dtype))
    new_c = (np.broadcast_to(c, extra.shape) if c.size else 0) + extra
    c_name = node.input[2] if len(node.input) > 2 and node.input[2] else f"{node.output[0]}/bias"
    if len(node.input) < 3:
        node.input.append("")
    node.input[2] = add_initializer(graph, f"{c_name}/healed", np.asarray(new_c).astype(dtype))
    node.input[0] = entry
    return f"folded into Gemm {node.name or node.output[0]}"


def _fold_conv(graph: onnx.GraphProto, node: onnx.NodeProto, entry: str, weight: np.ndarray, bias: np.ndarray,
               dtype: np.dtype, folder: str | None) -> str | None:
    w = initializer_values(graph, node.input[1], folder)
    pads = attribute_value(node, "pads", [])
    if (w is None or any(k != 1 for k in w.shape[2:]) or attribute_value(node, "group", 1) != 1
            or any(pads) or attribute_value(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID")):
        return None
    c = initializer_values(graph, node.input[2], folder) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
    if c is None:
        return None
    kernel = w.reshape(w.shape[0], w.shape[1]).astype(np.float64)  # (C_out, C_in)
    new_w = (kernel @ weight.T).reshape(w.shape[0], weight.shape[0], *w.shape[2:])
    node.input[1] = add_initializer(graph, f"{node.input[1]}/healed", new_w.astype(dtype))
    c_name = node.input[2] if len(node.input) > 2 and node.input[2] else f"{node.output[0]}/bias"
    if len(node.input) < 3:
        node.input.append("")
    node.input[2] = add_initializer(graph, f"{c_name}/healed", (c + kernel @ bias).astype(dtype))
    node.input[0] = entry
    return f"folded into Conv {node.name or node.output[0]}"


def _reduced_axes(graph: onnx.GraphProto, node: onnx.NodeProto, folder: str | None) -> list[int] | None:
    """The axes a ReduceMean averages over (attribute before opset 18, constant input after)."""
    if len(node.input) > 1 and node.input[1]:
        axes = initializer_values(graph, node.input[1], folder)
        return None if axes is None else [int(a) for a in np.ravel(axes)]
    return attribute_value(node, "axes", None)


def _fold_through_pool(graph: onnx.GraphProto, node: onnx.NodeProto, entry: str, weight: np.ndarray,
                       bias: np.ndarray, dtype: np.dtype, rank: int, folder: str | None) -> str | None:
    """A per-pixel channel map commutes with spatial averaging: GlobalAveragePool → Flatten, or a
    ReduceMean over every spatial axis (→ Flatten if it keeps them), then a MatMul/Gemm head.
    The map folds into the head's weight and the pool reads the entry (digits CNN: a head after
    the last block)."""
    spatial = set(range(2, rank))
    if node.op_type == "GlobalAveragePool":
        keeps = True
    elif node.op_type == "ReduceMean":
        axes = _reduced_axes(graph, node, folder)
        if axes is None or {a % rank for a in axes} != spatial:
            return None
        keeps = bool(attribute_value(node, "keepdims", 1))
    else:
        return None
    pooled = node.output[0]
    if keeps:
        flatten = sole_consumer(graph, pooled)
        if flatten is None or flatten.op_type != "Flatten" or attribute_value(flatten, "axis", 1) != 1:
            return None
        pooled = flatten.output[0]
    head = sole_consumer(graph, pooled)
    fold_into = {"MatMul": _fold_matmul, "Gemm": _fold_gemm}.get(head.op_type) if head is not None else None
    if fold_into is None or head.input[0] != pooled:
        return None
    how = fold_into(graph, head, pooled, weight, bias, dtype, folder)
    if how is None:
        return None
    node.input[0] = entry
    return f"{how} through {node.op_type}"


#: The readers a map folds into directly, by layout (``"last"``: features on the last axis).
_FOLDS: dict[str, dict[str, _FoldInto]] = {"last": {"MatMul": _fold_matmul, "Gemm": _fold_gemm},
                                           "channel": {"Conv": _fold_conv}}


def fold_map(graph: onnx.GraphProto, consumer: onnx.NodeProto, exit: str, entry: str, weight: np.ndarray,
             bias: np.ndarray, dtype: np.dtype, layout: str, rank: int, folder: str | None) -> str | None:
    """Fold ``exit = entry·weight + bias`` into ``consumer`` (the exit's sole reader, reading it as
    its first input) and make it read ``entry``; returns ``"folded into <op> <name>"`` (``"… through
    <pool>"`` past a spatial average), or None with ``graph`` unchanged when no fold applies.
    ``weight``/``bias`` are float64; ``dtype`` is the model's, the type new weights are stored in."""
    if consumer.input[0] != exit:
        return None
    fold_into = _FOLDS[layout].get(consumer.op_type)
    how = fold_into(graph, consumer, entry, weight, bias, dtype, folder) if fold_into else None
    if how is None and layout == "channel":
        how = _fold_through_pool(graph, consumer, entry, weight, bias, dtype, rank, folder)
    return how
