"""Find the blocks of a model that can be removed without breaking any shape.

A block is a region of the graph between an *entry* tensor and an *exit* tensor of identical
dtype and shape such that nothing computed strictly inside it is read outside it. Removing it
means: every consumer of the exit reads the entry instead, and the region dies. Three shapes of
block are recognised, each checked with the same closure test (:func:`block_region`):

* ``residual`` — ``y = x + f(x)``: a residual merge with an identity skip, as the one block
  detector (:mod:`redaudit.core.blocks`) finds it — a weighted branch, named by its IR exactly as
  scan names it — so removing it leaves ``y = x``;
* ``transformer-layer`` — a decoder or encoder layer: the span of its attention and MLP residual
  halves (one merge in parallel layouts), as scan's units (:func:`redaudit.core.units.find_units`).
  With ``granularity="sublayer"`` the halves are offered instead (kinds ``attention``, ``mlp``;
  ``attention+mlp`` for a parallel layer, which has no separable halves);
* ``chain`` — outside residual blocks, a run of weighted layers (Conv/MatMul/Gemm with their bias,
  activation and normalisation) whose first input and last output have the same shape and dtype.

Blocks are reported outermost-first: a residual block inside a transformer layer is not offered
separately, so candidates never overlap and can be removed in any combination.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import onnx

from redaudit.core.blocks import chain_end, compatible_shapes
from redaudit.core.dataflow import WEIGHTED_OPS as _ALL_WEIGHTED_OPS
from redaudit.core.fused import is_fused_skip_norm
from redaudit.core.graph import GraphIndex
from redaudit.core.tensor_types import FLOAT_TYPES
from redaudit.core.units import cache_tail, find_units
from redaudit.prune.kv_cache import is_cache_output

#: Candidate granularities: whole units (transformer layers, residual blocks) or residual halves.
GRANULARITIES = ("block", "sublayer")

#: Ops a ``chain`` link may start with (layers whose removal keeps a plain feed-forward stream).
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"}) & _ALL_WEIGHTED_OPS


T = TypeVar("T")


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
    layer: int | None = None  # the transformer layer (0-based) this block is or belongs to


def block_region(index: GraphIndex, entry: str, exit_name: str) -> set[int] | None:
    """Nodes that die when ``exit_name`` is replaced by ``entry``, or None if that is unsafe.

    The region is every node on a data path entry → exit, plus the helper nodes (shape
    arithmetic, constants; a cross-attention's keys and values projected from the encoder's
    states, also written to its ``present.N.encoder.*``) that only feed the region. It is unsafe when a tensor computed
    inside, other than the exit, is read outside or is a graph output — other than a decoder
    layer's ``present.N.*`` (or legacy stacked ``present_N``) cache output, which is removed with
    its layer.
    """
    if entry == exit_name or exit_name not in index.producer:
        return None
    core = index.data_descendants(entry) & index.ancestors(exit_name)
    if index.producer[exit_name] not in core:
        return None
    region = set(core)
    upstream = index.ancestors(entry)  # still needed: the entry survives the removal
    feeding = index.ancestors(exit_name)
    # nodes that write cache outputs only, off the path to the exit (a cross-attention's
    # present.N.encoder.key, a Transpose of keys it projected from the encoder's states): they
    # go with the layer when all they read does (cache_tail below), so they do not hold a helper
    presents = {position for name in index.graph_outputs if is_cache_output(name)
                and (position := index.producer.get(name)) is not None and position not in feeding
                and all(is_cache_output(out) for out in index.nodes[position].output if out)}
    for position in sorted(feeding - core - upstream, reverse=True):
        outputs = [name for name in index.nodes[position].output if name]
        if any(name in index.graph_outputs and not is_cache_output(name) for name in outputs):
            continue
        if all(set(index.consumers.get(name, ())) <= region | presents for name in outputs):
            region.add(position)
    region |= cache_tail(index, region, frozenset({exit_name}))  # a legacy layout's stacked present_N
    for name in index.outputs_of(region):
        if name == exit_name:
            continue
        if name in index.graph_outputs and not is_cache_output(name):
            return None  # a layer's KV-cache output goes with the layer (redaudit.prune.kv_cache)
        if not set(index.consumers.get(name, ())) <= region:
            return None
    return region


def _same_type(index: GraphIndex, first: str, second: str) -> bool:
    a, b = index.types.get(first), index.types.get(second)
    return a is not None and b is not None and a.elem_type in FLOAT_TYPES and a.same_as(b)


def _residual_type(index: GraphIndex, entry: str, exit_name: str) -> bool:
    """Entry and exit of a span of identity-skip merges ``y = x + f(x)``: y has x's shape by
    construction, so equal dtype, rank and static dims suffice — shape inference often loses
    the symbolic names inside attention (GPT-2's exit reads ``unk__25`` where its entry reads
    ``sequence_length``)."""
    a, b = index.types.get(entry), index.types.get(exit_name)
    return a is not None and b is not None and a.elem_type in FLOAT_TYPES and a.elem_type == b.elem_type \
        and compatible_shapes(index, entry, exit_name)


def _make_block(index: GraphIndex, entry: str, exit_name: str, kind: str, layer: int | None = None,
                residual: bool = False) -> Block | None:
    if not (_residual_type(index, entry, exit_name) if residual else _same_type(index, entry, exit_name)):
        return None
    region = block_region(index, entry, exit_name)
    if not region:
        return None
    nodes = tuple(sorted(region))
    return Block(exit_name, entry, exit_name, kind, nodes,
                 tuple(index.nodes[p].name for p in nodes), layer)


def _residual_blocks(index: GraphIndex, granularity: str) -> list[Block]:
    """Whole transformer layers (``block``) or their halves (``sublayer``), and identity-skip
    residual blocks, named as scan names their IRs at that level."""
    blocks: list[Block] = []
    for number, unit in enumerate(find_units(index).units):
        layer = number if unit.is_transformer_layer else None
        if granularity == "block" and unit.is_transformer_layer:
            whole = _make_block(index, unit.entry, unit.exit, "transformer-layer", layer, residual=unit.removable)
            if whole is not None:
                blocks.append(whole)
                continue
        for sublayer in unit.sublayers:
            if sublayer.removable:
                kind = sublayer.role if unit.is_transformer_layer and granularity == "sublayer" else "residual"
                block = _make_block(index, sublayer.entry, sublayer.exit, kind, layer, residual=True)
                if block is not None:
                    blocks.append(block)
    return blocks


def fused_prenorm_layers(index: GraphIndex) -> list[int]:
    """Transformer layers (0-based) that rewiring cannot remove: in a pre-norm model optimized
    by onnxruntime, each layer's residual sum is fused with the *next* layer's norm into one
    SkipLayerNormalization (:mod:`redaudit.core.fused`), whose output 0 — that norm of this
    layer's output — the next layer reads. Bypassing the layer would need that norm rebuilt on
    the layer's input; surgery does not rebuild nodes. (Post-norm encoders are removable: their
    stream is output 0 itself, and the layer's norms go with it, as in the unfused graph.)"""
    layout = find_units(index)
    if layout.norm != "pre":
        return []
    return [number for number, unit in enumerate(layout.units)
            if unit.is_transformer_layer and any(is_fused_skip_norm(index.nodes[sublayer.merge.add_position])
                                                 for sublayer in unit.sublayers)]


def chains(units: Sequence[T]) -> list[list[T]]:
    """Split units (anything with ``entry`` and ``exit``) into maximal sequences where each one's
    entry is the previous one's exit. Used for chain blocks, healing spans and contiguous-span
    policies alike."""
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
        exit_name = chain_end(index, exit_name)
        region = block_region(index, entry, exit_name)
        if region:
            nodes = tuple(sorted(region))
            links.append(Block(exit_name, entry, exit_name, "chain", nodes,
                               tuple(index.nodes[p].name for p in nodes)))
    return links


def _chain_blocks(index: GraphIndex, links: list[Block]) -> list[Block]:
    """Minimal shape-preserving spans of consecutive layers, left to right, not overlapping."""
    blocks = []
    for chain in chains(links):
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


def granularity_of(level: str) -> str:
    """The candidate granularity a scan level asks for: halves at ``sublayer``, units otherwise."""
    return "sublayer" if level == "sublayer" else "block"


def find_candidates(model: onnx.ModelProto, index: GraphIndex | None = None,
                    granularity: str = "block") -> list[Block]:
    """All removable blocks of ``model``, non-overlapping, in graph order. ``granularity``
    ``sublayer`` offers a transformer layer's attention and MLP halves instead of the layer
    (scan's ``--level sublayer``); other blocks are the same at both."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    index = index or GraphIndex.build(model)
    residuals = _residual_blocks(index, granularity)
    blocks = [b for b in residuals if not any(set(b.nodes) < set(other.nodes) for other in residuals)]
    covered = {p for block in blocks for p in block.nodes}
    blocks += _chain_blocks(index, _layer_links(index, covered))
    unique = {block.exit: block for block in blocks}
    return sorted(unique.values(), key=lambda block: index.producer[block.exit])
