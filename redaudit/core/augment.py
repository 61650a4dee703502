"""Expose chosen IRs as extra graph outputs, reduced inside the graph when pooling.

Only the chosen tensors become outputs (every extra output costs time and blocks fusion of
what consumes it). With ``reduce="pool"`` a ReduceMean node per tap is appended so that only
(N, C) tensors leave onnxruntime: global average pooling over spatial axes for channel-first
maps, mean over tokens for (N, T, D) sequences, mean over time for a recurrent layer's output
sequence (moved batch-first by a Transpose when the layer is time-major).

The mean is taken in float64 (a Cast before the ReduceMean). A float32 mean cannot hold what
CKA measures on some real layers: globally pooled post-activation maps whose across-sample spread
is 0.03 % of their mean (a YOLO-style detector's blocks) lose ~0.6 % of that spread to float32
accumulation in onnxruntime's ReduceMean, and ~0.02 % to float32 rounding of the result alone;
the similarity matrix then differs from a float64 computation by 1e-5. The Cast costs one pass
over each pooled tap and a transient float64 copy of it.

The reduction depends on the tap's rank, and ONNX shape inference does not always know it (a
Reshape whose target shape is computed at run time leaves its output shapeless). Such taps are
*unresolved*: :func:`augment` exposes them raw, the caller learns their rank from one probe
batch (see :mod:`redaudit.core.shapes`) and augments again with ``ranks`` — so a scan never
reduces a tensor differently because its shape was unknown statically. Every tap also gets a
small ``(1, rank)`` int64 output holding its runtime shape, which the result records.

Token-level pooling ignores padding: in a language model with an attention-mask input, a
(N, T, D) token tap is averaged over the tokens the mask keeps (its last T columns, as the mask
also spans a cache's past), ``Σ m·x / Σ m`` — the plain mean when the mask is all ones.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx
from onnx import helper

from redaudit.core.graph import GraphIndex
from redaudit.core.lm_inputs import padding_mask
from redaudit.core.spec import REDUCTIONS  # noqa: F401 - defined once, re-exported
from redaudit.core.tap import TapPoint
from redaudit.errors import ConfigError

_CHANNEL_FIRST_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "ConvInteger", "QLinearConv",
                      "FusedConv", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "Resize", "Upsample"}


@dataclass(frozen=True)
class Reduction:
    """How one IR becomes a feature vector per sample.

    ``axes`` are the axes averaged, numbered as in the tapped tensor (empty: flattened as is;
    None: not decided yet because the rank is unknown). ``layout`` is what the axes mean:
    ``tokens`` (N, T, D) or a recurrent output sequence, ``channels`` (N, C, *spatial), or
    ``features`` (N, D) — nothing to pool. ``source`` says who decided: ``override``
    (``--layout``), ``graph`` (the nearest producer of a 3-D tensor), ``rank`` (the rank alone
    decides) or ``recurrent`` (a recurrent layer's sequence: mean over time).
    """

    axes: tuple[int, ...] | None
    layout: str | None
    source: str


@dataclass(frozen=True)
class AugmentedModel:
    proto: onnx.ModelProto
    tensors: list[str]  # the tapped tensors, in tap order
    fetch_names: list[str]  # graph output to fetch per tap, in tap order
    shape_names: list[str]  # graph output holding each tap's runtime shape, (1, rank) int64
    reductions: list[Reduction]  # per tap
    unresolved: tuple[str, ...]  # taps whose rank is unknown: exposed raw, to be probed

    @property
    def pooled_axes(self) -> list[tuple[int, ...]]:
        """Axes reduced inside the graph per tap (empty = none)."""
        return [reduction.axes or () for reduction in self.reductions]


def _is_channel_first(index: GraphIndex, tensor: str, depth: int = 64) -> bool:
    """Whether axis 1 of a rank-3 tensor holds the channels of a convolution-like producer.

    Walks back to the nearest convolution-like or matrix-product producer, following which axis
    of each tensor the tap's axis 1 came from: a ``Transpose`` permutes it (SVTR and other
    OCR heads flatten a (N, C, H, W) map and transpose it to (N, H·W, C) tokens), reshapes
    keep it. At a convolution the tap is channels when that axis is the channel axis; at a
    matrix product (features last) when it is not the token axis."""
    frontier: list[tuple[str, int]] = [(tensor, 1)]
    seen: set[str] = set()
    while frontier and depth > 0:
        current, axis = frontier.pop(0)
        if current in seen:
            continue
        seen.add(current)
        node = index.node_of(current)
        if node is None:
            continue
        depth -= 1
        if node.op_type in _CHANNEL_FIRST_OPS:
            return axis == 1
        if node.op_type in ("MatMul", "Gemm", "Einsum", "Attention", "MultiHeadAttention"):
            return axis != 1
        if node.op_type == "Transpose":
            perm = next((list(attr.ints) for attr in node.attribute if attr.name == "perm"), None)
            if perm and axis < len(perm):
                axis = perm[axis]
        frontier.extend((name, axis) for name in node.input if name in index.activations)
    return False


def static_rank(index: GraphIndex, tap: TapPoint) -> int | None:
    """The tap's rank as typing knows it (None: unknown)."""
    if tap.rank is not None:
        return tap.rank
    tensor_type = index.types.get(tap.tensor)
    return None if tensor_type is None or tensor_type.shape is None else len(tensor_type.shape)


def decide_reduction(index: GraphIndex, tap: TapPoint, rank: int | None, reduce: str,
                     layout: str | None = None) -> Reduction:
    """The documented reduction for ``tap`` at ``rank``: tokens of (N, T, D), spatial axes of
    (N, C, ...), time of a recurrent sequence; ``layout`` overrides the graph's guess for a
    3-D tensor. ``reduce="flatten"`` keeps every axis but still states the layout."""
    if layout is not None and (tap.time_axis is not None or tap.batch_axis != 0):
        raise ConfigError(f"--layout {tap.tensor}={layout}: the tap is a recurrent layer's output, averaged "
                          "over time; --layout only applies to 3-D (N, T, D) or (N, C, L) taps")
    if rank is None and (tap.batch_axis != 0 or tap.time_axis is None):
        found = Reduction(None, None, "rank")
    elif tap.time_axis is not None:
        found = Reduction((tap.time_axis,), "tokens", "recurrent")
    elif tap.batch_axis != 0:  # a recurrent layer's last state only, (D, N, H): nothing to pool
        found = Reduction((), "features", "recurrent")
    elif rank is None:
        found = Reduction(None, None, "rank")
    elif layout is not None:
        if rank != 3:
            raise ConfigError(f"--layout {tap.tensor}={layout}: the tap has {rank} axes; --layout only "
                              "chooses between (N, T, D) tokens and (N, C, L) channels for 3-D taps")
        found = Reduction((1,) if layout == "tokens" else (2,), layout, "override")
    elif rank <= 2:
        found = Reduction((), "features", "rank")
    elif rank == 3:
        channels = _is_channel_first(index, tap.tensor)
        found = Reduction((2,) if channels else (1,), "channels" if channels else "tokens", "graph")
    else:
        found = Reduction(tuple(range(2, rank)), "channels", "rank")
    if reduce != "pool" and not (found.axes is None and tap.batch_axis != 0):
        # flattening needs no rank (unless the batch axis must move first); the layout is still stated
        return Reduction((), found.layout, found.source)
    return found


def pool_axes(index: GraphIndex, tap: TapPoint, layout: str | None = None) -> tuple[int, ...]:
    """Axes the documented reduction averages (static rank; empty when it is unknown)."""
    return decide_reduction(index, tap, static_rank(index, tap), "pool", layout).axes or ()


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


class _Builder:
    """Appends nodes with fresh names, honouring the opset's attribute-vs-input conventions."""

    def __init__(self, proto: onnx.ModelProto, taken: set[str]) -> None:
        self.graph = proto.graph
        self.opset = _default_opset(proto)
        self.taken = taken

    def fresh(self, name: str) -> str:
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name

    def axes_node(self, op: str, source: str, out: str, axes: tuple[int, ...], since: int, **attrs) -> None:
        if self.opset >= since:
            axes_name = self.fresh(f"{out}_axes")
            self.graph.initializer.append(helper.make_tensor(axes_name, onnx.TensorProto.INT64, [len(axes)],
                                                             list(axes)))
            node = helper.make_node(op, [source, axes_name], [out], name=f"{out}_node", **attrs)
        else:
            node = helper.make_node(op, [source], [out], axes=list(axes), name=f"{out}_node", **attrs)
        self.graph.node.append(node)

    def masked_token_mean(self, source: str, tap: str, mask: str, out: str) -> None:
        """``Σ_t m·x / max(Σ_t m, 1)`` over axis 1 of a float64 (N, T, D) ``source``, with m the
        last T columns of the (N, P + T) ``mask`` (T read from the tapped tensor at run time)."""
        names = {key: self.fresh(f"{out}_{key}") for key in ("len", "neg", "end", "axis", "cut", "m", "w", "mx",
                                                             "num", "den", "one", "safe", "two")}
        consts = {"end": [2**62], "axis": [1], "one": [1.0], "two": [2]}
        for key, values in consts.items():
            dtype = onnx.TensorProto.DOUBLE if key == "one" else onnx.TensorProto.INT64
            self.graph.initializer.append(helper.make_tensor(names[key], dtype, [1], values))
        add = self.graph.node.append
        add(helper.make_node("Shape", [tap], [names["len"]], start=1, end=2, name=f"{names['len']}_node"))
        add(helper.make_node("Neg", [names["len"]], [names["neg"]], name=f"{names['neg']}_node"))
        add(helper.make_node("Slice", [mask, names["neg"], names["end"], names["axis"]], [names["cut"]],
                             name=f"{names['cut']}_node"))
        add(helper.make_node("Cast", [names["cut"]], [names["m"]], to=onnx.TensorProto.DOUBLE, name=f"{names['m']}_node"))
        add(helper.make_node("Unsqueeze", [names["m"], names["two"]], [names["w"]], name=f"{names['w']}_node"))
        add(helper.make_node("Mul", [source, names["w"]], [names["mx"]], name=f"{names['mx']}_node"))
        self.axes_node("ReduceSum", names["mx"], names["num"], (1,), 13, keepdims=0)
        self.axes_node("ReduceSum", names["w"], names["den"], (1,), 13, keepdims=0)
        add(helper.make_node("Max", [names["den"], names["one"]], [names["safe"]], name=f"{names['safe']}_node"))
        add(helper.make_node("Div", [names["num"], names["safe"]], [out], name=f"{out}_node"))

    def output(self, name: str, elem_type: int) -> None:
        self.graph.output.append(helper.make_tensor_value_info(name, elem_type, None))


def augment(model: onnx.ModelProto, index: GraphIndex, taps: list[TapPoint], reduce: str,
            layouts: Mapping[str, str] | None = None, ranks: Mapping[str, int] | None = None) -> AugmentedModel:
    """Return a copy of ``model`` whose outputs include one (optionally pooled) tensor and one
    runtime shape per tap. ``ranks`` gives the probed rank of taps typing left unknown. The
    model's own outputs stay as they are. Raises ConfigError for a ``layouts`` name that is not
    tapped or that names a tap without three axes."""
    layouts = dict(layouts or {})
    tapped = {tap.tensor for tap in taps}
    unknown = sorted(set(layouts) - tapped)
    if unknown:
        raise ConfigError(f"--layout names {', '.join(map(repr, unknown))}, which this scan does not tap; "
                          "name a tapped tensor (see `redaudit taps MODEL`)")
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    graph = augmented.graph
    # Declared shapes are hints, and wrong ones (a quantized CRNN declares its rank-3 output as
    # rank 2) make onnxruntime's Shape kernel fail on the shape outputs added below.
    del graph.value_info[:]
    for output in graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    existing_outputs = {output.name for output in graph.output}
    build = _Builder(augmented, set(index.producer) | index.initializers | set(index.graph_inputs))
    mask = padding_mask(model) if build.opset >= 15 else None  # Shape(start, end) needs opset 15
    fetch_names, shape_names, reductions, unresolved = [], [], [], []
    for position, tap in enumerate(taps):
        tensor_type = index.types.get(tap.tensor)
        elem_type = tensor_type.elem_type if tensor_type else onnx.TensorProto.FLOAT
        rank = static_rank(index, tap)
        if rank is None and ranks and tap.tensor in ranks:
            rank = int(ranks[tap.tensor])
        reduction = decide_reduction(index, tap, rank, reduce, layouts.get(tap.tensor))
        if reduction.axes is None:
            unresolved.append(tap.tensor)
        reductions.append(reduction)
        source, axes = tap.tensor, reduction.axes or ()
        if tap.batch_axis != 0 and rank is not None:  # time-major recurrent output: batch axis first
            order = [tap.batch_axis] + [axis for axis in range(rank) if axis != tap.batch_axis]
            source = build.fresh(f"redaudit_batch_first_{position}")
            graph.node.append(helper.make_node("Transpose", [tap.tensor], [source], perm=order,
                                               name=f"{source}_node"))
            axes = tuple(order.index(axis) for axis in axes)
        if axes:  # pooled in float64: see the module docstring
            wide = build.fresh(f"redaudit_float64_{position}")
            graph.node.append(helper.make_node("Cast", [source], [wide], to=onnx.TensorProto.DOUBLE,
                                               name=f"{wide}_node"))
            out_name = build.fresh(f"redaudit_pool_{position}")
            if mask is not None and reduction.layout == "tokens" and axes == (1,) and rank == 3:
                build.masked_token_mean(wide, tap.tensor, mask, out_name)
            else:
                build.axes_node("ReduceMean", wide, out_name, tuple(sorted(axes)), 18, keepdims=0)
            source, elem_type = out_name, onnx.TensorProto.DOUBLE
        if source not in existing_outputs:
            build.output(source, elem_type)
            existing_outputs.add(source)
        fetch_names.append(source)
        shape_name = build.fresh(f"redaudit_shape_{position}")
        graph.node.append(helper.make_node("Shape", [tap.tensor], [f"{shape_name}_flat"], name=f"{shape_name}_flat_node"))
        build.taken.add(f"{shape_name}_flat")
        build.axes_node("Unsqueeze", f"{shape_name}_flat", shape_name, (0,), 13)
        build.output(shape_name, onnx.TensorProto.INT64)
        shape_names.append(shape_name)
    return AugmentedModel(augmented, [tap.tensor for tap in taps], fetch_names, shape_names, reductions, tuple(unresolved))
