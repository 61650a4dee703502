"""Input/output similarity of each candidate block, measured by the scan engine.

The paper's pruning signal is a_l = CKA(IR_l, IR_{l+1}) between consecutive IRs, i.e. for a
block its input against its output, averaged over the probe batches. We ask ``redaudit.scan``
for exactly those tensors (explicit taps) so the numbers are the ones ``scan`` would report.
A block whose input is a graph input cannot be tapped directly (scan taps node outputs only):
the measuring copy of the model reads it through an Identity node instead.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from redaudit.prune.candidates import Block
from redaudit.core.result import ScanResult


@dataclass(frozen=True)
class ProbeOptions:
    """Keyword arguments for ``redaudit.scan`` (inputs, samples, seed, dims, cka_batch, epsilon,
    …), passed through unchanged so prune measures exactly what scan would."""

    scan: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.scan.get(key, default)

    def scan_kwargs(self, **overrides: Any) -> dict[str, Any]:
        return {**self.scan, **overrides}


def _tap_name(tensor: str, graph_inputs: set[str]) -> str:
    return f"{tensor}/prune_tap" if tensor in graph_inputs else tensor


def _with_input_taps(model: onnx.ModelProto, tensors: set[str]) -> onnx.ModelProto:
    if not tensors:
        return model
    tapped = copy.deepcopy(model)
    for position, name in enumerate(sorted(tensors)):
        tapped.graph.node.insert(position, helper.make_node(
            "Identity", [name], [f"{name}/prune_tap"], name=f"{name}/prune_tap"))
    return tapped


def block_similarity(model: onnx.ModelProto, blocks: Sequence[Block],
                     probe: ProbeOptions) -> tuple[np.ndarray, ScanResult]:
    """CKA(input, output) per block (NaN where a side was degenerate) and the scan behind it."""
    from redaudit import scan

    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = {inp.name for inp in model.graph.input} - initializers
    entries_from_inputs = {block.entry for block in blocks if block.entry in graph_inputs}
    measured = _with_input_taps(model, entries_from_inputs)
    taps: list[str] = []
    for block in blocks:
        for tensor in (block.entry, block.exit):
            name = _tap_name(tensor, graph_inputs)
            if name not in taps:
                taps.append(name)
    result = scan(measured, **probe.scan_kwargs(taps=tuple(taps), level="block"))
    position = {name: i for i, name in enumerate(result.layer_names)}
    scores = np.full(len(blocks), np.nan)
    for i, block in enumerate(blocks):
        first = position.get(_tap_name(block.entry, graph_inputs))
        second = position.get(_tap_name(block.exit, graph_inputs))
        if first is not None and second is not None:
            scores[i] = float(result.similarity[first, second])
    return scores, result
