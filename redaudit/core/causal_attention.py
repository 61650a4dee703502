"""Whether a model's attention is causal: what makes its transformer layers *decoder* layers.

A question about the whole graph, not about any one layer, so it is answered apart from unit
detection (:mod:`redaudit.core.units`, which only names its layers by the answer). Exporters
leave no flag saying "decoder": the evidence is a key/value cache among the graph's inputs or
outputs, the causal mask built in the graph (a Trilu, or two position ranges compared), or a
fused attention op that is causal by its attributes or by definition.
"""
from __future__ import annotations

import onnx

from redaudit.core.graph import GraphIndex

_COMPARISONS = frozenset({"Less", "LessOrEqual", "Greater", "GreaterOrEqual"})
_CACHE_WORDS = ("past_key_values", "past_key", "past_value", "present")


def is_causal(index: GraphIndex) -> bool:
    """Whether the attention is causal: a key/value cache among the graph's inputs/outputs, a
    Trilu, a comparison of two position ranges (how exporters build a causal mask), or a fused
    attention that says so (onnxruntime's ``Attention`` with ``unidirectional=1``; its
    ``GroupQueryAttention`` is a decoder's only)."""
    names = [*index.graph_inputs, *index.graph_outputs]
    if any(word in name.lower() for name in names for word in _CACHE_WORDS):
        return True
    ranges = {node.output[0] for node in index.nodes if node.op_type == "Range" and node.output}
    for node in index.nodes:
        if node.op_type == "Trilu" or _fused_causal(node):
            return True
        if node.op_type in _COMPARISONS and len(node.input) == 2 and all(
                _reaches(index, name, ranges) for name in node.input):
            return True
    return False


def _fused_causal(node: onnx.NodeProto) -> bool:
    if node.domain != "com.microsoft":
        return False
    if node.op_type == "GroupQueryAttention":
        return True
    return node.op_type == "Attention" and any(
        attr.name == "unidirectional" and attr.i == 1 for attr in node.attribute)


def _reaches(index: GraphIndex, tensor: str, targets: set[str], depth: int = 12) -> bool:
    """Whether ``tensor`` is computed from one of ``targets`` within ``depth`` steps."""
    frontier = [tensor]
    for _ in range(depth):
        following = []
        for name in frontier:
            if name in targets:
                return True
            node = index.node_of(name)
            if node is not None:
                following.extend(item for item in node.input if item)
        frontier = following
        if not frontier:
            return False
    return False
