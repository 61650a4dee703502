"""Graph surgery for linear healing: replace the span entry → exit by ``exit = entry·T + b``.

The new value keeps the exit's *name*: the old producer's output is renamed so that it dies,
and every consumer, graph output and subgraph capture of the exit reads the healed value
without being touched. Then the nodes that became dead are deleted exactly as plain removal
does (:mod:`redaudit.prune.surgery`), so a healed model differs from a pruned one only by the
map. When the exit has a single consumer that is itself linear in it — MatMul or Gemm on the
last axis, a 1×1 Conv (no padding, one group) on channels — T and b are folded into that
consumer's weight and bias and the model gains no parameters — for channel maps also through a
spatial average (GlobalAveragePool → Flatten, or ReduceMean over H, W) into the MatMul/Gemm head
after it, since a per-pixel map commutes with averaging (:mod:`redaudit.prune.heal_fold`);
otherwise a MatMul + Add (last axis) or a 1×1 Conv (channels, axis 1) is inserted. With
``mixer`` (an attention tensor upstream of the entry, :mod:`redaudit.prune.heal_mix`) the map
reads ``[entry, P̄·entry]`` and is always inserted.
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper

from redaudit.prune import kv_cache
from redaudit.prune.errors import PruneError
from redaudit.prune.graph_edit import add_initializer, sole_consumer, unique_name
from redaudit.prune.heal_fold import fold_map
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


def _insert(graph, entry, exit_name, weight, bias, dtype, layout, rank) -> tuple[list, str]:
    if layout == "last":
        t = add_initializer(graph, f"{exit_name}/heal_T", weight.astype(dtype))
        b = add_initializer(graph, f"{exit_name}/heal_b", bias.astype(dtype))
        product = unique_name(graph, f"{exit_name}/heal_matmul")
        nodes = [helper.make_node("MatMul", [entry, t], [product], name=f"{exit_name}/heal_matmul"),
                 helper.make_node("Add", [product, b], [exit_name], name=f"{exit_name}/heal_add")]
        return nodes, "inserted MatMul+Add"
    kernel = weight.T.reshape(weight.shape[1], weight.shape[0], *([1] * (rank - 2)))
    w = add_initializer(graph, f"{exit_name}/heal_W", kernel.astype(dtype))
    b = add_initializer(graph, f"{exit_name}/heal_b", bias.astype(dtype))
    return [helper.make_node("Conv", [entry, w, b], [exit_name], name=f"{exit_name}/heal_conv")], "inserted 1x1 Conv"


def _insert_mix(healed: onnx.ModelProto, entry, mixer, exit_name, weight, bias, dtype) -> tuple[list, str]:
    graph = healed.graph
    if not any(mixer in node.output for node in graph.node):
        raise PruneError(f"cannot heal: attention tensor {mixer!r} is not computed in this model")
    width = weight.shape[0] // 2
    opset = next((o.version for o in healed.opset_import if o.domain in ("", "ai.onnx")), 17)
    nodes = mix_nodes(opset, entry, mixer, exit_name,
                      add_initializer(graph, f"{exit_name}/heal_T", weight[:width].astype(dtype)),
                      add_initializer(graph, f"{exit_name}/heal_T_mix", weight[width:].astype(dtype)),
                      add_initializer(graph, f"{exit_name}/heal_b", bias.astype(dtype)),
                      lambda base: unique_name(graph, base))
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
    old.output[list(old.output).index(exit)] = unique_name(graph, f"{exit}/healed_dead")
    how = None
    if mixer is not None:
        if layout != "last" or rank != 3 or weight.shape[0] != 2 * weight.shape[1]:
            raise PruneError(f"cannot heal {exit!r} with an attention mix: it needs tokens (batch, seq, "
                             f"features) and a (2D, D) map, got rank {rank} and {weight.shape}")
        nodes, how = _insert_mix(healed, entry, mixer, exit, weight, bias, dtype)
        for offset, node in enumerate(nodes):
            graph.node.insert(position + offset, node)
    consumer = sole_consumer(graph, exit) if fold and how is None else None
    if consumer is not None:
        how = fold_map(graph, consumer, exit, entry, weight, bias, dtype, layout, rank, folder)
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
