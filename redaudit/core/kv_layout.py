"""Where a language model's key/value cache inputs keep their samples: the graph-layout facts the
probe, the session feed and the memory and cost estimates all need, in one place.

The modern layout (``past_key_values.N.key/value``) is (batch, kv_heads, past, head_dim): samples
on axis 0 like every other input. The legacy GPT-2 layout (onnxruntime's own GPT-2 exporter,
older transformers/optimum exports) stacks key and value in one input per layer, ``past_N`` of
shape (2, batch, heads, past, head_dim): samples on axis 1. It is told by its rank 5 and fixed
leading 2, not by the name alone.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import onnx

_Dim = TypeVar("_Dim")
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
#: Ops between a legacy layer's keys/values and its stacked ``present_N`` (torch.stack, or a cat
#: of unsqueezed tensors, as exporters write it).
STACKING_OPS = frozenset({"Unsqueeze", "Concat", "Identity", "Reshape", "Cast", "Squeeze", "Transpose"})


def is_past(name: str, elem_type: int) -> bool:
    """Whether a graph input is a key/value cache input: a float input named ``past…``."""
    return name.lower().startswith("past") and elem_type in _FLOATS


def stacked_past(name: str, elem_type: int, shape: Sequence[int | str | None]) -> bool:
    """Whether a graph input is a past in the legacy stacked layout, (2, batch, heads, past,
    head_dim): key and value on axis 0, so the batch is on axis 1. ``shape`` as the graph
    declares it (ints for fixed axes)."""
    return is_past(name, elem_type) and len(shape) == 5 and shape[0] == 2


def batch_axis(value: onnx.ValueInfoProto) -> int:
    """The axis of graph input ``value`` that holds the samples: 1 for a stacked past, else 0."""
    tensor = value.type.tensor_type
    shape = [int(dim.dim_value) if dim.HasField("dim_value") else None for dim in tensor.shape.dim]
    return 1 if stacked_past(value.name, tensor.elem_type, shape) else 0


def swap_samples(shape: Sequence[_Dim], axis: int) -> list[_Dim]:
    """``shape`` with axis 0 and the batch ``axis`` exchanged: samples-first (how redaudit holds
    every input) to the graph's layout, and back (the swap is its own inverse)."""
    swapped = list(shape)
    if axis and len(swapped) > axis:
        swapped[0], swapped[axis] = swapped[axis], swapped[0]
    return swapped
