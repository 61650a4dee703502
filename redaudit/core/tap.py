"""Choose the intermediate representations (IRs) to compare.

``block`` (the paper's choice for residual networks): the stem output and every residual
merge point, taken after the block's trailing normalisation/activation; for transformers the
attention merge is folded into the encoder layer so there is one IR per layer.
``layer``: each weighted operator with its trailing elementwise chain (the chain's end keeps
Conv+activation fusion intact). ``op``: every eligible node output.
At ``block`` and ``layer`` level a recurrent layer (an ONNX LSTM/GRU/RNN node or an unrolled
recurrence, :mod:`redaudit.core.recurrence`) is one IR, its output sequence; nothing inside it
is tapped. docs/taps.md says what is tapped and why.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from redaudit.errors import TapError
from redaudit.core.blocks import chain_end, encoder_layer_merges, find_residual_merges, is_weighted
from redaudit.core.graph import GraphIndex
from redaudit.core.recurrence import Recurrence, find_recurrences, recurrent_region

LEVELS = ("block", "layer", "op")  # re-exported; the spec validates the level


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


@dataclass(frozen=True)
class TapSelection:
    points: list[TapPoint]
    level: str  # the level actually used ("layer" after a block fallback, "tap" for explicit taps)
    warnings: list[str]


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


def block_points(index: GraphIndex) -> list[TapPoint]:
    """The stem (the first block's input), one IR per block and one per recurrent layer; a
    transformer encoder layer's attention and feed-forward merges are one layer, tapped at its end."""
    merges = find_residual_merges(index)
    points: list[tuple[int, TapPoint]] = []
    if merges:
        stem = merges[0].entry
        stem_node = index.node_of(stem)
        if index.is_tappable(stem) and stem_node is not None:
            points.append((-1, _point(index, stem, stem_node)))
    for group in encoder_layer_merges(index, merges):
        last = group[-1]
        if index.is_tappable(last.exit):
            points.append((last.add_position, _point(index, last.exit, index.nodes[last.add_position])))
    return _with_recurrences(index, points)


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
    warnings: list[str] = []
    if index.subgraph_tensors:
        warnings.append(f"{len(index.subgraph_tensors)} tensors inside If/Loop/Scan subgraphs cannot be "
                        "tapped and were skipped")
    if taps:
        return TapSelection(explicit_points(index, list(taps)), "tap", warnings)
    if level not in LEVELS:
        raise TapError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}")
    used = level
    if level == "block":
        points = block_points(index)
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
                       "at least 2 are needed to compare layers")
    return TapSelection(points, used, warnings)
