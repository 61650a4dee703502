"""Linear CKA for every pair of layers at once, written once against an array module ``xp``.

Per batch of n samples, each layer's features X_l (n × d_l) are first centred in float64
(column means subtracted). Both estimators are invariant to that shift, and it matters: the
globally pooled post-ReLU maps of a CNN vary across samples by ~1 % of their mean, so uncentred
Gram entries are ~10⁴ times larger than the HSIC they combine into and the unbiased formula
cancels them away (issue 9: 14 of 17 ResNet-50 blocks looked "constant"). Then K_l = X_l X_lᵀ.

For the unbiased estimator (Song et al. 2012) K̃_l is K_l with a zero diagonal and

    HSIC_u(K, L) = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)).

With the flattened K̃_l stacked as rows of G (L × n²), G Gᵀ holds every tr(K̃L̃); with the row
sums r_l = K̃_l 1 stacked as R (L × n), R Rᵀ holds every 1ᵀK̃L̃1 (K̃ is symmetric) and
R 1 every 1ᵀK̃1. So one Gram per layer and two matrix products give all L² HSIC values.
The biased estimator is tr(K L)/(n−1)² on the centred features (K = H K_raw H).
G is built in row blocks so memory stays bounded for large n. All math runs in float64.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ESTIMATORS = ("unbiased", "biased")

# Bytes of float64 Gram rows materialised at once when building G Gᵀ (all layers together).
_GRAM_BLOCK_BYTES = 128 * 1024**2
# A layer is constant when no column moves by more than this many units of rounding (of the
# dtype it arrived in) across the batch: float32 jitter of a constant is constant, a spread of
# 1e-6 around 1e3 (8 float32 ulps) is not.
_ROUNDING_UNITS = 4.0


def centre(feature: Any, xp: Any = np) -> tuple[Any, Any]:
    """Float64 copy of ``feature`` (n × …) as n × d minus its column means, and a 0-d bool
    array: whether the layer is constant up to rounding in its own dtype.

    Constancy is judged on the spread (max − min) of each column against its magnitude, not on
    HSIC values, so it does not depend on how far the data sit from zero. The flag stays on the
    device (no host sync per layer).
    """
    raw = xp.asarray(feature)
    raw = raw.reshape(raw.shape[0], -1)
    unit = float(np.finfo(raw.dtype).eps) if raw.dtype.kind == "f" else 0.0
    if raw.shape[1] == 0:
        return xp.zeros((raw.shape[0], 1)), xp.asarray(True)
    high = raw.max(axis=0).astype(xp.float64)
    low = raw.min(axis=0).astype(xp.float64)
    magnitude = xp.maximum(xp.abs(high), xp.abs(low))
    constant = ((high - low) <= _ROUNDING_UNITS * unit * magnitude).all()
    centred = raw.astype(xp.float64)  # always a copy: the caller's array is left alone
    centred -= centred.mean(axis=0, keepdims=True)
    return centred, constant


def hsic_all_pairs(features: Sequence[Any], estimator: str = "unbiased", xp: Any = np) -> Any:
    """L × L HSIC matrix for one batch; ``features[l]`` is (n, d_l), any float dtype.

    Needs n ≥ 4 for the unbiased estimator (its normaliser has n − 3).
    """
    return hsic_and_constant(features, estimator, xp)[0]


def hsic_and_constant(features: Sequence[Any], estimator: str = "unbiased", xp: Any = np) -> tuple[Any, Any]:
    """HSIC matrix (L × L, float64) plus a length-L bool array: which layers are constant.

    A constant layer's row of the HSIC matrix is rounding noise; :func:`cka_from_hsic` turns it
    into NaN. Both results stay on ``xp``'s device.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}")
    n = int(features[0].shape[0])
    if estimator == "unbiased" and n < 4:
        raise ValueError("the unbiased HSIC estimator needs at least 4 samples per batch")
    if estimator == "biased" and n < 2:
        raise ValueError("CKA needs at least 2 samples per batch")
    centred = [centre(x, xp) for x in features]
    mats = [pair[0] for pair in centred]
    constant = xp.stack([pair[1] for pair in centred])
    layers = len(mats)
    trace_products = xp.zeros((layers, layers), dtype=xp.float64)
    row_sums = xp.zeros((layers, n), dtype=xp.float64)
    block = max(1, int(_GRAM_BLOCK_BYTES // (8 * n * max(layers, 1))))
    rows = xp.empty((layers, min(block, n), n), dtype=xp.float64)
    for start in range(0, n, block):
        stop = min(n, start + block)
        part = rows[:, : stop - start]
        for position, x in enumerate(mats):
            xp.matmul(x[start:stop], x.T, out=part[position])
        if estimator == "unbiased":
            idx = xp.arange(start, stop)
            part[:, idx - start, idx] = 0.0
        row_sums[:, start:stop] = part.sum(axis=2)
        flat = part.reshape(layers, -1)
        trace_products += flat @ flat.T
    if estimator == "biased":
        return trace_products / float((n - 1) ** 2), constant
    totals = row_sums.sum(axis=1)
    hsic = (trace_products
            + xp.outer(totals, totals) / float((n - 1) * (n - 2))
            - (row_sums @ row_sums.T) * (2.0 / (n - 2)))
    return hsic / float(n * (n - 3)), constant


def cka_from_hsic(hsic: Any, xp: Any = np, constant: Any = None) -> Any:
    """Normalise an HSIC matrix to CKA. A layer flagged ``constant`` or whose self-HSIC is not
    positive (possible for the unbiased estimator on few samples) gets NaN in its row/column."""
    diag = xp.diagonal(hsic).copy()
    bad = ~(diag > 0.0)
    if constant is not None:
        bad = bad | xp.asarray(constant)
    safe = xp.where(bad, 1.0, diag)
    norm = xp.sqrt(xp.outer(safe, safe))
    cka = hsic / norm
    cka = xp.where(bad[:, None] | bad[None, :], xp.nan, cka)
    return cka


def cka_all_pairs(features: Sequence[Any], estimator: str = "unbiased", xp: Any = np) -> Any:
    """L × L linear CKA matrix of one batch (symmetric, ones on the diagonal unless NaN)."""
    hsic, constant = hsic_and_constant(features, estimator, xp)
    return cka_from_hsic(hsic, xp, constant)


def cka_pair(x: np.ndarray, y: np.ndarray, estimator: str = "unbiased") -> float:
    """Plain single-pair implementation of the formulas in redtest.md, for tests and checks.

    Features are centred in float64 first: both estimators are invariant to it, and without it
    the unbiased formula cancels large uncentred terms (an uncentred float64 version returned
    CKA 1.278 on pooled ResNet-50 features).
    """
    def hsic(k: np.ndarray, l: np.ndarray) -> float:
        n = k.shape[0]
        if estimator == "biased":
            h = np.eye(n) - np.ones((n, n)) / n
            return float(np.trace(k @ h @ l @ h) / (n - 1) ** 2)
        kt = k.copy(); np.fill_diagonal(kt, 0.0)
        lt = l.copy(); np.fill_diagonal(lt, 0.0)
        one = np.ones(n)
        value = (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
                 - 2.0 / (n - 2) * (one @ kt @ lt @ one))
        return float(value / (n * (n - 3)))

    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))
