"""Recurrent layers, each one IR: an ONNX LSTM/GRU/RNN node, or a recurrence an exporter unrolled.

Time steps are not layers. A recurrent layer applies the same weights at every step, so its
per-step tensors are one computation seen T times; tapping them as blocks or layers would let one
recurrent layer dominate MSRS (a CRNN whose bidirectional LSTM was unrolled into 20 steps gave 40
"blocks"). A recurrent layer is tapped once, at its output sequence, and averaged over time
(as tokens are).

* An ONNX ``LSTM``/``GRU``/``RNN`` node: its ``Y`` output, (T, D, N, H) — or (N, T, D, H) with
  ``layout=1``.
* An unrolled recurrence: a group of weighted nodes applying the *same weights* (equal
  initializer contents) whose outputs are gathered by one ``Concat`` (torch's ``stack``) such
  that step *t*'s output depends on strictly more applications of the group than step *t−1*'s
  (fewer, for a backward direction). That is what separates a recurrence from the same layer
  applied to each step independently (a time-distributed dense layer: one application per
  step) and from a siamese pair (equal counts). A Concat of recurrence outputs (the two
  directions of a bidirectional layer) is one recurrence.

Everything between the steps — gates, cell states, per-step projections — is the recurrence's
*region*: the block detector finds no residual merge and the layer level no weighted layer there.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import onnx

from redaudit.core.dataflow import data_ancestry, is_weighted
from redaudit.core.external import sample_bytes
from redaudit.core.graph import GraphIndex

RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
#: onnxruntime's quantized LSTM (com.microsoft): same outputs as LSTM.
_CONTRIB_RECURRENT_OPS = frozenset({"DynamicQuantizeLSTM"})


@dataclass(frozen=True)
class Recurrence:
    """One recurrent layer: ``output`` is its output sequence (the IR), ``anchor`` the node named
    after it, ``region`` the nodes inside it. ``time_axis``/``batch_axis``/``rank`` describe the
    output (``time_axis`` None: no time axis, e.g. an LSTM whose sequence output is unused)."""

    output: str
    op: str
    anchor: int
    region: frozenset[int]
    rank: int | None
    batch_axis: int
    time_axis: int | None


def find_recurrences(index: GraphIndex) -> list[Recurrence]:
    """Every recurrent layer of the main graph, in graph order (cached on the index: the index
    is read-only and rebuilt after any surgery)."""
    cached = index.__dict__.get("_recurrences")
    if cached is None:
        cached = sorted([*_native(index), *_unrolled(index)], key=lambda found: found.anchor)
        index.__dict__["_recurrences"] = cached
    return cached


def recurrent_region(index: GraphIndex) -> frozenset[int]:
    """Nodes inside any recurrent layer."""
    return frozenset(position for found in find_recurrences(index) for position in found.region)


def _native(index: GraphIndex) -> list[Recurrence]:
    found = []
    for position, node in enumerate(index.nodes):
        if not (node.op_type in RECURRENT_OPS and node.domain in ("", "ai.onnx")
                or node.op_type in _CONTRIB_RECURRENT_OPS and node.domain == "com.microsoft"):
            continue
        batch_first = any(attr.name == "layout" and attr.i == 1 for attr in node.attribute)
        sequence = node.output[0] if node.output and node.output[0] else ""
        if sequence:
            found.append(Recurrence(sequence, node.op_type, position, frozenset({position}), 4,
                                    0 if batch_first else 2, 1 if batch_first else 0))
        elif len(node.output) > 1 and node.output[1]:  # only the last hidden state: (D, N, H)
            found.append(Recurrence(node.output[1], node.op_type, position, frozenset({position}), 3,
                                    0 if batch_first else 1, None))
    return found


class _Digests:
    """Content digests of constant tensors, so weights shared by value (not only by name)
    group together; computed constants hash their producer and its inputs."""

    def __init__(self, index: GraphIndex) -> None:
        self.index = index
        self.initializers = {init.name: init for init in index.model.graph.initializer}
        self.memo: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name not in self.memo:
            self.memo[name] = self._compute(name)
        return self.memo[name]

    def _compute(self, name: str) -> str:
        digest = hashlib.blake2b(digest_size=16)
        init = self.initializers.get(name)
        if init is not None:
            digest.update(f"{init.data_type}:{list(init.dims)}".encode())
            raw = sample_bytes(init, self.index.folder)  # 64 KiB spread over it, in the proto or a data file
            digest.update(raw if raw is not None else repr(
                [list(init.float_data[:4096]), list(init.int64_data[:4096]), list(init.int32_data[:4096]),
                 [(e.key, e.value) for e in init.external_data]]).encode())
            return digest.hexdigest()
        node = self.index.node_of(name)
        if node is None:
            return name
        digest.update(node.op_type.encode())
        for attr in node.attribute:
            digest.update(attr.SerializeToString())
        for item in node.input:
            digest.update(self(item).encode() if item else b"-")
        return digest.hexdigest()


def _weight_groups(index: GraphIndex) -> list[list[int]]:
    """Weighted nodes that apply the same weights, in groups of two or more."""
    digests = _Digests(index)
    groups: dict[tuple, list[int]] = {}
    for position, node in enumerate(index.nodes):
        if not node.output or not is_weighted(index, node):
            continue
        weights = tuple(digests(name) if name in index.constants else None for name in node.input)
        if any(weights):
            groups.setdefault((node.op_type, weights), []).append(position)
    return [members for members in groups.values() if len(members) > 1]


def _monotone(counts: list[int]) -> bool:
    pairs = list(zip(counts, counts[1:]))
    return min(counts) >= 1 and (all(a < b for a, b in pairs) or all(a > b for a, b in pairs))


def _unrolled(index: GraphIndex) -> list[Recurrence]:
    groups = _weight_groups(index)
    if not groups:
        return []
    bit_of, masks = data_ancestry(index)
    group_masks = [sum(1 << bit_of[index.nodes[p].output[0]] for p in members
                       if index.nodes[p].output[0] in bit_of) for members in groups]
    assigned: set[int] = set()
    found: list[Recurrence] = []
    for position, node in enumerate(index.nodes):
        steps = [name for name in node.input if name in masks]
        if node.op_type != "Concat" or len(steps) < 2 or not node.output or node.output[0] not in masks:
            continue
        whole = masks[node.output[0]]
        mine = [g for g, mask in enumerate(group_masks)
                if g not in assigned and mask and whole & mask == mask
                and _monotone([(masks[step] & mask).bit_count() for step in steps])]
        if not mine:
            continue
        assigned.update(mine)
        members = 0
        for g in mine:
            members |= group_masks[g]
        region = frozenset(p for p, inner in enumerate(index.nodes)
                           if any(out in bit_of and whole >> bit_of[out] & 1 and masks[out] & members
                                  for out in inner.output if out))
        found.append(_sequence(index, position, node, region, f"unrolled {index.nodes[groups[mine[0]][0]].op_type}"))
    return _merge_directions(index, found)


def _axis(node: onnx.NodeProto) -> int:
    return next((attr.i for attr in node.attribute if attr.name == "axis"), 0)


def _sequence(index: GraphIndex, position: int, node: onnx.NodeProto, region: frozenset[int],
              op: str) -> Recurrence:
    """A Concat of step outputs: the concat axis is time when steps were stacked (rank ≥ 3); a
    time-major stack (axis 0) has the batch on axis 1."""
    out_type = index.types.get(node.output[0])
    rank = len(out_type.shape) if out_type is not None and out_type.shape is not None else None
    axis = _axis(node)
    if axis < 0 and rank is not None:
        axis += rank
    stacked = all((producer := index.node_of(name)) is not None and producer.op_type == "Unsqueeze"
                  for name in node.input if name)
    if axis < 0 or (rank is not None and rank < 3) or (rank is None and not stacked):
        return Recurrence(node.output[0], op, position, region, rank, 0, None)
    return Recurrence(node.output[0], op, position, region, rank, 1 if axis == 0 else 0, axis)


def _merge_directions(index: GraphIndex, found: list[Recurrence]) -> list[Recurrence]:
    """A Concat whose inputs are all recurrence outputs (the directions of a bidirectional
    layer) is one recurrence, tapped at that Concat."""
    by_output = {item.output: item for item in found}
    merged: list[Recurrence] = []
    used: set[str] = set()
    for position, node in enumerate(index.nodes):
        inputs = [name for name in node.input if name]
        if node.op_type != "Concat" or len(inputs) < 2 or not all(name in by_output for name in inputs):
            continue
        parts = [by_output[name] for name in inputs]
        region = frozenset({position}).union(*(part.region for part in parts))
        first = parts[0]
        merged.append(Recurrence(node.output[0], first.op, position, region, first.rank, first.batch_axis,
                                 first.time_axis if _axis(node) != first.time_axis else None))
        used.update(inputs)
    return [item for item in found if item.output not in used] + merged
