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

import numpy as np
import onnx
from onnx import helper

from redaudit.core.cancel import CancelCheck
from redaudit.core.engine import scan_prepared
from redaudit.core.prepared import PreparedModel
from redaudit.core.result import ScanResult
from redaudit.core.spec import ScanSpec
from redaudit.prune.candidates import Block


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


def block_similarity(prepared: PreparedModel, blocks: Sequence[Block], spec: ScanSpec,
                     arrays: Mapping[str, np.ndarray] | None = None,
                     cancel: CancelCheck | None = None) -> tuple[np.ndarray, ScanResult]:
    """CKA(input, output) per block (NaN where a side was degenerate) and the scan behind it
    (which polls ``cancel`` as every scan does)."""
    graph_inputs = set(prepared.index.graph_inputs)
    entries_from_inputs = {block.entry for block in blocks if block.entry in graph_inputs}
    measured = prepared
    if entries_from_inputs:
        measured = prepared.derived(_with_input_taps(prepared.proto, entries_from_inputs))
    taps: list[str] = []
    for block in blocks:
        for tensor in (block.entry, block.exit):
            name = _tap_name(tensor, graph_inputs)
            if name not in taps:
                taps.append(name)
    result = scan_prepared(measured, spec.with_options(taps=tuple(taps), level="block"), inputs=arrays,
                           cancel=cancel)
    position = {name: i for i, name in enumerate(result.layer_names)}
    scores = np.full(len(blocks), np.nan)
    for i, block in enumerate(blocks):
        first = position.get(_tap_name(block.entry, graph_inputs))
        second = position.get(_tap_name(block.exit, graph_inputs))
        if first is not None and second is not None:
            scores[i] = float(result.similarity[first, second])
    return scores, result
