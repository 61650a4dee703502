"""Cosine agreement between pairs of tensors of the original model, streamed over the probe.

The Block Influence (ShortGPT) and angular-distance (Gromov et al.) policies compare a block's
input with its output token by token (or sample by sample for feature maps): for each pair
(a, b) of same-shaped tensors, the mean over samples and tokens of cos(a_t, b_t). Tensors are
fetched raw (unpooled) through the prepared model's tap machinery, one chunk at a time, so
memory holds one chunk of activations, never the whole probe. Token rows follow the attention
mask when the probe has one: padding tokens are not counted (their hidden states are whatever the
model computes for a masked position, and would pull every block's cosine towards them).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from redaudit.core.cancel import CancelCheck, before_each_run
from redaudit.core.prepared import PreparedModel
from redaudit.core.run import BatchRunner
from redaudit.prune.lm_metrics import ATTENTION_MASK, token_mask
from redaudit.core.session_memory import micro_batch_for

_CHUNK = 128


def _vectors(array: np.ndarray) -> np.ndarray:
    """(rows, features): tokens of (N, T, D) are rows; anything else is one row per sample."""
    data = np.asarray(array, dtype=np.float64)
    if data.ndim == 3:
        return data.reshape(-1, data.shape[-1])
    return data.reshape(data.shape[0], -1)


def _mean_cosine(first: np.ndarray, second: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, int]:
    """(sum of row cosines, rows counted); tokens of a (N, T, D) pair whose mask entry is 0 are left out."""
    a, b = _vectors(first), _vectors(second)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)
    if mask is not None and np.ndim(first) == 3 and np.ndim(mask) == 2 and len(mask) == len(first) \
            and np.shape(mask)[1] >= np.shape(first)[1]:
        keep = token_mask(mask, np.shape(first)[:2]).reshape(-1)
        cosine = cosine[keep]
    return float(cosine.sum()), int(cosine.size)


def _exposing(prepared: PreparedModel, tensors: Sequence[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy whose outputs include ``tensors`` (graph inputs read through an Identity), typed
    from the shared index (onnxruntime refuses an output whose element type is wrong)."""
    index = prepared.index
    graph_inputs = set(index.graph_inputs)
    exposed = copy.deepcopy(prepared.proto)
    existing = {output.name for output in exposed.graph.output}
    names = []
    for tensor in tensors:
        name = tensor
        if tensor in graph_inputs:
            name = f"{tensor}/cosine_tap"
            exposed.graph.node.insert(0, helper.make_node("Identity", [tensor], [name], name=name))
        if name not in existing:
            tensor_type = index.types.get(tensor)
            elem_type = tensor_type.elem_type if tensor_type is not None else onnx.TensorProto.FLOAT
            exposed.graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
            existing.add(name)
        names.append(name)
    return exposed, names


def pair_cosines(prepared: PreparedModel, pairs: Sequence[tuple[str, str]],
                 arrays: Mapping[str, np.ndarray], max_memory_bytes: int | None = None,
                 cancel: CancelCheck | None = None) -> np.ndarray:
    """Mean cosine (over samples and tokens) for each (a, b) pair of tensors; NaN when the two
    tensors' shapes differ. Chunks are at most ``_CHUNK`` samples and as many as the memory
    budget allows (:func:`~redaudit.core.session_memory.micro_batch_for`; None: the default).
    ``cancel`` is polled before each onnxruntime run (ScanCancelled when it says stop)."""
    tensors = list(dict.fromkeys(name for pair in pairs for name in pair))
    exposed, fetch = _exposing(prepared, tensors)
    chunk = micro_batch_for(exposed, arrays, max_memory_bytes, _CHUNK, fetch_names=fetch,
                            what="scoring blocks by their input/output cosine")
    session, _ = prepared.sessions.create(exposed, "the model with block inputs/outputs exposed")
    runner = BatchRunner(session, fetch, before_run=before_each_run(cancel, "prune"))
    position = {tensor: i for i, tensor in enumerate(tensors)}
    sums = np.zeros(len(pairs))
    counts = np.zeros(len(pairs))
    shape_mismatch = np.zeros(len(pairs), dtype=bool)
    total = next(iter(arrays.values())).shape[0]
    for start in range(0, total, chunk):
        feed = {name: array[start:start + chunk] for name, array in arrays.items()}
        outputs = runner.run(feed)
        mask = feed.get(ATTENTION_MASK)
        for k, (first, second) in enumerate(pairs):
            a, b = outputs[position[first]], outputs[position[second]]
            if a.shape != b.shape:
                shape_mismatch[k] = True
                continue
            value, count = _mean_cosine(a, b, mask)
            sums[k] += value
            counts[k] += count
    with np.errstate(invalid="ignore", divide="ignore"):
        result = sums / counts
    result[shape_mismatch | (counts == 0)] = np.nan
    return result
