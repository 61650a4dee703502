"""Whether a residual branch's attention attends to a memory — a cross-attention — rather than
to its own input: what tells T5's ``layer.1`` or BART's ``encoder_attn`` from a self-attention,
so that unit detection (:mod:`redaudit.core.units`) groups the three halves of an
encoder-decoder layer (self-attention, cross-attention, MLP) as one layer.

Asked of one branch's nodes and their data dependence on the branch's input only; the memory
itself (an encoder's output, a graph input, a cached ``past_key_values.N.encoder.*``) is never
named, so any exporter's names work.
"""
from __future__ import annotations

from redaudit.core.blocks import ATTENTION_OPS, ResidualMerge
from redaudit.core.dataflow import data_ancestry, weighted_attention
from redaudit.core.graph import SHAPE_ONLY_OPS, GraphIndex

#: Products of two data tensors: attention scores ``q·kᵀ`` and the weighted sum ``p·v``.
_PRODUCT_OPS = frozenset({"MatMul", "Einsum"})


def data_computed(index: GraphIndex) -> set[str]:
    """Every tensor some graph input's *data* computes (shape arithmetic excluded): what a memory
    is made of — an encoder's output, ``encoder_hidden_states``, a cached encoder past. A tensor
    outside it comes from weights and shapes alone (a relative-position projection of
    ``Range(Shape(x))``) and belongs to no sample."""
    bit_of, masks = data_ancestry(index)
    inputs = 0
    for name in index.graph_inputs:
        inputs |= 1 << bit_of[name]
    return {name for name, mask in masks.items() if mask & inputs}


def attends_to_memory(index: GraphIndex, merge: ResidualMerge, computed: set[str] | None = None) -> bool:
    """Whether the branch's attention is a cross-attention: its queries are computed from the
    block input and its keys or values are not (an encoder's output, a graph input, a cached
    ``past_key_values.N.encoder.*``). Shown by a product of two data tensors (``q·kᵀ``, ``p·v``)
    of which one depends on the block input and the other does not, or a fused attention op
    whose query does and whose key does not. A self-attention's keys depend on the input even
    with a cache (``concat(past, k(x))``); shape arithmetic is no dependence (a cross-attention
    reshapes its keys with the query's batch size). The other operand must be computed from a
    graph input's data (:func:`data_computed`, ``computed`` when the caller has it): a
    relative-position term ``q · posᵀ`` (Transformer-XL, XLNet, conformers) is a self-attention's."""
    computed = data_computed(index) if computed is None else computed
    derived = {merge.entry}
    for position in sorted(merge.branch_nodes):
        node = index.nodes[position]
        if node.op_type in SHAPE_ONLY_OPS:
            continue
        data = [name for name in node.input if name and name not in index.constants]
        reads = [name in derived for name in data]
        if node.op_type in _PRODUCT_OPS and len(data) == 2 and any(reads) and not all(reads) \
                and data[reads.index(False)] in computed:
            return True
        if node.op_type in ATTENTION_OPS and not weighted_attention(node) and len(node.input) > 1 \
                and node.input[0] in derived and node.input[1] and node.input[1] not in derived \
                and node.input[1] in computed:
            return True
        if any(reads):
            derived.update(name for name in node.output if name)
    return False
