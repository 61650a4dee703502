"""Optimum's merged decoder (``decoder_model_merged.onnx``) built from a flat cached export.

The layout (optimum ``merge_decoders``; every transformers.js LLM ships it): one top-level ``If``
on a bool graph input ``use_cache_branch`` of shape (1,); its then-branch is the decoder with
past, its else-branch the decoder without; the weights stay outer-graph initializers that both
branches read by name. Here both branches are copies of the cached graph (the else-branch is
then driven with an empty past too, which is what the no-past decoder computes); a branch's
names get ``prefix`` (optimum keeps the exporter's names: ``then_prefix=""``, and the branch's
outputs then carry the If's output names). ``own`` moves outer initializers into the branches
(each branch its copy, under the branch's prefix): a branch holding initializers of its own.
"""
from __future__ import annotations

import copy

import onnx
from onnx import TensorProto, helper

CONDITION = "use_cache_branch"


def _branch(graph: onnx.GraphProto, prefix: str, own: set[str]) -> onnx.GraphProto:
    rename = {name: prefix + name for node in graph.node for name in node.output if name}
    rename.update({name: prefix + name for name in own})
    nodes = []
    for node in graph.node:
        moved = copy.deepcopy(node)
        moved.input[:] = [rename.get(name, name) for name in moved.input]
        moved.output[:] = [rename.get(name, name) for name in moved.output]
        moved.name = prefix + moved.name
        nodes.append(moved)
    outputs = []
    for value in graph.output:
        moved = copy.deepcopy(value)
        moved.name = rename.get(value.name, value.name)
        outputs.append(moved)
    initializers = []
    for tensor in graph.initializer:
        if tensor.name in own:
            moved = copy.deepcopy(tensor)
            moved.name = rename[tensor.name]
            initializers.append(moved)
    return helper.make_graph(nodes, f"{prefix or 'with_past'}branch", [], outputs, initializers)


def merge(cached: onnx.ModelProto, then_prefix: str = "with_past/", else_prefix: str = "no_past/",
          own: tuple[str, ...] = ()) -> onnx.ModelProto:
    """The merged decoder of the flat cached export ``cached`` (see the module docstring)."""
    graph = cached.graph
    moved = set(own)
    then_branch = _branch(graph, then_prefix, moved)
    else_branch = _branch(graph, else_prefix, moved)
    condition = helper.make_tensor_value_info(CONDITION, TensorProto.BOOL, [1])
    node = helper.make_node("If", [CONDITION], [value.name for value in graph.output], name="optimum::if",
                            then_branch=then_branch, else_branch=else_branch)
    outer = helper.make_graph([node], "merged", [*graph.input, condition], list(graph.output),
                              [tensor for tensor in graph.initializer if tensor.name not in moved])
    merged = helper.make_model(outer, opset_imports=cached.opset_import, ir_version=cached.ir_version)
    return merged
