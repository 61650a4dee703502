"""Graph surgery for linear healing: replace the span entry → exit by ``exit = entry·T + b``.

The new value keeps the exit's *name*: the old producer's output is renamed so that it dies,
and every consumer, graph output and subgraph capture of the exit reads the healed value
without being touched. Then the nodes that became dead are deleted exactly as plain removal
does (:mod:`redaudit.prune.surgery`), so a healed model differs from a pruned one only by the
map. When the exit has a single consumer that is itself linear in it — MatMul or Gemm on the
last axis, a 1×1 Conv (no padding, one group) on channels — T and b are folded into that
consumer's weight and bias and the model gains no parameters — for channel maps also through a
spatial average (GlobalAveragePool → Flatten, or ReduceMean over H, W) into the MatMul/Gemm head
after it, since a per-pixel map commutes with averaging; otherwise a MatMul + Add (last axis) or
a 1×1 Conv (channels, axis 1) is inserted. With ``mixer`` (an attention tensor upstream of
the entry, :mod:`redaudit.prune.heal_mix`) the map reads ``[entry, P̄·entry]`` and is always
inserted.
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from redaudit.prune import kv_cache
from redaudit.core.weights import tensor_array
from redaudit.prune.errors import PruneError
from redaudit.prune.heal_mix import mix_nodes
from redaudit.prune.surgery import (
    _drop_dead,
    _live_nodes,
    _node_key,
    check_model,
)

LAYOUTS = ("last", "channel")


def default_layout(rank: int) -> str:
    """Rank ≥ 4 activations are NCHW-like maps (channels on axis 1); tokens and vectors are
    (..., D) with features last. Rank-3 Conv1d maps need ``layout="channel"`` explicitly."""
    return "channel" if rank >= 4 else "last"


def _tensor_info(model: onnx.ModelProto, name: str) -> tuple[int, int | None]:
    """(element type, rank) of a tensor, by shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        if info.name == name and info.type.HasField("tensor_type"):
            tensor = info.type.tensor_type
            rank = len(tensor.shape.dim) if tensor.HasField("shape") else None
            return tensor.elem_type, rank
    raise PruneError(f"cannot heal: the type of tensor {name!r} is unknown (shape inference gives none)")


def _initializer(graph: onnx.GraphProto, name: str, folder: str | None) -> np.ndarray | None:
    """An initializer's values; one kept in external data is mapped from ``folder``, not read
    whole: a fold reads just the weight it changes."""
    for init in graph.initializer:
        if init.name == name:
            return tensor_array(init, folder)
    return None


def _unique(graph: onnx.GraphProto, base: str) -> str:
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    name, count = base, 1
    while name in taken:
        name, count = f"{base}_{count}", count + 1
    return name


def _add_init(graph: onnx.GraphProto, base: str, array: np.ndarray) -> str:
    name = _unique(graph, base)
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    return name


def _attr(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for position, attr in enumerate(node.attribute):
        if attr.name == name:
            del node.attribute[position]
            break
    node.attribute.append(helper.make_attribute(name, value))


def _sole_consumer(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    if tensor in {out.name for out in graph.output}:
        return None
    readers = [node for node in graph.node if tensor in node.input]
    if len(readers) != 1 or list(readers[0].input).count(tensor) != 1:
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in readers[0].attribute):
        return None
    return readers[0]


def _fold_matmul(graph, node, entry, weight, bias, dtype, folder) -> str | None:
    w = _initializer(graph, node.input[1], folder) if node.input[0] != node.input[1] else None
    if w is None or w.ndim != 2:
        return None
    extra = bias @ w.astype(np.float64)
    add = _sole_consumer(graph, node.output[0])
    bias_slot = None
    if np.any(extra != 0):
        if add is None or add.op_type != "Add":
            return None
        slot = 1 - list(add.input).index(node.output[0])
        c = _initializer(graph, add.input[slot], folder)
        if c is None or c.shape != extra.shape:
            return None
        bias_slot = (add, slot, c)
    node.input[1] = _add_init(graph, f"{node.input[1]}/healed", (weight @ w.astype(np.float64)).astype(dtype))
    node.input[0] = entry
    if bias_slot is not None:
        add, slot, c = bias_slot
        add.input[slot] = _add_init(graph, f"{add.input[slot]}/healed", (c + extra).astype(dtype))
    return f"folded into MatMul {node.name or node.output[0]}"


def _fold_gemm(graph, node, entry, weight, bias, dtype, folder) -> str | None:
    b = _initializer(graph, node.input[1], folder)
    alpha, beta = _attr(node, "alpha", 1.0), _attr(node, "beta", 1.0)
    if b is None or _attr(node, "transA", 0) != 0 or beta == 0:
        return None
    transposed = bool(_attr(node, "transB", 0))
    matrix = (b.T if transposed else b).astype(np.float64)
    extra = alpha / beta * (bias @ matrix)
    c = _initializer(graph, node.input[2], folder) if len(node.input) > 2 and node.input[2] else np.zeros(0)
    if c is None or (c.size and np.broadcast_shapes(c.shape, extra.shape) != extra.shape):
        return None
    new_b = weight @ matrix
    node.input[1] = _add_init(graph, f"{node.input[1]}/healed", (new_b.T if transposed else new_b).astype(dtype))
    new_c = (np.broadcast_to(c, extra.shape) if c.size else 0) + extra
    c_name = node.input[2] if len(node.input) > 2 and node.input[2] else f"{node.output[0]}/bias"
    if len(node.input) < 3:
        node.input.append("")
    node.input[2] = _add_init(graph, f"{c_name}/healed", np.asarray(new_c).astype(dtype))
    node.input[0] = entry
    return f"folded into Gemm {node.name or node.output[0]}"


def _fold_conv(graph, node, entry, weight, bias, dtype, folder) -> str | None:
    w = _initializer(graph, node.input[1], folder)
    pads = _attr(node, "pads", [])
    if (w is None or any(k != 1 for k in w.shape[2:]) or _attr(node, "group", 1) != 1
            or any(pads) or _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID")):
        return None
    c = _initializer(graph, node.input[2], folder) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
    if c is None:
        return None
    kernel = w.reshape(w.shape[0], w.shape[1]).astype(np.float64)  # (C_out, C_in)
    new_w = (kernel @ weight.T).reshape(w.shape[0], weight.shape[0], *w.shape[2:])
    node.input[1] = _add_init(graph, f"{node.input[1]}/healed", new_w.astype(dtype))
    c_name = node.input[2] if len(node.input) > 2 and node.input[2] else f"{node.output[0]}/bias"
    if len(node.input) < 3:
        node.input.append("")
    node.input[2] = _add_init(graph, f"{c_name}/healed", (c + kernel @ bias).astype(dtype))
    node.input[0] = entry
    return f"folded into Conv {node.name or node.output[0]}"


def _reduced_axes(graph, node, folder) -> list[int] | None:
    """The axes a ReduceMean averages over (attribute before opset 18, constant input after)."""
    if len(node.input) > 1 and node.input[1]:
        axes = _initializer(graph, node.input[1], folder)
        return None if axes is None else [int(a) for a in np.ravel(axes)]
    return _attr(node, "axes", None)


def _fold_through_pool(graph, node, entry, weight, bias, dtype, rank, folder) -> str | None:
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
        keeps = bool(_attr(node, "keepdims", 1))
    else:
        return None
    pooled = node.output[0]
    if keeps:
        flatten = _sole_consumer(graph, pooled)
        if flatten is None or flatten.op_type != "Flatten" or _attr(flatten, "axis", 1) != 1:
            return None
        pooled = flatten.output[0]
    head = _sole_consumer(graph, pooled)
    fold_into = {"MatMul": _fold_matmul, "Gemm": _fold_gemm}.get(head.op_type) if head is not None else None
    if fold_into is None or head.input[0] != pooled:
        return None
    how = fold_into(graph, head, pooled, weight, bias, dtype, folder)
    if how is None:
        return None
    node.input[0] = entry
    return f"{how} through {node.op_type}"


def _insert(graph, entry, exit_name, weight, bias, dtype, layout, rank) -> tuple[list, str]:
    if layout == "last":
        t = _add_init(graph, f"{exit_name}/heal_T", weight.astype(dtype))
        b = _add_init(graph, f"{exit_name}/heal_b", bias.astype(dtype))
        product = _unique(graph, f"{exit_name}/heal_matmul")
        nodes = [helper.make_node("MatMul", [entry, t], [product], name=f"{exit_name}/heal_matmul"),
                 helper.make_node("Add", [product, b], [exit_name], name=f"{exit_name}/heal_add")]
        return nodes, "inserted MatMul+Add"
    kernel = weight.T.reshape(weight.shape[1], weight.shape[0], *([1] * (rank - 2)))
    w = _add_init(graph, f"{exit_name}/heal_W", kernel.astype(dtype))
    b = _add_init(graph, f"{exit_name}/heal_b", bias.astype(dtype))
    return [helper.make_node("Conv", [entry, w, b], [exit_name], name=f"{exit_name}/heal_conv")], "inserted 1x1 Conv"


def _insert_mix(healed: onnx.ModelProto, entry, mixer, exit_name, weight, bias, dtype) -> tuple[list, str]:
    graph = healed.graph
    if not any(mixer in node.output for node in graph.node):
        raise PruneError(f"cannot heal: attention tensor {mixer!r} is not computed in this model")
    width = weight.shape[0] // 2
    opset = next((o.version for o in healed.opset_import if o.domain in ("", "ai.onnx")), 17)
    nodes = mix_nodes(opset, entry, mixer, exit_name,
                      _add_init(graph, f"{exit_name}/heal_T", weight[:width].astype(dtype)),
                      _add_init(graph, f"{exit_name}/heal_T_mix", weight[width:].astype(dtype)),
                      _add_init(graph, f"{exit_name}/heal_b", bias.astype(dtype)),
                      lambda base: _unique(graph, base))
    return nodes, "inserted attention mix"


def heal_span(model: onnx.ModelProto, entry: str, exit: str, weight: np.ndarray, bias: np.ndarray,
              layout: str | None = None, fold: bool = True, mixer: str | None = None,
              folder: str | None = None) -> tuple[onnx.ModelProto, str]:
    """A checked copy of ``model`` in which ``exit`` is computed as ``entry·weight + bias`` (on the
    last axis, or per pixel on axis 1 for ``layout="channel"``) and whatever only fed the old exit
    is deleted. ``model`` still contains the span (the original, or one already healed elsewhere).
    Returns the model and how the map went in: ``"folded into <op> <name>"`` or ``"inserted …"``.
    ``mixer``: the map's rows are ``[entry, mean_heads(mixer)·entry]`` (weight (2D, D)).
    ``folder``: where ``model``'s external tensors live (a fold maps the weight it changes from
    there); the copy keeps them external and adds the new, changed weights inline.
    """
    graph_in = model.graph
    producers = {name: p for p, node in enumerate(graph_in.node) for name in node.output if name}
    if exit not in producers:
        raise PruneError(f"cannot heal: {exit!r} is not computed by any node")
    dtype_code, rank = _tensor_info(model, entry)
    if rank is None:
        raise PruneError(f"cannot heal: the rank of {entry!r} is unknown")
    layout = layout or default_layout(rank)
    if layout not in LAYOUTS:
        raise PruneError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    dtype = helper.tensor_dtype_to_np_dtype(dtype_code)
    weight, bias = np.asarray(weight, np.float64), np.asarray(bias, np.float64)
    healed = copy.deepcopy(model)
    graph = healed.graph
    live = _live_nodes(graph)
    dead_before = {_node_key(node) for p, node in enumerate(graph.node) if p not in live}
    # Refuse a cycle: the entry must not depend on the exit.
    stack, seen = [entry], set()
    while stack:
        name = stack.pop()
        if name == exit:
            raise PruneError(f"cannot heal: entry {entry!r} is computed from exit {exit!r}")
        position = producers.get(name)
        if position is not None and position not in seen:
            seen.add(position)
            stack.extend(graph.node[position].input)
    feeding = kv_cache.feeding_cache_outputs(graph)
    position = producers[exit]
    old = graph.node[position]
    old.output[list(old.output).index(exit)] = _unique(graph, f"{exit}/healed_dead")
    how = None
    if mixer is not None:
        if layout != "last" or rank != 3 or weight.shape[0] != 2 * weight.shape[1]:
            raise PruneError(f"cannot heal {exit!r} with an attention mix: it needs tokens (batch, seq, "
                             f"features) and a (2D, D) map, got rank {rank} and {weight.shape}")
        nodes, how = _insert_mix(healed, entry, mixer, exit, weight, bias, dtype)
        for offset, node in enumerate(nodes):
            graph.node.insert(position + offset, node)
    consumer = _sole_consumer(graph, exit) if fold and how is None else None
    if consumer is not None:
        fold_ops = {"last": {"MatMul": _fold_matmul, "Gemm": _fold_gemm}, "channel": {"Conv": _fold_conv}}[layout]
        fold_into = fold_ops.get(consumer.op_type) if consumer.input[0] == exit else None
        how = fold_into(graph, consumer, entry, weight, bias, dtype, folder) if fold_into else None
        if how is None and layout == "channel" and consumer.input[0] == exit:
            how = _fold_through_pool(graph, consumer, entry, weight, bias, dtype, rank, folder)
    if how is None:
        nodes, how = _insert(graph, entry, exit, weight, bias, dtype, layout, rank)
        for offset, node in enumerate(nodes):
            graph.node.insert(position + offset, node)
    removed_layers = kv_cache.layers_of(kv_cache.drop_orphaned_outputs(graph, feeding))
    _drop_dead(graph, dead_before)
    if removed_layers:  # a decoder layer's KV cache goes with it, as in plain removal
        kv_cache.tidy_inputs(graph, removed_layers)
        _drop_dead(graph, dead_before)
    check_model(healed)
    return healed, how
