"""Linear CKA for every pair of layers at once, written once against an array module ``xp``.

Per batch of n samples and layer features X_l (n × d_l): K_l = X_l X_lᵀ. For the unbiased
estimator (Song et al. 2012) K̃_l is K_l with a zero diagonal and

    HSIC_u(K, L) = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)).

With the flattened K̃_l stacked as rows of G (L × n²), G Gᵀ holds every tr(K̃L̃); with the row
sums r_l = K̃_l 1 stacked as R (L × n), R Rᵀ holds every 1ᵀK̃L̃1 (K̃ is symmetric) and
R 1 every 1ᵀK̃1. So one Gram per layer and two matrix products give all L² HSIC values.
The biased estimator uses the centred Grams H K H and tr(K_c L_c)/(n−1)².
G is built in row blocks so memory stays bounded for large n. All math runs in float64.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ESTIMATORS = ("unbiased", "biased")

# Bytes of float64 Gram rows materialised at once when building G Gᵀ (all layers together).
_GRAM_BLOCK_BYTES = 128 * 1024**2


def hsic_all_pairs(features: Sequence[Any], estimator: str = "unbiased", xp: Any = np) -> Any:
    """L × L HSIC matrix for one batch; ``features[l]`` is (n, d_l), any float dtype.

    Needs n ≥ 4 for the unbiased estimator (its normaliser has n − 3).
    """
    return hsic_with_scale(features, estimator, xp)[0]


def hsic_with_scale(features: Sequence[Any], estimator: str = "unbiased", xp: Any = np) -> tuple[Any, Any]:
    """HSIC matrix plus, per layer, the magnitude of the terms its self-HSIC is made of.

    A constant layer has self-HSIC exactly 0 in exact arithmetic but rounding leaves noise of
    the order of ``1e-16 × scale``; comparing against the layer's own scale (not other
    layers') tells a constant layer from a layer with small activations.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}")
    n = int(features[0].shape[0])
    if estimator == "unbiased" and n < 4:
        raise ValueError("the unbiased HSIC estimator needs at least 4 samples per batch")
    if estimator == "biased" and n < 2:
        raise ValueError("CKA needs at least 2 samples per batch")
    mats = [xp.asarray(x, dtype=xp.float64).reshape(n, -1) for x in features]
    if estimator == "biased":
        mats = [x - x.mean(axis=0, keepdims=True) for x in mats]  # X_c X_cᵀ = H K H
    layers = len(mats)
    trace_products = xp.zeros((layers, layers), dtype=xp.float64)
    row_sums = xp.zeros((layers, n), dtype=xp.float64)
    block = max(1, int(_GRAM_BLOCK_BYTES // (8 * n * max(layers, 1))))
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = xp.stack([x[start:stop] @ x.T for x in mats])  # L × b × n
        if estimator == "unbiased":
            idx = xp.arange(start, stop)
            rows[:, idx - start, idx] = 0.0
        row_sums[:, start:stop] = rows.sum(axis=2)
        flat = rows.reshape(layers, -1)
        trace_products += flat @ flat.T
    if estimator == "biased":
        scale = (row_sums * row_sums).sum(axis=1) / float(n * (n - 1) ** 2)
        scale = xp.maximum(scale, xp.diagonal(trace_products) / float((n - 1) ** 2))
        return trace_products / float((n - 1) ** 2), scale
    totals = row_sums.sum(axis=1)
    cross = row_sums @ row_sums.T
    hsic = (trace_products
            + xp.outer(totals, totals) / float((n - 1) * (n - 2))
            - cross * (2.0 / (n - 2)))
    scale = (xp.diagonal(trace_products) + totals * totals / float((n - 1) * (n - 2))
             + xp.diagonal(cross) * (2.0 / (n - 2))) / float(n * (n - 3))
    return hsic / float(n * (n - 3)), scale


def cka_from_hsic(hsic: Any, xp: Any = np, scale: Any = None) -> Any:
    """Normalise an HSIC matrix to CKA. A layer whose self-HSIC is not positive, or is
    rounding noise next to its own ``scale`` (a constant layer), gets NaN in its row/column."""
    diag = xp.diagonal(hsic).copy()
    tiny = 1e-10 * scale if scale is not None else 0.0
    bad = ~(diag > tiny)
    safe = xp.where(bad, 1.0, diag)
    norm = xp.sqrt(xp.outer(safe, safe))
    cka = hsic / norm
    cka = xp.where(bad[:, None] | bad[None, :], xp.nan, cka)
    return cka


def cka_all_pairs(features: Sequence[Any], estimator: str = "unbiased", xp: Any = np) -> Any:
    """L × L linear CKA matrix of one batch (symmetric, ones on the diagonal unless NaN)."""
    hsic, scale = hsic_with_scale(features, estimator, xp)
    return cka_from_hsic(hsic, xp, scale)


def cka_pair(x: np.ndarray, y: np.ndarray, estimator: str = "unbiased") -> float:
    """Plain single-pair implementation of the formulas in redtest.md, for tests and checks."""
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
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))
