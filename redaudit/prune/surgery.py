"""Remove blocks from an ONNX model: rewire, delete what died, verify the result is valid.

Edits are small and explicit (in the spirit of onnx-graphsurgeon): consumers of a block's exit
read its entry instead; a graph output that was the exit is kept under its name by an Identity;
then exactly the nodes that were live before and are dead now are deleted, with the initializers
and value_info entries nobody refers to any more. Every other node, tensor and initializer keeps
its name; opset imports and metadata are untouched, and so are inputs and outputs — except a
decoder's KV cache: a removed layer's ``present.N.*`` outputs and ``past_key_values.N.*`` inputs
go with it and the kept layers' are renumbered (:mod:`redaudit.prune.kv_cache`). The result must pass
``onnx.checker`` with ``full_check`` (which includes strict shape inference).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import onnx
from onnx import helper

from redaudit.core.weights import without_external_data
from redaudit.prune import kv_cache
from redaudit.prune.errors import PruneError
from redaudit.prune.candidates import Block, block_region
from redaudit.core.graph import GraphIndex, node_bodies, node_inputs


def _live_nodes(graph: onnx.GraphProto) -> set[int]:
    """Positions of the nodes some graph output depends on."""
    producer = {name: position for position, node in enumerate(graph.node)
                for name in node.output if name}
    live: set[int] = set()
    stack = [out.name for out in graph.output]
    while stack:
        position = producer.get(stack.pop())
        if position is None or position in live:
            continue
        live.add(position)
        stack.extend(name for name in node_inputs(graph.node[position]) if name)
    return live


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name == old:
                node.input[slot] = new
        for body in node_bodies(node):
            _rename_input(body, old, new)


def _bypass(graph: onnx.GraphProto, block: Block) -> None:
    """Make everything downstream read ``block.entry`` where it read ``block.exit``."""
    outputs = {out.name for out in graph.output}
    _rename_input(graph, block.exit, block.entry)
    if block.exit not in outputs:
        return
    # Keep the output's name (callers bind to it): the exit becomes a copy of the entry, made
    # where the block's last node was; that node's output is renamed so that it dies.
    for position, node in enumerate(graph.node):
        if block.exit in node.output:
            slot = list(node.output).index(block.exit)
            node.output[slot] = f"{block.exit}/pruned_dead"
            identity = helper.make_node("Identity", [block.entry], [block.exit],
                                        name=f"{block.exit}/pruned_identity")
            graph.node.insert(position + 1, identity)
            return


def _drop_dead(graph: onnx.GraphProto, dead_before: set[str]) -> None:
    """Delete nodes that are dead now but were not dead in the original model (dead code the
    original carried is none of pruning's business), then orphaned initializers/value_info."""
    live_now = _live_nodes(graph)
    keep = [node for position, node in enumerate(graph.node)
            if position in live_now or _node_key(node) in dead_before]
    del graph.node[:]
    graph.node.extend(keep)
    used = {name for node in graph.node for name in node_inputs(node)}
    used |= {out.name for out in graph.output}
    produced = {name for node in graph.node for name in node.output}
    initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    infos = [info for info in graph.value_info if info.name in produced or info.name in used]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def _node_key(node: onnx.NodeProto) -> str:
    """Nodes have optional names; their first output name is unique in a valid graph."""
    return next((name for name in node.output if name), node.name)


def check_model(model: onnx.ModelProto) -> None:
    """Full ONNX check (with strict shape inference); raises :class:`PruneError` on failure.
    External tensors are checked as graph inputs of their type (:func:`without_external_data`):
    the graph is what surgery changed, and their files are checked where the model is written."""
    checkable = without_external_data(model)
    try:
        if checkable.ByteSize() < 2**31 - 1:
            onnx.checker.check_model(checkable, full_check=True)
        else:  # the checker needs a path for protos over 2 GiB; check structure, infer separately
            onnx.checker.check_model(checkable)
        onnx.shape_inference.infer_shapes(checkable, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PruneError(f"pruned model fails the ONNX checker: {first_line}") from error


def remove_blocks(model: onnx.ModelProto, blocks: Sequence[Block]) -> onnx.ModelProto:
    """A copy of ``model`` with ``blocks`` removed, checked. Blocks are re-validated against
    the graph as it is after each earlier removal, so any non-overlapping set is accepted."""
    if not blocks:
        raise PruneError("no block selected for removal")
    pruned = copy.deepcopy(model)
    graph = pruned.graph
    live = _live_nodes(graph)
    dead_before = {_node_key(node) for p, node in enumerate(graph.node) if p not in live}
    renamed: dict[str, str] = {}  # exit of a removed block -> the tensor that replaced it
    removed_layers: set[int] = set()  # KV-cache layer numbers whose present outputs went
    for block in blocks:
        entry = block.entry
        while entry in renamed:
            entry = renamed[entry]
        index = GraphIndex.build(pruned, types={})
        if block.exit not in index.producer or block_region(index, entry, block.exit) is None:
            raise PruneError(f"block {block.name!r} cannot be removed together with the others "
                             "(it overlaps one of them)")
        feeding = kv_cache.feeding_cache_outputs(graph)
        _bypass(graph, Block(block.name, entry, block.exit, block.kind, (), ()))
        if block.exit not in index.graph_outputs:
            renamed[block.exit] = entry
        removed_layers |= kv_cache.layers_of(kv_cache.drop_orphaned_outputs(graph, feeding))
        _drop_dead(graph, dead_before)
    kv_cache.tidy_inputs(graph, removed_layers)
    _drop_dead(graph, dead_before)
    check_model(pruned)
    return pruned
