"""Linear CKA for every pair of layers at once, written once against an array module ``xp``.

Per batch of n samples, each layer's features X_l (n × d_l) are first centred in float64
(:mod:`redaudit.core.centring` says why it matters); then K_l = X_l X_lᵀ.

For the unbiased estimator (Song et al. 2012) K̃_l is K_l with a zero diagonal and

    HSIC_u(K, L) = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)).

With the flattened K̃_l stacked as rows of G (L × n²), G Gᵀ holds every tr(K̃L̃); with the row
sums r_l = K̃_l 1 stacked as R (L × n), R Rᵀ holds every 1ᵀK̃L̃1 (K̃ is symmetric) and
R 1 every 1ᵀK̃1. So one Gram per layer and two matrix products give all L² HSIC values.
The biased estimator is tr(K L)/(n−1)² on the centred features (K = H K_raw H).
G is built in row blocks so memory stays bounded for large n. All math runs in float64.

When the layers are narrow and the batch is large (pooled features of every sample in one CKA
batch: n = 1,024, Σd = 1,680 for issue 27's L = 45 CNN), the same terms come from the feature
side instead, at n·(Σd)² cost rather than n²·Σd + L²·n². With Z = [X_1 … X_L] (n × Σd, centred)
and C = ZᵀZ, tr(K_a K_b) = ‖C_ab‖²_F (the (a, b) block of C); with s_a the samples' squared
norms (the diagonal of K_a), tr(K̃_a K̃_b) = ‖C_ab‖²_F − s_a·s_b; and K̃_a 1 = X_a (X_aᵀ1) − s_a.
The diagonal's subtraction cancels at most a d/n share of the result, so this path is taken only
where it is the cheaper one, which needs Σd below about n (see :func:`feature_side_cheaper`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from redaudit.core.centring import as_rows, centre, centre_values, layer_constant

ESTIMATORS = ("unbiased", "biased")

# Bytes of float64 Gram rows materialised at once when building G Gᵀ (all layers together);
# also the most the feature side's Σd × Σd product C may take.
_GRAM_BLOCK_BYTES = 128 * 1024**2
#: How :func:`batch_hsic` forms the HSIC terms: "gram" (n × n per layer), "features" (Σd × Σd
#: once), or None to take the cheaper one.
HSIC_METHODS = ("gram", "features")
def hsic_all_pairs(features: Sequence[Any], estimator: str = "unbiased", xp: Any = np) -> Any:
    """L × L HSIC matrix for one batch; ``features[l]`` is (n, d_l), any float dtype.

    Needs n ≥ 4 for the unbiased estimator (its normaliser has n − 3).
    """
    return batch_hsic(features, estimator, xp).hsic


@dataclass(frozen=True)
class BatchHsic:
    """One batch's HSIC matrix (L × L, float64) and per-layer flags (length-L bool), on ``xp``.

    A constant layer's HSIC row is rounding noise and a non-finite layer's is NaN;
    :func:`cka_from_hsic` turns both into NaN rows.
    """

    hsic: Any
    constant: Any
    finite: Any


def batch_hsic(features: Sequence[Any], estimator: str = "unbiased", xp: Any = np,
               method: str | None = None) -> BatchHsic:
    """All-pairs HSIC of one batch; see :func:`_batch_hsic` and :func:`_feature_side_hsic`
    (``method``: one of :data:`HSIC_METHODS`, or None for the cheaper). A non-finite layer turns
    only its own row into NaN, quietly (NumPy's invalid-value warnings are silenced for this call
    only)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}")
    if method is not None and method not in HSIC_METHODS:
        raise ValueError(f"unknown HSIC method {method!r}")
    n = int(features[0].shape[0])
    if estimator == "unbiased" and n < 4:
        raise ValueError("the unbiased HSIC estimator needs at least 4 samples per batch")
    if estimator == "biased" and n < 2:
        raise ValueError("CKA needs at least 2 samples per batch")
    widths = [max(1, int(np.prod(x.shape[1:]))) for x in features]
    if method is None:
        method = "features" if feature_side_cheaper(n, widths) else "gram"
    with np.errstate(invalid="ignore", over="ignore"):
        if method == "features":
            return _feature_side_hsic(features, widths, estimator, xp)
        return _batch_hsic(features, estimator, xp)


def feature_side_cheaper(n: int, widths: Sequence[int]) -> bool:
    """Whether one Σd × Σd product (n·Σd² multiply-adds) costs less than L Grams and G Gᵀ
    (n²·Σd + L²·n²), with C small enough to hold (≤ ``_GRAM_BLOCK_BYTES``). Measured on layers
    shaped like issue 27's CNN, pooled, one batch of 1,024, one thread: L = 15 0.159 s → 0.016 s;
    L = 45 0.298 s → 0.088 s (docs/performance.md)."""
    total, layers = sum(widths), len(widths)
    return 8 * total * total <= _GRAM_BLOCK_BYTES and total * total < n * total + layers * layers * n


def _feature_side_hsic(features: Sequence[Any], widths: Sequence[int], estimator: str, xp: Any) -> BatchHsic:
    """All-pairs HSIC of one batch from C = ZᵀZ of the centred, concatenated features (module
    docstring). Block sums are taken one layer's slice at a time (2L reductions over C), never
    through a product with an indicator matrix: 0 × NaN is NaN, and a non-finite layer's NaNs
    must stay in its own rows and columns."""
    n = int(features[0].shape[0])
    bounds = np.cumsum([0, *widths]).tolist()
    spans = [slice(bounds[i], bounds[i + 1]) for i in range(len(widths))]
    z = xp.empty((n, bounds[-1]), dtype=xp.float64)
    constant, finite = [], []
    for span, feature in zip(spans, features):
        centred, is_constant, is_finite = centre(feature, xp)
        z[:, span] = centred
        constant.append(is_constant)
        finite.append(is_finite)
    product = z.T @ z  # C: one syrk
    product *= product
    by_column_layer = xp.stack([product[:, span].sum(axis=1) for span in spans], axis=1)  # Σd × L
    trace_products = xp.stack([by_column_layer[span].sum(axis=0) for span in spans])  # ‖C_ab‖²_F = tr(K_a K_b)
    flags = xp.stack(constant), xp.stack(finite)
    if estimator == "biased":
        return BatchHsic(trace_products / float((n - 1) ** 2), *flags)
    norms = xp.stack([(z[:, span] * z[:, span]).sum(axis=1) for span in spans])  # L × n: s_a, K_a's diagonal
    column_sums = xp.ones(n, dtype=xp.float64) @ z  # X_aᵀ1 for every layer (≈ 0: centred)
    row_sums = xp.stack([z[:, span] @ column_sums[span] for span in spans]) - norms  # K̃_a 1 = X_a X_aᵀ1 − s_a
    trace_products = trace_products - norms @ norms.T  # tr(K̃_a K̃_b)
    return BatchHsic(_unbiased(trace_products, row_sums, n), *flags)


def _unbiased(trace_products: Any, row_sums: Any, n: int) -> Any:
    """Song et al.'s unbiased HSIC from tr(K̃_a K̃_b) (L × L) and the row sums K̃_a 1 (L × n)."""
    totals = row_sums.sum(axis=1)
    hsic = (trace_products
            + totals[:, None] * totals[None, :] / float((n - 1) * (n - 2))
            - (row_sums @ row_sums.T) * (2.0 / (n - 2)))
    return hsic / float(n * (n - 3))


def _batch_hsic(features: Sequence[Any], estimator: str, xp: Any) -> BatchHsic:
    """All-pairs HSIC of one batch, one Gram per layer.

    When the L Grams fit in ``_GRAM_BLOCK_BYTES`` (the usual case: L·n²·8 bytes), each layer is
    centred into one reused float64 buffer and its Gram formed at once, so no float64 copy of
    every layer's features is ever held. Otherwise the centred features are kept and the Grams
    built in row blocks.
    """
    n = int(features[0].shape[0])
    layers = len(features)
    block = max(1, int(_GRAM_BLOCK_BYTES // (8 * n * max(layers, 1))))
    trace_products = xp.zeros((layers, layers), dtype=xp.float64)
    row_sums = xp.zeros((layers, n), dtype=xp.float64)
    rows = xp.empty((layers, min(block, n), n), dtype=xp.float64)
    constant, finite, mats = [], [], []
    buffer = None
    if block >= n:
        buffer = xp.empty(max(int(np.prod(x.shape)) for x in features), dtype=xp.float64)
    for position, feature in enumerate(features):
        raw = as_rows(feature, xp)
        centred, mean, is_finite = centre_values(raw, xp, buffer)
        finite.append(is_finite)
        if buffer is not None:
            xp.matmul(centred, centred.T, out=rows[position])
            constant.append(layer_constant(raw, xp, mean, xp.trace(rows[position])))
        else:
            mats.append(centred)
            constant.append(layer_constant(raw, xp))
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
    flags = xp.stack(constant), xp.stack(finite)
    if estimator == "biased":
        return BatchHsic(trace_products / float((n - 1) ** 2), *flags)
    return BatchHsic(_unbiased(trace_products, row_sums, n), *flags)


def cka_from_hsic(hsic: Any, xp: Any = np, constant: Any = None) -> Any:
    """Normalise an HSIC matrix to CKA. A layer flagged ``constant``, or whose self-HSIC is not a
    positive *normal* float64 (zero, negative — possible for the unbiased estimator on few
    samples — or subnormal: activations that shrank by 0.05× per layer for 80 layers), gets NaN
    in its row/column: its HSIC has lost its precision, and dividing by it gave CKA = inf.
    The norm is the product of square roots (never the root of a product, which underflows to 0
    for two self-HSICs near 1e-200) and the result is clipped to [-1, 1], the range of CKA that
    rounding of the unbiased estimator can leave by a hair; NaN stays NaN."""
    diag = xp.diagonal(hsic).copy()
    bad = ~(diag >= _SMALLEST_NORMAL)  # also true for NaN
    if constant is not None:
        bad = bad | xp.asarray(constant)
    root = xp.sqrt(xp.where(bad, 1.0, diag))
    cka = hsic / (root[:, None] * root[None, :])
    cka = xp.where(bad[:, None] | bad[None, :] | ~xp.isfinite(cka), xp.nan, cka)
    return xp.clip(cka, -1.0, 1.0)


#: Below this a float64 is subnormal: a self-HSIC there has lost most of its digits.
_SMALLEST_NORMAL = float(np.finfo(np.float64).tiny)


def cka_all_pairs(features: Sequence[Any], estimator: str = "unbiased", xp: Any = np) -> Any:
    """L × L linear CKA matrix of one batch (symmetric, ones on the diagonal unless NaN)."""
    result = batch_hsic(features, estimator, xp)
    return cka_from_hsic(result.hsic, xp, result.constant)


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
