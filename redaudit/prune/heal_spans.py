"""Which removed blocks are healed as one: spans, and the order they are healed in.

Healing replaces a *span* — an entry tensor to an exit tensor — by one fitted map. Blocks chosen
for removal that follow one another (one's exit is the next one's entry) are merged into one
span before anything is fitted, because one map for the whole run fits better than a
composition of maps each fitted as if its neighbours were still there; and sequential healing
walks the spans upstream first, so each later map is fitted on entries the earlier ones already
produce. Nothing here runs a model or edits a graph: :mod:`redaudit.prune.heal` does both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import onnx

from redaudit.prune.errors import PruneError


class SpanLike(Protocol):
    """Anything with an entry and an exit tensor name (a ``Block``), plus a display name."""

    name: str
    entry: str
    exit: str


@dataclass(frozen=True)
class Span:
    """A run of consecutive removed blocks, entry of the first → exit of the last."""

    entry: str
    exit: str
    blocks: tuple[str, ...]


def merge_spans(blocks: Sequence[SpanLike]) -> list[Span]:
    """Group blocks whose entry is another chosen block's exit into single spans (order of
    ``blocks`` does not matter; the result follows the chain order)."""
    from redaudit.prune.candidates import chains

    spans = [Span(chain[0].entry, chain[-1].exit, tuple(b.name for b in chain)) for chain in chains(blocks)]
    if sum(len(span.blocks) for span in spans) != len(blocks):
        raise PruneError("the chosen blocks form a cycle of entries and exits; cannot heal them")
    return spans


def in_graph_order(model: onnx.ModelProto, spans: Sequence[Span]) -> list[Span]:
    """Spans upstream first (ONNX graphs are stored topologically sorted)."""
    position = {name: p for p, node in enumerate(model.graph.node) for name in node.output}
    return sorted(spans, key=lambda span: position.get(span.exit, -1))
