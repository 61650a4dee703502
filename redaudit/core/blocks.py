"""The one block detector: residual merges, as scan taps them and prune removes them.

A residual merge is an Add ``y = s(x) + f(x)`` of two operands whose data paths (Shape/Size
edges excluded) diverge at one tensor ``x``, the block's input, where the branch holds a
weighted operator (Conv, MatMul, Gemm... with learned parameters) and ``y`` has the rank of ``x``.
That excludes ``x + 0.044715·x³`` inside a decomposed tanh-GELU (no weight on the branch) and
an attention mask added to attention scores (the mask's data does not come from ``x``; it
shares only shape arithmetic with it). The skip ``s`` is the identity when one operand is ``x``
itself: only such blocks can be removed (``y = x`` afterwards); projection shortcuts (ResNet
downsampling) are blocks for scanning but not removable.

A block's IR — its name everywhere, in scan results, prune candidates and history — is the
merge's output extended through its trailing elementwise chain (bias, norm, activation,
decomposed GELU): :func:`chain_end`.

onnxruntime's transformer optimizer fuses ``Add + LayerNormalization`` into one
``SkipLayerNormalization`` (:mod:`redaudit.core.fused`): its inputs 0 and 1 are the two operands,
told apart by the same data-path rule; its residual sum (output 3) is the merge output, and the
block's IR is that sum where later nodes read it (pre-norm), its output 0 otherwise (post-norm:
the normalised sum is the stream, as after an unfused merge's LayerNorm).

A half may run on a flattened view of the stream: OPT's feed-forward is
``view(r + fc2(relu(fc1(ln(r)))), shape)`` with ``r = x.reshape(-1, hidden)``, so its Add sums
(batch·sequence, hidden) tensors, with no batch axis to tap. Such a merge is the block from the
stream ``x`` (before the flattening Reshape) to the Reshape that restores its shape
(:func:`_through_view`): the block's input and IR are stream tensors, and removing it leaves
``y = x``.
"""
from __future__ import annotations

from dataclasses import dataclass

from redaudit.core.dataflow import data_ancestry, is_weighted, weighted_attention
from redaudit.core.fused import OPERANDS, is_fused_skip_norm, residual_sum
from redaudit.core.graph import GraphIndex
from redaudit.core.recurrence import recurrent_region

#: Softmax of a plain export; onnxruntime's fused attention (com.microsoft) in optimised/genai graphs.
ATTENTION_OPS = frozenset({"Softmax", "Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention",
                           "PackedMultiHeadAttention", "SparseAttention", "PagedAttention",
                           "DecoderMaskedMultiHeadAttention", "DecoderMaskedSelfAttention"})
ELEMENTWISE_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Gelu", "FastGelu", "Elu", "Selu", "Celu",
    "Clip", "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Mish", "Erf", "ThresholdedRelu",
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Neg", "Abs", "Max", "Min",
    "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "SkipLayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization", "Identity", "Dropout",
})
_REGION_LIMIT = 24


def chain_end(index: GraphIndex, tensor: str) -> str:
    """End of the elementwise region that starts at ``tensor`` (bias add, norm, activation,
    decomposed GELU...). The region may only take ``tensor``, its own tensors and constants as
    inputs; its end is the single tensor that leaves it. Returns ``tensor`` when ambiguous."""
    region_nodes: set[int] = set()
    region_tensors = {tensor}
    queue = [tensor]
    while queue:
        current = queue.pop()
        for position in index.consumers.get(current, []):
            if position in region_nodes:
                continue
            node = index.nodes[position]
            inputs = [name for name in node.input if name]
            joins = node.op_type in ELEMENTWISE_OPS and all(
                name in region_tensors or name in index.constants for name in inputs)
            if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
                joins = False
            if not joins:
                continue
            region_nodes.add(position)
            if len(region_nodes) > _REGION_LIMIT:
                return tensor
            for name in node.output[:1]:
                region_tensors.add(name)
                queue.append(name)
    outputs = index.output_set
    exits = [name for name in region_tensors
             if name in outputs
             or any(pos not in region_nodes for pos in index.consumers.get(name, []))
             or not index.consumers.get(name)]
    if len(exits) != 1:
        return tensor
    end = exits[0]
    start_type, end_type = index.types.get(tensor), index.types.get(end)
    if start_type and end_type and start_type.shape is not None and end_type.shape is not None \
            and len(start_type.shape) != len(end_type.shape):
        return tensor
    return end


@dataclass(frozen=True)
class ResidualMerge:
    """One residual block. ``entry`` is where the paths diverged (the block input), ``add`` the
    merge's output, ``exit`` the block's IR (``add`` through its trailing chain)."""

    add_position: int
    entry: str
    add: str
    exit: str
    identity_skip: bool  # one operand is ``entry`` itself: removing the block leaves y = x
    branch_nodes: frozenset[int]

    def has_attention(self, index: GraphIndex) -> bool:
        return any(index.nodes[p].op_type in ATTENTION_OPS for p in self.branch_nodes)


def _bits(mask: int) -> list[int]:
    bits = []
    while mask:
        low = mask & -mask
        bits.append(low.bit_length() - 1)
        mask ^= low
    return bits


def compatible_shapes(index: GraphIndex, first: str, second: str) -> bool:
    """Equal rank and equal static dims; unknown types are accepted (checked at run time)."""
    a, b = index.types.get(first), index.types.get(second)
    if not (a and b and a.shape is not None and b.shape is not None):
        return True
    if len(a.shape) != len(b.shape):
        return False
    return all(not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a.shape, b.shape))


def _weighted_function_of(index: GraphIndex, entry: str, branch: frozenset[int], masks: dict[str, int],
                          input_bits: int) -> bool:
    """Whether the branch applies a weighted operator to ``entry`` itself: to a tensor computed
    from ``entry``, constants and shape arithmetic alone (``masks``/``input_bits`` tell shape
    arithmetic, which depends on no graph input's data, from data). An additive attention mask
    is not a block input although later scores depend on it (through earlier layers): every
    weighted op downstream of the mask also reads the hidden state."""
    pure = {entry}
    source = index.node_of(entry)
    if source is not None and is_fused_skip_norm(source) and residual_sum(source) == entry:
        pure.update(name for name in source.output if name)  # output 0 normalises ``entry``: a pre-norm
    for position in sorted(branch):
        node = index.nodes[position]
        reads = node.input[:1] if weighted_attention(node) else node.input
        data = [name for name in reads if name and name not in index.constants
                and masks.get(name, input_bits) & input_bits]
        if data and all(name in pure for name in data):
            if is_weighted(index, node):
                return True
            pure.update(name for name in node.output if name)
    return False


#: Ops that build a broadcast operand (an attention mask expanded to the scores' shape): a side
#: made of them is not a skip connection.
_BROADCAST_OPS = frozenset({"Expand", "Tile", "Unsqueeze", "Where", "ConstantOfShape"})


def _is_skip_connection(index: GraphIndex, entry: str, output: str, operands: list[str],
                        sides: list[frozenset[int]]) -> bool:
    """y = s(x) + f(x) with f weighted, and s either the identity on a tensor of y's shape or a
    shortcut that does not merely broadcast x (a projection, a pooling shortcut)."""
    weighted = [any(is_weighted(index, index.nodes[p]) for p in side) for side in sides]
    if not any(weighted):
        return False
    if entry in operands:
        return compatible_shapes(index, entry, output)
    for side, has_weight in zip(sides, weighted):
        if not has_weight and any(index.nodes[p].op_type in _BROADCAST_OPS for p in side):
            return False
    return True


def find_residual_merges(index: GraphIndex) -> list[ResidualMerge]:
    """Every residual block of the main graph, in graph order. Merges inside a recurrent
    layer (a GRU's ``(1 − z)·n + z·h``, an LSTM's cell update, unrolled per time step) are
    not blocks: the recurrence is one IR (:mod:`redaudit.core.recurrence`)."""
    inside = recurrent_region(index)
    bit_of, masks = data_ancestry(index)
    name_of_bit = {bit: name for name, bit in bit_of.items()}
    input_bits = sum(1 << bit_of[name] for name in index.graph_inputs if name in bit_of)
    merges = []
    for position, node in enumerate(index.nodes):
        fused = is_fused_skip_norm(node)
        operands = [node.input[slot] for slot in OPERANDS if slot < len(node.input)] if fused else \
            [name for name in node.input if name]
        if not (fused or node.op_type in ("Add", "Sum")) or len(operands) != 2 or not all(operands) \
                or not node.output or position in inside:
            continue
        left, right = operands
        if left not in masks or right not in masks or not compatible_shapes(index, left, right):
            continue
        common = masks[left] & masks[right]
        if not common:
            continue
        entry = name_of_bit[common.bit_length() - 1]  # latest common tensor in topological order
        entry_type, out_type = index.types.get(entry), index.types.get(node.output[0])
        if entry_type and out_type and entry_type.shape is not None and out_type.shape is not None \
                and len(entry_type.shape) != len(out_type.shape):
            continue
        # a fused skip-norm that produced ``entry`` also made the branch's pre-norm (its output 0):
        # it is the previous merge, not part of this branch
        previous = index.producer.get(entry)
        sides = [frozenset(index.producer[name_of_bit[bit]] for bit in _bits(masks[operand] & ~masks[entry])
                           if name_of_bit[bit] in index.producer) - {previous} for operand in (left, right)]
        if not _is_skip_connection(index, entry, node.output[0], operands, sides) \
                or not _weighted_function_of(index, entry, sides[0] | sides[1], masks, input_bits):
            continue
        branch = sides[0] | sides[1]
        total, stream = _fused_outputs(index, position) if fused else (node.output[0], node.output[0])
        identity = entry in operands
        if not fused and (view := _through_view(index, entry, stream)) is not None:
            entry, total, stream, views = view
            branch = branch | views
        end = chain_end(index, stream)
        if not index.is_tappable(end):
            end = stream
        merges.append(ResidualMerge(position, entry, total, end, identity, branch))
    return merges


_VIEW_OPS = ("Reshape", "Flatten")


def _rank(index: GraphIndex, tensor: str) -> int | None:
    kind = index.types.get(tensor)
    return None if kind is None or kind.shape is None else len(kind.shape)


def _through_view(index: GraphIndex, entry: str, total: str) -> tuple[str, str, str, frozenset[int]] | None:
    """(stream input, restored sum, restored sum, the two view nodes) when ``entry`` flattens
    the stream (a Reshape/Flatten lowering its rank) and the merge's sum is read only by one
    Reshape that gives it back the stream's rank and shape; None otherwise."""
    flatten = index.node_of(entry)
    if flatten is None or flatten.op_type not in _VIEW_OPS or not flatten.input or not flatten.input[0]:
        return None
    source = flatten.input[0]
    readers = index.consumers.get(total, [])
    if len(readers) != 1 or total in index.output_set:
        return None
    restore = index.nodes[readers[0]]
    if restore.op_type != "Reshape" or restore.input[0] != total or not restore.output[0]:
        return None
    restored = restore.output[0]
    ranks = (_rank(index, source), _rank(index, entry), _rank(index, restored))
    if None in ranks or ranks[0] <= ranks[1] or ranks[2] != ranks[0] or not compatible_shapes(index, source, restored):
        return None
    return source, restored, restored, frozenset({index.producer[entry], readers[0]})


def _fused_outputs(index: GraphIndex, position: int) -> tuple[str, str]:
    """(the residual sum, the stream tensor) of a fused skip-norm: the stream is the sum where
    a later node or the graph's output reads it (pre-norm), output 0 otherwise (post-norm, or a
    pre-norm model's last layer, whose output 0 is the final norm). A sum the graph does not
    name (:func:`redaudit.core.fused.expose_residual_sums` was not applied) keeps its name, which
    then names no tensor — and is neither tapped nor removed — and "" when another node took it."""
    node = index.nodes[position]
    total = residual_sum(node)
    if index.producer.get(total, position) != position:
        total = ""
    read = total in index.producer and (index.consumers.get(total) or total in index.output_set)
    return total, total if read else node.output[0]
