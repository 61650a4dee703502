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
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from redaudit.prune.candidates import Block
from redaudit.result import ScanResult


@dataclass(frozen=True)
class ProbeOptions:
    """The scan input options, passed through unchanged (see ``redaudit.scan``)."""

    inputs: Any = None  # None (synthetic) | path to .npz | dict[str, np.ndarray]
    samples: int = 2560
    seed: int = 0
    dims: Mapping[str, int] | None = None
    int_range: tuple[int, int] | None = None
    cka_batch: int | None = 256

    def scan_kwargs(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "samples": self.samples, "seed": self.seed,
                "dims": dict(self.dims or {}), "int_range": self.int_range, "cka_batch": self.cka_batch}


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
    result = scan(measured, taps=tuple(taps), **probe.scan_kwargs())
    position = {name: i for i, name in enumerate(result.layer_names)}
    scores = np.full(len(blocks), np.nan)
    for i, block in enumerate(blocks):
        first = position.get(_tap_name(block.entry, graph_inputs))
        second = position.get(_tap_name(block.exit, graph_inputs))
        if first is not None and second is not None:
            scores[i] = float(result.similarity[first, second])
    return scores, result
