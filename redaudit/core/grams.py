"""Flattened taps as centred Gram matrices built inside onnxruntime.

CKA needs of a flattened tap X (n × D) only its centred Gram K = X_c X_cᵀ (n × n) and two flags
(constant, finite). For a conv block output D is thousands (16 × 32 × 32 = 16,384), so fetching
X to build K in NumPy moves ~D/n times more data than K itself and runs the product on the one
thread beside onnxruntime. Here the graph computes, per flattened tap:

    Reshape(0, −1) → Cast(float64) → Sub(ReduceMean over samples) → Gemm(X_c, X_c, transB=1)

so K leaves onnxruntime in float64, centred and multiplied exactly as :func:`cka.centre` and the
float64 product in :mod:`redaudit.core.cka` would (only the order of the float64 sums differs:
~1e-16 relative). Pooled taps are (N, C) already and stay as they are.

The constant flag needs each column's spread, which the Gram alone cannot give: a small
``check`` scalar is computed beside it, max over columns of ``spread − 4·eps·magnitude`` with
high and low of the tap's values compared in float64 — :func:`cka.centre`'s rule, so
``check ≤ 0`` means constant. A NaN/Inf anywhere makes the column mean, and so every Gram entry,
non-finite, which gives the finite flag.

A Gram built per onnxruntime call is the CKA batch's Gram only when that call covers the whole
CKA batch: :func:`grams_in_graph` is the one place that decides it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

#: Units of rounding a constant column may still move by (the same rule as cka.centre).
_ROUNDING_UNITS = 4.0

_EPS = {onnx.TensorProto.FLOAT: float(np.finfo(np.float32).eps), onnx.TensorProto.DOUBLE: float(np.finfo(np.float64).eps),
        onnx.TensorProto.FLOAT16: float(np.finfo(np.float16).eps),
        onnx.TensorProto.BFLOAT16: 2.0 ** -7}


def grams_in_graph(reduce: str, cka_batch: int, run_size: int, fixed_batch: int | None,
                   micro_batch: int | None = None) -> bool:
    """Whether flattened taps may leave onnxruntime as centred Grams: only when ``reduce`` is
    ``flatten`` and each onnxruntime call holds exactly one CKA batch — the scan's call size
    (``run_size``) is the CKA batch, no micro-batch cap splits it, and a fixed batch axis (which
    chunks or pads every call) is absent or equal to it. Otherwise the taps are fetched whole and
    joined before CKA, as before."""
    return (reduce == "flatten" and run_size == cka_batch
            and fixed_batch in (None, cka_batch)
            and (micro_batch is None or micro_batch >= cka_batch))


@dataclass(frozen=True)
class GramOutputs:
    """Names of the graph outputs one flattened tap became."""

    gram: str  # (n, n) float64, centred
    check: str  # () float64: ≤ 0 when the tap is constant up to rounding


def append_centred_gram(builder: Any, source: str, position: int, elem_type: int) -> GramOutputs:
    """Append the nodes of the module docstring for tap ``source`` to ``builder`` (augment's
    ``_Builder``: fresh names, opset-aware axes) and return the outputs' names (not yet declared
    as graph outputs)."""
    graph = builder.graph
    name = f"redaudit_gram_{position}"

    def node(op: str, inputs: list[str], label: str, **attrs: Any) -> str:
        out = builder.fresh(f"{name}_{label}")
        graph.node.append(helper.make_node(op, inputs, [out], name=f"{out}_node", **attrs))
        return out

    def constant(label: str, tensor_type: int, dims: list[int], values: list[Any]) -> str:
        init = builder.fresh(f"{name}_{label}")
        graph.initializer.append(helper.make_tensor(init, tensor_type, dims, values))
        return init

    def reduce(op: str, source_name: str, label: str, axes: tuple[int, ...] | None, keepdims: int) -> str:
        out = builder.fresh(f"{name}_{label}")
        if axes is None:  # every axis
            graph.node.append(helper.make_node(op, [source_name], [out], name=f"{out}_node", keepdims=keepdims))
        else:
            builder.axes_node(op, source_name, out, axes, 18, keepdims=keepdims)
        return out

    flat = node("Reshape", [source, constant("shape", onnx.TensorProto.INT64, [2], [0, -1])], "flat")
    wide = node("Cast", [flat], "float64", to=onnx.TensorProto.DOUBLE)
    mean = reduce("ReduceMean", wide, "mean", (0,), 1)
    centred = node("Sub", [wide, mean], "centred")
    gemm_inputs = [centred, centred]
    if builder.opset < 11:  # C was required before opset 11
        gemm_inputs.append(constant("zero", onnx.TensorProto.DOUBLE, [], [0.0]))
    gram = node("Gemm", gemm_inputs, "matrix", transB=1)
    # The constant check (cka.centre's rule): max and min in the tap's dtype (half the bytes of
    # the float64 copy for float32; other dtypes use the exact float64 copy, same values), then
    # compared in float64.
    extremes = flat if elem_type == onnx.TensorProto.FLOAT else wide
    high = node("Cast", [reduce("ReduceMax", extremes, "high_own", (0,), 0)], "high", to=onnx.TensorProto.DOUBLE)
    low = node("Cast", [reduce("ReduceMin", extremes, "low_own", (0,), 0)], "low", to=onnx.TensorProto.DOUBLE)
    magnitude = node("Max", [node("Abs", [high], "abs_high"), node("Abs", [low], "abs_low")], "magnitude")
    unit = _ROUNDING_UNITS * _EPS.get(elem_type, 0.0)
    allowed = node("Mul", [magnitude, constant("unit", onnx.TensorProto.DOUBLE, [], [unit])], "allowed")
    margin = node("Sub", [node("Sub", [high, low], "spread"), allowed], "margin")
    check = reduce("ReduceMax", margin, "check", None, 0)
    return GramOutputs(gram, check)


def centred_gram(gram: Any, check: Any, xp: Any = np) -> "CentredGram":
    """One tap's fetched outputs as the :class:`~redaudit.core.cka.CentredGram` CKA takes;
    flags stay on ``xp``'s device."""
    from redaudit.core.cka import CentredGram

    gram = xp.asarray(gram)
    check = xp.asarray(check)
    finite = xp.isfinite(gram).all() & xp.isfinite(check)
    return CentredGram(gram, constant=check <= 0.0, finite=finite)
