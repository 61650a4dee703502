"""What a block costs: its parameters (initializer elements only it uses) and its FLOPs
(counted by :mod:`redaudit.core.costs`, as nas counts them)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from redaudit.core.costs import flops_per_node
from redaudit.core.graph import GraphIndex, float_initializer_sizes, parameter_count
from redaudit.prune.candidates import Block


def block_parameters(index: GraphIndex, block: Block, sizes: Mapping[str, int]) -> int:
    """Initializer elements read by the block's nodes and by no node outside it."""
    inside = set(block.nodes)
    count = 0
    for name, size in sizes.items():
        readers = set(index.consumers.get(name, ()))
        if readers and readers <= inside and name not in index.graph_outputs:
            count += size
    return count


def block_costs(model: onnx.ModelProto, index: GraphIndex, blocks: Sequence[Block],
                input_shapes: Mapping[str, Sequence[int]] | None = None
                ) -> tuple[list[tuple[int, int]], int, int]:
    """((params, flops) per block, total params, total flops)."""
    sizes = float_initializer_sizes(model)
    flops = flops_per_node(model, input_shapes)
    per_block = [(block_parameters(index, block, sizes), sum(flops[p] for p in block.nodes))
                 for block in blocks]
    return per_block, parameter_count(model), sum(flops)


__all__ = ["parameter_count", "block_costs", "block_parameters"]
