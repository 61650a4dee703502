"""The one rule for layers a scan cannot see: a top-level ``If``/``Loop``/``Scan`` whose body
holds weighted layers that were not inlined at load (:mod:`redaudit.core.branches` inlines only an
``If`` on a graph input of known value) is named in one line — which node, how many layers, and
why they stay invisible. Tensors inside a body cannot be tapped (onnxruntime fetches only
main-graph tensors), so without this a model whose compute lives in a body would be scanned on
whatever little its main graph holds, silently. Tap selection warns with these lines, or puts
them in its error when no tap is left.
"""
from __future__ import annotations

import onnx

from redaudit.core.dataflow import WEIGHTED_OPS
from redaudit.core.graph import SUBGRAPH_OPS, node_bodies


def hidden_layer_notes(model: onnx.ModelProto) -> list[str]:
    """One line per top-level If/Loop/Scan whose body holds weighted layers (a weighted operator
    reading an initializer): those layers cannot be tapped, compared or pruned."""
    graph = model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = {value.name for value in graph.input if value.name not in initializers}
    notes = []
    for position, node in enumerate(graph.node):
        if node.op_type not in SUBGRAPH_OPS or node.domain not in ("", "ai.onnx"):
            continue
        count = max((_weighted_layers(body, initializers) for body in node_bodies(node)), default=0)
        if not count:
            continue
        label = node.name or f"{node.op_type} #{position}"
        if node.op_type == "If":
            condition = node.input[0] if node.input else ""
            why = (f"its condition {condition!r} is a graph input of no known value" if condition in inputs
                   else f"its condition {condition!r} is computed in the graph, not a graph input")
        else:
            why = f"a {node.op_type} body runs per iteration"
        notes.append(f"{node.op_type} node {label!r} holds {count} weighted layer(s) in its subgraph, which cannot "
                     f"be tapped or pruned: {why}")
    return notes


def _weighted_layers(body: onnx.GraphProto, outer: set[str]) -> int:
    """Weighted operators reading a weight of the body or of the scopes around it (nested bodies
    included; the largest branch of each nested node counts)."""
    weights = outer | {tensor.name for tensor in body.initializer}
    count = 0
    for node in body.node:
        if node.op_type in WEIGHTED_OPS and any(name in weights for name in node.input):
            count += 1
        count += max((_weighted_layers(inner, weights) for inner in node_bodies(node)), default=0)
    return count
