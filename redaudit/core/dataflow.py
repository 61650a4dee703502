"""Data paths and weights: what every structural detector (residual blocks, recurrences, units)
asks of a graph before it decides anything.

:func:`data_ancestry` gives each activation tensor the set of tensors it is computed from along
data edges (Shape/Size edges excluded); :func:`is_weighted` says whether a node holds learned
parameters. Both read only the :class:`~redaudit.core.graph.GraphIndex` (and, for onnxruntime's
fused skip-norms, :mod:`redaudit.core.fused`); blocks and recurrence build on this module, it
imports neither.
"""
from __future__ import annotations

import onnx

from redaudit.core.fused import SUM_OUTPUT, is_fused_skip_norm
from redaudit.core.graph import SHAPE_ONLY_OPS, GraphIndex

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "ConvInteger", "MatMulInteger",
                          "QLinearConv", "QLinearMatMul", "FusedConv", "FusedMatMul", "LSTM", "GRU", "RNN"})
#: onnxruntime's fused attention (com.microsoft) that holds its packed QKV weights (ONNX's own
#: Attention takes projected Q, K, V): input 0 is the hidden state; the others are weights, the
#: mask and a cache — not what the layer is a function of.
_WEIGHTED_ATTENTION = frozenset({"Attention"})


def is_weighted(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """A node with learned parameters (a weight initializer, not only an activation) of an op
    that carries them: what makes a branch a layer and a step of an unrolled recurrence."""
    return (node.op_type in WEIGHTED_OPS or weighted_attention(node)) and index.has_weight(node)


def weighted_attention(node: onnx.NodeProto) -> bool:
    """onnxruntime's fused Attention, whose input 0 alone is data (the rest: weights, mask, cache)."""
    return node.op_type in _WEIGHTED_ATTENTION and node.domain == "com.microsoft"


def data_ancestry(index: GraphIndex) -> tuple[dict[str, int], dict[str, int]]:
    """Bit per activation tensor and, per tensor, a bitmask of the tensors it depends on through
    data edges (itself included). One pass in topological order; Python ints as bitsets."""
    bit_of: dict[str, int] = {}
    masks: dict[str, int] = {}
    for name in index.graph_inputs:
        bit_of[name] = len(bit_of)
        masks[name] = 1 << bit_of[name]
    for node in index.nodes:
        inherited = 0
        if node.op_type not in SHAPE_ONLY_OPS:
            for name in node.input:
                inherited |= masks.get(name, 0)
        outputs = list(node.output)
        if is_fused_skip_norm(node) and len(outputs) > SUM_OUTPUT and outputs[SUM_OUTPUT] in index.activations:
            # the sum first, and the norm computed from it, as in the unfused graph: a branch that
            # reads output 0 then diverges from the stream at the sum (the block input)
            total = outputs.pop(SUM_OUTPUT)
            bit_of[total] = len(bit_of)
            masks[total] = inherited = inherited | (1 << bit_of[total])
        for name in outputs:
            if name and name in index.activations:
                bit_of[name] = len(bit_of)
                masks[name] = inherited | (1 << bit_of[name])
    return bit_of, masks
