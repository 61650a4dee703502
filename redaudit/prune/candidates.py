"""Find the blocks of a model that can be removed without breaking any shape.

A block is a region of the graph between an *entry* tensor and an *exit* tensor of identical
dtype and shape such that nothing computed strictly inside it is read outside it. Removing it
means: every consumer of the exit reads the entry instead, and the region dies. Three shapes of
block are recognised, each checked with the same closure test (:func:`block_region`):

* ``residual`` — ``y = x + f(x)``: a residual merge with an identity skip, as the one block
  detector (:mod:`redaudit.core.blocks`) finds it — a weighted branch, named by its IR exactly as
  scan names it — so removing it leaves ``y = x``;
* ``transformer-layer`` — an encoder layer: its attention merge plus the feed-forward merge(s)
  after it, grouped as scan groups them (:func:`redaudit.core.blocks.encoder_layer_merges`);
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

from redaudit.core.blocks import WEIGHTED_OPS as _ALL_WEIGHTED_OPS
from redaudit.core.blocks import chain_end, encoder_layer_merges, find_residual_merges
from redaudit.core.graph import FLOAT_TYPES, GraphIndex
from redaudit.prune.kv_cache import is_cache_output

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


def block_region(index: GraphIndex, entry: str, exit_name: str) -> set[int] | None:
    """Nodes that die when ``exit_name`` is replaced by ``entry``, or None if that is unsafe.

    The region is every node on a data path entry → exit, plus the helper nodes (shape
    arithmetic, constants) that only feed the region. It is unsafe when a tensor computed
    inside, other than the exit, is read outside or is a graph output — other than a decoder
    layer's ``present.N.*`` cache output, which is removed with its layer.
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
        if name in index.graph_outputs and not is_cache_output(name):
            return None  # a layer's KV-cache output goes with the layer (redaudit.prune.kv_cache)
        if not set(index.consumers.get(name, ())) <= region:
            return None
    return region


def _same_type(index: GraphIndex, first: str, second: str) -> bool:
    a, b = index.types.get(first), index.types.get(second)
    return a is not None and b is not None and a.elem_type in FLOAT_TYPES and a.same_as(b)


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
    """Identity-skip residual blocks and encoder layers, named as scan names their IRs."""
    blocks: list[Block] = []
    for group in encoder_layer_merges(index, find_residual_merges(index)):
        if len(group) > 1:
            layer = _make_block(index, group[0].entry, group[-1].exit, "transformer-layer")
            if layer is not None:
                blocks.append(layer)
                continue
        for merge in group:
            if merge.identity_skip:
                block = _make_block(index, merge.entry, merge.exit, "residual")
                if block is not None:
                    blocks.append(block)
    return blocks


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


def find_candidates(model: onnx.ModelProto, index: GraphIndex | None = None) -> list[Block]:
    """All removable blocks of ``model``, non-overlapping, in graph order."""
    index = index or GraphIndex.build(model)
    residuals = _residual_blocks(index)
    blocks = [b for b in residuals if not any(set(b.nodes) < set(other.nodes) for other in residuals)]
    covered = {p for block in blocks for p in block.nodes}
    blocks += _chain_blocks(index, _layer_links(index, covered))
    unique = {block.exit: block for block in blocks}
    return sorted(unique.values(), key=lambda block: index.producer[block.exit])
