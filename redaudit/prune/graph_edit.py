"""Small in-place edits of an ONNX graph that healing's two ways of putting a map in share.

Inserting a map (:mod:`redaudit.prune.heal_graph`) and folding it into the next linear op
(:mod:`redaudit.prune.heal_fold`) both add initializers under names nothing else uses and ask
whether a tensor has exactly one reader; folding also reads the reader's weights and attributes.
These are those primitives, written once, on ``onnx.GraphProto`` directly: healing edits a copy
of the model in place, and :class:`redaudit.core.graph.GraphIndex` is a read-only view.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from redaudit.core.weights import tensor_array


def initializer_values(graph: onnx.GraphProto, name: str, folder: str | None) -> np.ndarray | None:
    """An initializer's values; one kept in external data is mapped from ``folder``, not read
    whole: a fold reads just the weight it changes."""
    for init in graph.initializer:
        if init.name == name:
            return tensor_array(init, folder)
    return None


def unique_name(graph: onnx.GraphProto, base: str) -> str:
    """``base``, or ``base_1``, ``base_2`` … — the first name no initializer or node output of
    ``graph`` has yet, so an added tensor never shadows an existing one."""
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    name, count = base, 1
    while name in taken:
        name, count = f"{base}_{count}", count + 1
    return name


def add_initializer(graph: onnx.GraphProto, base: str, array: np.ndarray) -> str:
    """Append ``array`` as a new inline initializer (in its own dtype: callers cast it to the
    model's) under a fresh name derived from ``base``; returns that name."""
    name = unique_name(graph, base)
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    return name


def attribute_value(node: onnx.NodeProto, name: str, default: Any) -> Any:
    """A node attribute's value, or ``default`` where the node leaves it to the op's default."""
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def sole_consumer(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    """The one node that reads ``tensor``, in one input slot, or None: when it is a graph output,
    has several readers, is read twice by one node, or is read by a node with subgraphs (which
    may capture it). Only then may that reader be rewritten to read something else."""
    if tensor in {out.name for out in graph.output}:
        return None
    readers = [node for node in graph.node if tensor in node.input]
    if len(readers) != 1 or list(readers[0].input).count(tensor) != 1:
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in readers[0].attribute):
        return None
    return readers[0]
