"""Parallel layers (attention and MLP on one residual): the rule that makes their two Adds one merge.

``y = x + attn(ln(x)) + mlp(ln(x))`` is exported as two Adds, either of which the block detector
(:mod:`redaudit.core.blocks`) may call a residual merge; the layer is one unit
(:mod:`redaudit.core.units`), its halves not separable as stream tensors.
"""
from __future__ import annotations

from dataclasses import replace

from redaudit.core.blocks import ResidualMerge
from redaudit.core.graph import GraphIndex


def absorb_parallel(index: GraphIndex, merges: list[ResidualMerge]) -> tuple[list[ResidualMerge], set[str]]:
    """Drop merges that are the inner Add of a parallel layer and return the outer merges that
    absorbed one. Two orders are exported: ``a = attn + mlp`` read by ``y = a + x`` as its branch
    operand (GPT-NeoX, Phi), and ``h = x + attn(ln(x))`` read by ``y = h + mlp(ln(x))`` (Cohere's
    ``x + attn + mlp``; the paths of ``h`` and the MLP meet at ``ln(x)``): ``y`` then takes ``h``'s
    entry and an identity skip (removing the layer leaves ``y = x``)."""
    inner: set[str] = set()
    absorbing: set[str] = set()
    by_add = {merge.add: merge for merge in merges}
    kept = {}
    for merge in merges:
        for operand in index.nodes[merge.add_position].input:
            candidate = by_add.get(operand)
            if candidate is None or operand == merge.entry:
                continue
            if merge.identity_skip and not candidate.identity_skip:
                inner.add(candidate.add)
                absorbing.add(merge.add)
            elif not merge.identity_skip and candidate.identity_skip and (
                    candidate.entry == merge.entry or index.producer.get(candidate.entry) in index.ancestors(merge.entry)):
                inner.add(candidate.add)
                absorbing.add(merge.add)
                kept[merge.add] = replace(merge, entry=candidate.entry, identity_skip=True, branch_nodes=(
                    merge.branch_nodes | candidate.branch_nodes | {candidate.add_position}))
    return [kept.get(merge.add, merge) for merge in merges if merge.add not in inner], absorbing
