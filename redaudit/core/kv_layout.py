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


#: The fix for a stacked past given in the graph's layout, as the messages below advise it.
SWAP_FIX = "np.swapaxes(a, 0, 1)"


def graph_layout_refusal(name: str, shape: Sequence[int]) -> str | None:
    """The one-line refusal for a stacked past's array given in the graph's layout (2, N, heads,
    past, head_dim) instead of samples first, or None when ``shape`` does not look like that: a
    leading 2 and an axis 1 that is not the 2 of key/value, so the samples-first reading is
    impossible and the graph's layout the likely one."""
    if len(shape) != 5 or shape[0] != 2 or shape[1] == 2:
        return None
    return (f"input {name!r} has shape {tuple(shape)}: this looks like the graph's layout (2, batch, heads, past, "
            f"head_dim) — a model's own present as it returns it — but --inputs holds every input samples first, "
            f"(batch, 2, heads, past, head_dim); save {SWAP_FIX} of it")


def ambiguous_layout_warning(names: Sequence[str], shape: Sequence[int]) -> str:
    """The warning for stacked pasts of 2 samples, (2, 2, heads, past, head_dim): valid in both
    layouts, and nothing sound tells them apart (see docs/taps.md "Cache layouts")."""
    return (f"{', '.join(names)} of shape {tuple(shape)}: read samples first, (batch, 2, heads, past, head_dim), "
            f"as --inputs holds every input; with 2 samples redaudit cannot tell that from the graph's layout "
            f"(2, batch, …) by shape — if these are the model's own presents as it returns them, save "
            f"{SWAP_FIX} of each")
