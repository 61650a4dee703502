"""Choose the intermediate representations (IRs) to compare.

``block`` (the paper's choice for residual networks): the stem output and every residual
merge point, taken after the block's trailing normalisation/activation; for transformers one IR
per layer, the hidden state after it (:mod:`redaudit.core.units`). ``sublayer``: a transformer's
attention and MLP residual halves, one IR each (FinerCut's unit).
``layer``: each weighted operator with its trailing elementwise chain (the chain's end keeps
Conv+activation fusion intact). ``op``: every eligible node output.
At ``block`` and ``layer`` level a recurrent layer (an ONNX LSTM/GRU/RNN node or an unrolled
recurrence, :mod:`redaudit.core.recurrence`) is one IR, its output sequence; nothing inside it
is tapped. docs/taps.md says what is tapped and why.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from redaudit.core.blocks import chain_end, find_residual_merges  # noqa: F401 - re-exported
from redaudit.core.dataflow import is_weighted
from redaudit.core.graph import GraphIndex
from redaudit.core.hidden_layers import hidden_layer_notes
from redaudit.core.recurrence import Recurrence, find_recurrences, recurrent_region
from redaudit.core.spec import LEVELS
from redaudit.core.units import ROLE_CROSS, UnitLayout, find_units
from redaudit.errors import TapError

#: What one IR is, by the level actually used (block and sublayer name the model's unit).
UNIT_OF_LEVEL = {"layer": "weighted layer", "op": "operator output", "tap": "tapped tensor"}


@dataclass(frozen=True)
class TapPoint:
    """One IR: the tensor to fetch and a short description of what computed it.

    ``shape`` is the static shape for display. A recurrent layer's output sequence carries its
    structure explicitly, since typing often cannot tell it: ``rank``, the ``batch_axis`` (2 for
    an ONNX LSTM's time-major Y) and the ``time_axis`` its reduction averages."""

    tensor: str
    op: str
    node: str
    shape: tuple[int | str, ...]
    rank: int | None = None
    batch_axis: int = 0
    time_axis: int | None = None
    unit: str = ""  # what this IR is: "embedding", "decoder layer 3", "decoder layer 3 attention", ...


@dataclass(frozen=True)
class TapSelection:
    points: list[TapPoint]
    level: str  # the level actually used ("layer" after a block fallback, "tap" for explicit taps)
    warnings: list[str]
    unit: str = ""  # what one IR is at that level: "decoder layer", "residual block", "weighted layer", ...


def _point(index: GraphIndex, tensor: str, anchor: onnx.NodeProto) -> TapPoint:
    end_node = index.node_of(tensor)
    op = anchor.op_type
    if end_node is not None and end_node is not anchor and end_node.op_type != anchor.op_type:
        op = f"{anchor.op_type}+{end_node.op_type}"
    tensor_type = index.types.get(tensor)
    shape = tensor_type.pretty_shape() if tensor_type else ()
    return TapPoint(tensor=tensor, op=op, node=anchor.name or anchor.output[0], shape=shape)


def _recurrent_point(index: GraphIndex, found: Recurrence) -> TapPoint:
    anchor = index.nodes[found.anchor]
    tensor_type = index.types.get(found.output)
    shape = tensor_type.pretty_shape() if tensor_type else ()
    return TapPoint(tensor=found.output, op=found.op, node=anchor.name or anchor.output[0], shape=shape,
                    rank=found.rank, batch_axis=found.batch_axis, time_axis=found.time_axis)


def _recurrent_points(index: GraphIndex) -> list[tuple[int, TapPoint]]:
    """(graph position, point) of each recurrent layer whose output can be fetched."""
    return [(found.anchor, _recurrent_point(index, found)) for found in find_recurrences(index)
            if found.output in index.activations and (tensor_type := index.types.get(found.output)) is not None
            and tensor_type.is_float]


def _with_recurrences(index: GraphIndex, points: list[tuple[int, TapPoint]]) -> list[TapPoint]:
    """Points and recurrent layers merged in graph order, one point per tensor."""
    merged: dict[str, TapPoint] = {}
    for _, point in sorted([*points, *_recurrent_points(index)], key=lambda item: item[0]):
        merged.setdefault(point.tensor, point)
    return list(merged.values())


def layer_points(index: GraphIndex) -> list[TapPoint]:
    points: dict[str, tuple[int, TapPoint]] = {}
    inside = recurrent_region(index)
    for position, node in enumerate(index.nodes):
        if not is_weighted(index, node) or position in inside:
            continue
        if not node.output or not index.is_tappable(node.output[0]):
            continue
        end = chain_end(index, node.output[0])
        if not index.is_tappable(end):
            end = node.output[0]
        points.setdefault(end, (position, _point(index, end, node)))
    return _with_recurrences(index, list(points.values()))


def op_points(index: GraphIndex) -> list[TapPoint]:
    points: dict[str, TapPoint] = {}
    for node in index.nodes:
        for name in node.output:
            if name and index.is_tappable(name):
                points.setdefault(name, _point(index, name, node))
    return list(points.values())


def _unit_point(index: GraphIndex, tensor: str, anchor: int, unit: str) -> tuple[int, TapPoint]:
    point = _point(index, tensor, index.nodes[anchor])
    return anchor, TapPoint(point.tensor, point.op, point.node, point.shape, unit=unit)


def _stem_point(index: GraphIndex, layout: UnitLayout) -> list[tuple[int, TapPoint]]:
    stem = layout.stem
    stem_node = index.node_of(stem) if stem else None
    if stem is None or stem_node is None or not index.is_tappable(stem):
        return []
    point = _point(index, stem, stem_node)
    unit = "embedding" if layout.transformer else "stem"
    return [(-1, TapPoint(point.tensor, point.op, point.node, point.shape, unit=unit))]


def block_points(index: GraphIndex) -> list[TapPoint]:
    """The stem (the first block's input), one IR per unit — a transformer layer (the hidden
    state after it) or a residual block — and one per recurrent layer."""
    layout = find_units(index)
    points = _stem_point(index, layout)
    for number, unit in enumerate(layout.units):
        if index.is_tappable(unit.exit):
            points.append(_unit_point(index, unit.exit, unit.anchor, f"{layout.kind} {number}"))
    return _with_recurrences(index, points)


def sublayer_points(index: GraphIndex) -> list[TapPoint]:
    """The stem and one IR per residual half of each transformer layer (attention, cross-attention
    in a decoder that has it, MLP); a parallel layer (attention and MLP on one residual) is one
    IR, and so is a residual block."""
    layout = find_units(index)
    points = _stem_point(index, layout)
    for number, unit in enumerate(layout.units):
        for sublayer in unit.sublayers:
            role = "" if sublayer.role == "residual" else f" {sublayer.role}"
            if index.is_tappable(sublayer.exit):
                points.append(_unit_point(index, sublayer.exit, sublayer.merge.add_position,
                                          f"{layout.kind} {number}{role}"))
    return _with_recurrences(index, points)


def unit_name(index: GraphIndex, level: str) -> str:
    """What one IR is at ``level`` (the level actually used), for reports."""
    if level not in ("block", "sublayer"):
        return UNIT_OF_LEVEL.get(level, level)
    layout = find_units(index)
    if not layout.units:
        return "recurrent layer" if find_recurrences(index) else "residual block"
    if level == "sublayer" and layout.transformer:
        if layout.parallel:
            return f"{layout.kind} (attention+MLP in parallel)"
        cross = any(sublayer.role == ROLE_CROSS for sublayer in layout.sublayers)
        return "attention/cross-attention/MLP sublayer" if cross else "attention/MLP sublayer"
    return layout.kind


def explicit_points(index: GraphIndex, names: list[str]) -> list[TapPoint]:
    points: dict[str, TapPoint] = {}
    for name in names:
        if name in index.subgraph_tensors and name not in index.producer:
            raise TapError(f"tensor {name!r} is inside an If/Loop/Scan subgraph and cannot be tapped; "
                           "tap the control-flow node's output instead")
        if name in index.initializers or name in index.graph_inputs:
            raise TapError(f"{name!r} is a weight or graph input, not a layer output; tap a node output")
        if name not in index.producer:
            raise TapError(f"no tensor named {name!r} in the model; list candidates with `redaudit taps`")
        if not index.is_tappable(name):
            tensor_type = index.types.get(name)
            detail = f"shape {tensor_type.pretty_shape()}" if tensor_type else "unknown type"
            raise TapError(f"tensor {name!r} ({detail}) is not a float activation with a batch axis")
        node = index.node_of(name)
        assert node is not None
        points.setdefault(name, _point(index, name, node))
    return list(points.values())


def select_taps(index: GraphIndex, level: str = "block", taps: list[str] | tuple[str, ...] = ()) -> TapSelection:
    """Pick the IR points for ``level`` (or the explicit ``taps``, which override the level)."""
    hidden = hidden_layer_notes(index.model)  # weighted layers in a body: named, one line each
    warnings: list[str] = list(hidden)
    if index.subgraph_tensors and not hidden:
        warnings.append(f"{len(index.subgraph_tensors)} tensors inside If/Loop/Scan subgraphs cannot be "
                        "tapped and were skipped")
    if taps:
        return TapSelection(explicit_points(index, list(taps)), "tap", warnings, UNIT_OF_LEVEL["tap"])
    if level not in LEVELS:
        raise TapError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}")
    used = level
    if level == "sublayer" and find_units(index).units and not find_units(index).transformer:
        warnings.append("no transformer layers found; --level sublayer taps the residual blocks, as block does")
    if level in ("block", "sublayer"):
        points = block_points(index) if level == "block" else sublayer_points(index)
        if len(points) < 2:
            warnings.append("no residual blocks found; using --level layer instead")
            used, points = "layer", layer_points(index)
    elif level == "layer":
        points = layer_points(index)
    else:
        points = op_points(index)
    if used == "layer" and len(points) < 2:
        warnings.append("fewer than 2 weighted layers found; using --level op instead")
        used, points = "op", op_points(index)
    if len(points) < 2:
        raise TapError(f"found {len(points)} tappable float activation(s) with a batch axis; "
                       "at least 2 are needed to compare layers" + "".join(f"; {note}" for note in hidden))
    return TapSelection(points, used, warnings, unit_name(index, used))
