"""A plain float64 reference for a scan: raw IRs from onnxruntime, reduced as the docs say, and
unbiased linear CKA computed one pair at a time.

Independent of redaudit's pipeline on purpose (no augmentation, no ReduceMean in the graph, no
all-pairs kernel): tests and benchmarks/real_models.py compare the scan's matrix with it.
The documented reduction (docs/taps.md): mean over spatial axes of (N, C, *spatial); mean over
tokens of (N, T, D); (N, C, L) after a convolution is channels; a recurrent layer's output
sequence is averaged over time with the batch axis moved first; (N, D) is used as is.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper


def _exposing_session(model: onnx.ModelProto, names: Sequence[str]) -> ort.InferenceSession:
    """A plain CPU session of a copy of ``model`` with the named tensors added as graph outputs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {output.name for output in copy.graph.output}
    copy.graph.output.extend(onnx.ValueInfoProto(name=name)
                             for name in names if name not in present)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])


def raw_outputs(model: onnx.ModelProto, names: Sequence[str], inputs: Mapping[str, np.ndarray],
                chunk: int | None = None) -> list[np.ndarray]:
    """The named tensors, unreduced, for every sample (``chunk``: samples per run, e.g. 1 for a
    model with a fixed batch of 1)."""
    session = _exposing_session(model, names)
    count = next(iter(inputs.values())).shape[0]
    step = chunk or count
    parts = [session.run(list(names), {k: v[i:i + step] for k, v in inputs.items()}) for i in range(0, count, step)]
    batch_axes = [_batch_axis(parts[0][j], step if count >= step else count) for j in range(len(names))]
    return [np.concatenate([part[j] for part in parts], axis=batch_axes[j]) for j in range(len(names))]


def pooled_outputs(model: onnx.ModelProto, names: Sequence[str], batches: Iterable[Mapping[str, np.ndarray]],
                   chunk: int = 64, layouts: Sequence[str | None] | None = None) -> list[np.ndarray]:
    """(samples, features) float64 per named tensor, reduced as documented chunk by chunk.

    For a model whose raw IRs do not fit in memory all at once (ResNet-50 at 224², 2,560 samples:
    57 GB of float32 block outputs): only one ``chunk`` of raw outputs is alive at a time, each cast to
    float64 before it is pooled, so memory is bounded by the chunk, not by the sample count.
    ``batches`` yields input dicts (e.g. a probe's batches); ``layouts`` as for
    :func:`reduce_as_documented` (None: channels first)."""
    session = _exposing_session(model, names)
    layouts = list(layouts) if layouts is not None else [None] * len(names)
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for batch in batches:
        count = next(iter(batch.values())).shape[0]
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            outputs = session.run(list(names), {k: v[start:start + size] for k, v in batch.items()})
            for position, output in enumerate(outputs):
                parts[position].append(reduce_as_documented(output, size, layouts[position]))
            del outputs
    return [np.concatenate(part) for part in parts]


def _batch_axis(array: np.ndarray, count: int) -> int:
    return 0 if array.shape[0] == count else next(i for i, d in enumerate(array.shape) if d == count)


def reduce_as_documented(array: np.ndarray, samples: int, layout: str | None, recurrent: bool = False,
                         reduce: str = "pool") -> np.ndarray:
    """(samples, features) float64 from one raw IR, following the documented rule."""
    values = np.asarray(array, dtype=np.float64)
    if values.shape[0] != samples and samples not in values.shape and values.shape[0] % samples == 0:
        # the batch folded sample-major into axis 0 (MobileViT's (N·P, tokens, C)): each of the
        # k rows of a sample reduced as documented, then averaged (pool) or kept side by side
        rows = reduce_as_documented(values, values.shape[0], layout, recurrent, reduce)
        grouped = rows.reshape(samples, values.shape[0] // samples, -1)
        return grouped.mean(axis=1) if reduce == "pool" else grouped.reshape(samples, -1)
    if values.shape[0] != samples:  # time-major recurrent output: move the batch axis first
        axis = next(i for i, d in enumerate(values.shape) if d == samples)
        values = np.moveaxis(values, axis, 0)
    if reduce == "pool" and values.ndim >= 3:
        if recurrent or (values.ndim == 3 and layout == "tokens"):
            values = values.mean(axis=1)
        else:
            values = values.mean(axis=tuple(range(2, values.ndim)))
    return values.reshape(samples, -1)


def _hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012) of two Gram matrices, written out term by term."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    ones = np.ones(n)
    term = np.trace(k @ l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2)) \
        - 2.0 / (n - 2) * (ones @ k @ l @ ones)
    return term / (n * (n - 3))


def _gram(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64) - np.asarray(x, np.float64).mean(axis=0)
    return x @ x.T


def unbiased_hsic(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased HSIC of two (n, d) feature matrices, float64, features centred first."""
    return float(_hsic(_gram(x), _gram(y)))


def unbiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased linear CKA of two (n, d) feature matrices (Song et al. 2012 HSIC estimator),
    float64, features centred first; NaN for a constant layer."""
    k, l = _gram(x), _gram(y)
    xy, xx, yy = _hsic(k, l), _hsic(k, k), _hsic(l, l)
    if xx <= 0 or yy <= 0:
        return float("nan")
    return float(xy / np.sqrt(xx * yy))


def reference_matrix(features: Sequence[np.ndarray], batch: int | None = None, aggregate: str = "cka") -> np.ndarray:
    """Over CKA batches of ``batch`` samples: the mean of the per-pair CKA matrices (the paper's
    aggregate, ``cka``), or CKA of the mean per-pair HSIC (``hsic``: torch-cka's and
    pytorch-cka's aggregation, redaudit's ``--aggregate hsic``)."""
    count = features[0].shape[0]
    size = batch or count
    matrices = []
    for start in range(0, count - size + 1, size):
        grams = [_gram(f[start:start + size]) for f in features]  # one per layer; HSIC pair by pair
        hsic = np.array([[_hsic(k, l) for l in grams] for k in grams])
        if aggregate == "cka":
            diagonal = np.diagonal(hsic)
            with np.errstate(invalid="ignore", divide="ignore"):
                cka = hsic / np.sqrt(np.outer(diagonal, diagonal))
            bad = ~(diagonal > 0)
            cka[bad, :] = cka[:, bad] = np.nan
            matrices.append(cka)
        else:
            matrices.append(hsic)
    if aggregate == "cka":
        return np.nanmean(np.stack(matrices), axis=0)
    hsic = np.mean(np.stack(matrices), axis=0)
    diagonal = np.sqrt(np.diagonal(hsic))
    return hsic / np.outer(diagonal, diagonal)
