"""Choose the intermediate representations (IRs) to compare.

``block`` (the paper's choice for residual networks): the stem output and every residual
merge point, taken after the block's trailing normalisation/activation; for transformers the
attention merge is folded into the encoder layer so there is one IR per layer.
``layer``: each weighted operator with its trailing elementwise chain (the chain's end keeps
Conv+activation fusion intact). ``op``: every eligible node output.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from redaudit.errors import TapError
from redaudit.core.graph import GraphIndex

LEVELS = ("block", "layer", "op")
WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "ConvInteger", "MatMulInteger",
                "QLinearConv", "QLinearMatMul", "FusedConv", "FusedMatMul", "LSTM", "GRU", "RNN"}
ELEMENTWISE_OPS = {
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Gelu", "FastGelu", "Elu", "Selu", "Celu",
    "Clip", "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Mish", "Erf", "ThresholdedRelu",
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Neg", "Abs", "Max", "Min",
    "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "SkipLayerNormalization", "Identity", "Dropout",
}
_REGION_LIMIT = 24


@dataclass(frozen=True)
class TapPoint:
    """One IR: the tensor to fetch and a short description of what computed it."""

    tensor: str
    op: str
    node: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class TapSelection:
    points: list[TapPoint]
    level: str  # the level actually used ("layer" after a block fallback, "tap" for explicit taps)
    warnings: list[str]


def chain_end(index: GraphIndex, tensor: str) -> str:
    """End of the elementwise region that starts at ``tensor`` (bias add, norm, activation,
    decomposed GELU...). The region may only take ``tensor``, its own tensors and constants as
    inputs; its end is the single tensor that leaves it. Returns ``tensor`` when ambiguous."""
    region_nodes: set[int] = set()
    region_tensors = {tensor}
    queue = [tensor]
    while queue:
        current = queue.pop()
        for position in index.consumers.get(current, []):
            if position in region_nodes:
                continue
            node = index.nodes[position]
            inputs = [name for name in node.input if name]
            joins = node.op_type in ELEMENTWISE_OPS and all(
                name in region_tensors or name in index.constants for name in inputs)
            if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
                joins = False
            if not joins:
                continue
            region_nodes.add(position)
            if len(region_nodes) > _REGION_LIMIT:
                return tensor
            for name in node.output[:1]:
                region_tensors.add(name)
                queue.append(name)
    exits = [name for name in region_tensors
             if name in index.graph_outputs
             or any(pos not in region_nodes for pos in index.consumers.get(name, []))
             or not index.consumers.get(name)]
    if len(exits) != 1:
        return tensor
    end = exits[0]
    start_type, end_type = index.types.get(tensor), index.types.get(end)
    if start_type and end_type and start_type.shape and end_type.shape and len(start_type.shape) != len(end_type.shape):
        return tensor
    return end


def _has_weight(index: GraphIndex, node: onnx.NodeProto) -> bool:
    if node.op_type in ("Conv", "ConvTranspose", "Gemm", "ConvInteger", "QLinearConv", "FusedConv",
                        "LSTM", "GRU", "RNN"):
        return True
    return any(name in index.constants for name in node.input if name)


def _point(index: GraphIndex, tensor: str, anchor: onnx.NodeProto) -> TapPoint:
    end_node = index.node_of(tensor)
    op = anchor.op_type
    if end_node is not None and end_node is not anchor and end_node.op_type != anchor.op_type:
        op = f"{anchor.op_type}+{end_node.op_type}"
    tensor_type = index.types.get(tensor)
    shape = tensor_type.pretty_shape() if tensor_type else ()
    return TapPoint(tensor=tensor, op=op, node=anchor.name or anchor.output[0], shape=shape)


def layer_points(index: GraphIndex) -> list[TapPoint]:
    points: dict[str, TapPoint] = {}
    for node in index.nodes:
        if node.op_type not in WEIGHTED_OPS or not _has_weight(index, node):
            continue
        if not node.output or not index.is_tappable(node.output[0]):
            continue
        end = chain_end(index, node.output[0])
        if not index.is_tappable(end):
            end = node.output[0]
        points.setdefault(end, _point(index, end, node))
    return list(points.values())


def op_points(index: GraphIndex) -> list[TapPoint]:
    points: dict[str, TapPoint] = {}
    for node in index.nodes:
        for name in node.output:
            if name and index.is_tappable(name):
                points.setdefault(name, _point(index, name, node))
    return list(points.values())


def ancestor_masks(index: GraphIndex) -> tuple[dict[str, int], dict[str, int]]:
    """Bit position per activation tensor and, per tensor, a bitmask of everything it depends
    on (itself included). One forward pass in topological order; Python ints as bitsets."""
    bit_of: dict[str, int] = {}
    masks: dict[str, int] = {}
    for name in index.graph_inputs:
        bit_of[name] = len(bit_of)
        masks[name] = 1 << bit_of[name]
    for node in index.nodes:
        inherited = 0
        for name in node.input:
            inherited |= masks.get(name, 0)
        for name in node.output:
            if name and name in index.activations:
                bit_of[name] = len(bit_of)
                masks[name] = inherited | (1 << bit_of[name])
    return bit_of, masks


@dataclass(frozen=True)
class ResidualMerge:
    """An Add that merges a residual branch back: ``split`` is where the paths diverged."""

    add_node: onnx.NodeProto
    split: str
    branch_ops: frozenset[str]


def _compatible_shapes(index: GraphIndex, left: str, right: str) -> bool:
    """Same rank and equal static dims (symbolic dims are renamed freely by shape inference,
    so two differently named symbols may still be equal); unknown types are accepted."""
    left_type, right_type = index.types.get(left), index.types.get(right)
    if not (left_type and right_type and left_type.shape is not None and right_type.shape is not None):
        return True
    if len(left_type.shape) != len(right_type.shape):
        return False
    return all(not (isinstance(a, int) and isinstance(b, int)) or a == b
               for a, b in zip(left_type.shape, right_type.shape))


def _bits(mask: int) -> list[int]:
    bits = []
    while mask:
        low = mask & -mask
        bits.append(low.bit_length() - 1)
        mask ^= low
    return bits


def find_residual_merges(index: GraphIndex) -> list[ResidualMerge]:
    """Adds of two same-shaped activations whose paths diverge at a common earlier tensor and
    whose branch contains a weighted operator (this excludes e.g. x + 0.04x³ inside GELU)."""
    bit_of, masks = ancestor_masks(index)
    name_of_bit = {bit: name for name, bit in bit_of.items()}
    merges = []
    for node in index.nodes:
        if node.op_type not in ("Add", "Sum") or len([n for n in node.input if n]) != 2:
            continue
        left, right = node.input[0], node.input[1]
        if left not in masks or right not in masks:
            continue
        if not _compatible_shapes(index, left, right):
            continue
        common = masks[left] & masks[right]
        if not common:
            continue
        split = name_of_bit[common.bit_length() - 1]  # latest common tensor in topological order
        branch_mask = (masks[left] | masks[right]) & ~masks[split]
        branch_nodes = [index.node_of(name_of_bit[bit]) for bit in _bits(branch_mask)]
        branch_ops = frozenset(n.op_type for n in branch_nodes if n is not None)
        weighted = any(n is not None and n.op_type in WEIGHTED_OPS and _has_weight(index, n)
                       for n in branch_nodes)
        if weighted:
            merges.append(ResidualMerge(node, split, branch_ops))
    return merges


def block_points(index: GraphIndex) -> list[TapPoint]:
    merges = find_residual_merges(index)
    if not merges:
        return []
    ends = [chain_end(index, merge.add_node.output[0]) for merge in merges]
    keep = []
    for position, merge in enumerate(merges):
        # Transformer: an attention merge directly followed by the FFN merge that starts from it
        # is one encoder layer; keep only the layer's final IR.
        nxt = merges[position + 1] if position + 1 < len(merges) else None
        if "Softmax" in merge.branch_ops and nxt is not None and nxt.split == ends[position] \
                and "Softmax" not in nxt.branch_ops:
            continue
        keep.append(position)
    points: dict[str, TapPoint] = {}
    stem = merges[0].split
    if index.is_tappable(stem):
        stem_node = index.node_of(stem)
        if stem_node is not None:
            points[stem] = _point(index, stem, stem_node)
    for position in keep:
        end = ends[position]
        if not index.is_tappable(end):
            end = merges[position].add_node.output[0]
        if index.is_tappable(end):
            points.setdefault(end, _point(index, end, merges[position].add_node))
    return list(points.values())


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
