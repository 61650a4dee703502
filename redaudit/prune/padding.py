"""Trailing padding cut from token batches before calibration — only where that changes nothing.

Token inputs are usually padded to one length (``padding="max_length"``); a calibration pass then
spends most of its time on padding rows the fit ignores anyway (:mod:`redaudit.prune.calibrate`
drops them through the mask). For a model whose real tokens never see the padding (an encoder
that masks attention, per-token ops), running each batch only as long as its longest real
sequence gives the same activations on every real row, and the same sufficient statistics,
at a fraction of the cost — and sorting samples by length first makes most batches short.

Nothing here assumes the model behaves like that: :func:`trim_is_exact` runs a few samples both
ways and compares every fetched tensor on the real rows; one mismatch (a pooled tensor, position
dependence on the padded length, left padding) and calibration keeps the full batches. Sequence
axes fixed in the graph (``dim_value``) are never cut.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx

#: How many samples of the first trimmable batch are run both ways to prove the cut exact.
CHECK_SAMPLES = 4


def sequence_axis_is_free(model: onnx.ModelProto, mask_name: str) -> bool:
    """Whether the mask input's second axis is symbolic or unknown (a fixed length cannot be cut)."""
    for graph_input in model.graph.input:
        if graph_input.name != mask_name:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        return len(dims) < 2 or not dims[1].HasField("dim_value")
    return False


def real_lengths(mask: np.ndarray) -> np.ndarray:
    """Per sample: one past the last non-zero mask entry (0 for an all-padding sample)."""
    nonzero = np.asarray(mask).reshape(mask.shape[0], -1) != 0
    last = nonzero.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last, 0)


def sorted_by_length(arrays: Mapping[str, np.ndarray], mask_name: str) -> dict[str, np.ndarray]:
    """``arrays`` with samples reordered by real length (stable, shortest first), so that
    consecutive batches have similar lengths and lose most of their padding."""
    order = np.argsort(real_lengths(arrays[mask_name]), kind="stable")
    return {name: np.asarray(array)[order] for name, array in arrays.items()}


def trimmed(feed: Mapping[str, np.ndarray], mask_name: str) -> dict[str, np.ndarray]:
    """``feed`` with every input shaped like the mask on (batch, sequence) cut after the batch's
    longest real sequence (at least one position is kept)."""
    mask = np.asarray(feed[mask_name])
    if mask.ndim != 2:
        return dict(feed)
    length = max(int(real_lengths(mask).max(initial=0)), 1)
    if length >= mask.shape[1]:
        return dict(feed)
    return {name: (array[:, :length] if np.ndim(array) >= 2 and np.shape(array)[:2] == mask.shape else array)
            for name, array in feed.items()}


def _agrees(full: np.ndarray, cut: np.ndarray, real: np.ndarray) -> bool:
    """Whether ``cut`` equals ``full`` wherever every shortened axis is at a real position
    (``real``: (N, S_cut) booleans). Tokens (N, S, D) compare their real rows, an attention
    pattern (N, H, S, S) its real query × key entries; an unshortened tensor compares whole."""
    full, cut = np.asarray(full), np.asarray(cut)
    if full.ndim != cut.ndim or full.shape[:1] != cut.shape[:1]:
        return False
    axes = [axis for axis in range(1, full.ndim) if full.shape[axis] != cut.shape[axis]]
    if any(cut.shape[axis] != real.shape[1] or full.shape[axis] < cut.shape[axis] for axis in axes):
        return False
    full = full[tuple(slice(0, cut.shape[axis]) if axis in axes else slice(None) for axis in range(full.ndim))]
    if axes:
        keep = np.ones(cut.shape, dtype=bool)
        for axis in axes:
            shape = [1] * cut.ndim
            shape[0], shape[axis] = real.shape
            keep &= real.reshape(shape)
        full, cut = full[keep], cut[keep]
    if not np.issubdtype(full.dtype, np.floating):
        return bool(np.array_equal(full, cut))
    scale = float(np.max(np.abs(full), initial=0.0)) or 1.0
    return bool(np.allclose(cut, full, rtol=1e-3, atol=1e-5 * scale, equal_nan=True))


def trim_is_exact(fetch: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
                  feed: Mapping[str, np.ndarray], mask_name: str) -> bool:
    """Run the first :data:`CHECK_SAMPLES` samples of ``feed`` full and trimmed and compare every
    fetched tensor on the real rows. False when cutting would not shorten them at all (nothing
    proven) or any value differs."""
    sample = {name: np.asarray(array)[:CHECK_SAMPLES] for name, array in feed.items()}
    cut = trimmed(sample, mask_name)
    if cut[mask_name].shape == sample[mask_name].shape:
        return False
    real = np.asarray(cut[mask_name]) != 0
    full_values, cut_values = fetch(sample), fetch(cut)
    return all(_agrees(full_values[name], cut_values[name], real) for name in full_values)
