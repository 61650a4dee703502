"""Find the blocks of a model that can be removed without breaking any shape.

A block is a region of the graph between an *entry* tensor and an *exit* tensor of identical
dtype and shape such that nothing computed strictly inside it is read outside it. Removing it
means: every consumer of the exit reads the entry instead, and the region dies. Three shapes of
block are recognised, each checked with the same closure test (:func:`block_region`):

* ``residual`` — ``y = x + f(x)`` (an Add one of whose operands depends on the other), extended
  through a trailing activation/normalisation chain (post-activation ResNets, post-LN BERT), so
  removing it leaves ``y = x``;
* ``transformer-layer`` — consecutive residual blocks grouped so that each group starts with a
  block containing attention (Softmax): an encoder layer is its attention sub-block plus the
  feed-forward sub-block(s) after it;
* ``chain`` — outside residual blocks, a run of weighted layers (Conv/MatMul/Gemm with their bias,
  activation and normalisation) whose first input and last output have the same shape and dtype.

Blocks are reported outermost-first: a residual block inside a transformer layer is not offered
separately, so candidates never overlap and can be removed in any combination.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from redaudit.prune.graph import FLOAT_TYPES, GraphIndex

#: Shape-preserving ops a block's exit is extended through when they are its only consumer.
TRAILING_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "HardSigmoid", "Tanh",
    "Clip", "Softplus", "HardSwish", "Mish", "Dropout", "Identity", "LayerNormalization",
    "BatchNormalization", "InstanceNormalization", "GroupNormalization", "RMSNormalization",
    "SimplifiedLayerNormalization", "SkipLayerNormalization",
})
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
ATTENTION_OPS = frozenset({"Softmax", "Attention", "MultiHeadAttention"})


@dataclass(frozen=True)
class Block:
    """One removable block. ``name`` is its exit tensor's name: stable across removals of other
    blocks, and the same name scan uses for that IR. ``nodes`` are positions in the graph the
    block was found in (they die with the block)."""

    name: str
    entry: str
    exit: str
    kind: str
    nodes: tuple[int, ...]
    node_names: tuple[str, ...]


def block_region(index: GraphIndex, entry: str, exit_name: str) -> set[int] | None:
    """Nodes that die when ``exit_name`` is replaced by ``entry``, or None if that is unsafe.

    The region is every node on a data path entry → exit, plus the helper nodes (shape
    arithmetic, constants) that only feed the region. It is unsafe when a tensor computed
    inside, other than the exit, is read outside or is a graph output.
    """
    if entry == exit_name or exit_name not in index.producer:
        return None
    core = index.data_descendants(entry) & index.ancestors(exit_name)
    if index.producer[exit_name] not in core:
        return None
    region = set(core)
    upstream = index.ancestors(entry)  # still needed: the entry survives the removal
    for position in sorted(index.ancestors(exit_name) - core - upstream, reverse=True):
        outputs = [name for name in index.nodes[position].output if name]
        if any(name in index.graph_outputs for name in outputs):
            continue
        if all(set(index.consumers.get(name, ())) <= region for name in outputs):
            region.add(position)
    for name in index.outputs_of(region):
        if name == exit_name:
            continue
        if name in index.graph_outputs or not set(index.consumers.get(name, ())) <= region:
            return None
    return region


def _same_type(index: GraphIndex, first: str, second: str) -> bool:
    a, b = index.types.get(first), index.types.get(second)
    return a is not None and b is not None and a.elem_type in FLOAT_TYPES and a.same_as(b)


def _extend_exit(index: GraphIndex, tensor: str) -> str:
    """Follow a tensor through the activation/normalisation chain that is its sole consumer."""
    while tensor not in index.graph_outputs:
        consumers = index.consumers.get(tensor, [])
        if len(consumers) != 1:
            break
        node = index.nodes[consumers[0]]
        if node.op_type not in TRAILING_OPS or not node.output or node.input[0] != tensor:
            break
        if not _same_type(index, tensor, node.output[0]):
            break
        tensor = node.output[0]
    return tensor


def _make_block(index: GraphIndex, entry: str, exit_name: str, kind: str) -> Block | None:
    if not _same_type(index, entry, exit_name):
        return None
    region = block_region(index, entry, exit_name)
    if not region:
        return None
    nodes = tuple(sorted(region))
    return Block(exit_name, entry, exit_name, kind, nodes,
                 tuple(index.nodes[p].name for p in nodes))


def _residual_blocks(index: GraphIndex) -> list[Block]:
    blocks = []
    for position, node in enumerate(index.nodes):
        if node.op_type != "Add" or len(node.input) != 2 or not all(node.input):
            continue
        for skip, branch in ((node.input[1], node.input[0]), (node.input[0], node.input[1])):
            branch_producer = index.producer.get(branch)
            if branch_producer is None or branch_producer not in index.data_descendants(skip):
                continue
            block = _make_block(index, skip, _extend_exit(index, node.output[0]), "residual")
            if block is not None:
                blocks.append(block)
            break
    return blocks


def _chains(units: list[Block]) -> list[list[Block]]:
    """Split units into maximal sequences where each one's entry is the previous one's exit."""
    by_entry = {unit.entry: unit for unit in units}
    exits = {unit.exit for unit in units}
    chains = []
    for unit in units:
        if unit.entry in exits:
            continue
        chain = [unit]
        while chain[-1].exit in by_entry and len(chain) <= len(units):
            chain.append(by_entry[chain[-1].exit])
        chains.append(chain)
    return chains


def _transformer_layers(index: GraphIndex, residuals: list[Block]) -> list[Block]:
    """Group residual sub-blocks into layers that each start with an attention sub-block;
    residual blocks of attention-free networks (ResNets) stay as they are."""
    def has_attention(block: Block) -> bool:
        return any(index.nodes[p].op_type in ATTENTION_OPS for p in block.nodes)

    out: list[Block] = []
    for chain in _chains(residuals):
        groups: list[list[Block]] = []
        for unit in chain:
            if not groups or has_attention(unit):
                groups.append([])
            groups[-1].append(unit)
        for group in groups:
            layer = None
            if len(group) > 1 and has_attention(group[0]):
                layer = _make_block(index, group[0].entry, group[-1].exit, "transformer-layer")
            out.extend([layer] if layer is not None else group)
    return out


def _branch_nodes(index: GraphIndex) -> set[int]:
    """Nodes on one side only of a merge (an Add of two computed tensors): the inside of a
    residual branch or of a projection shortcut. A layer there is not on the main stream, and
    bypassing it alone is not what "removing a layer" means."""
    branch: set[int] = set()
    for node in index.nodes:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        if not all(name in index.producer for name in node.input):
            continue
        left, right = (index.ancestors(name) for name in node.input)
        branch |= left ^ right
    return branch


def _layer_links(index: GraphIndex, covered: set[int]) -> list[Block]:
    """Weighted layers (with bias and trailing activation) on the main stream, any shape."""
    links = []
    branch: set[int] | None = None
    for position, node in enumerate(index.nodes):
        if node.op_type not in WEIGHTED_OPS or position in covered or not node.input:
            continue
        branch = _branch_nodes(index) if branch is None else branch
        if position in branch:
            continue
        if not any(name in index.initializers for name in node.input[1:]):
            continue
        entry = node.input[0]
        exit_name = node.output[0]
        consumers = index.consumers.get(exit_name, [])
        if len(consumers) == 1 and index.nodes[consumers[0]].op_type == "Add":
            bias_add = index.nodes[consumers[0]]
            if any(name in index.initializers for name in bias_add.input):
                exit_name = bias_add.output[0]
        exit_name = _extend_exit(index, exit_name)
        region = block_region(index, entry, exit_name)
        if region:
            nodes = tuple(sorted(region))
            links.append(Block(exit_name, entry, exit_name, "chain", nodes,
                               tuple(index.nodes[p].name for p in nodes)))
    return links


def _chain_blocks(index: GraphIndex, links: list[Block]) -> list[Block]:
    """Minimal shape-preserving spans of consecutive layers, left to right, not overlapping."""
    blocks = []
    for chain in _chains(links):
        tensors = [chain[0].entry] + [link.exit for link in chain]
        start = 0
        while start < len(tensors) - 1:
            for stop in range(start + 1, len(tensors)):
                block = _make_block(index, tensors[start], tensors[stop], "chain")
                if block is not None:
                    blocks.append(block)
                    start = stop
                    break
            else:
                start += 1
    return blocks


def find_candidates(model: onnx.ModelProto, index: GraphIndex | None = None) -> list[Block]:
    """All removable blocks of ``model``, non-overlapping, in graph order."""
    index = index or GraphIndex.build(model)
    residuals = _residual_blocks(index)
    residuals = [b for b in residuals
                 if not any(set(b.nodes) < set(other.nodes) for other in residuals)]
    blocks = _transformer_layers(index, residuals)
    covered = {p for block in blocks for p in block.nodes}
    blocks += _chain_blocks(index, _layer_links(index, covered))
    unique = {block.exit: block for block in blocks}
    return sorted(unique.values(), key=lambda block: index.producer[block.exit])
