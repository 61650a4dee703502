"""Model Structural Redundancy Score (RedTest, Lu et al. 2024).

MSRS_batch = Σ_{i<j} (1 + tanh(β (S_ij − ε))) / 2, a soft count of the layer pairs whose IRs
are more than ε alike; MSRS is its mean over probe batches. Batches whose matrix holds NaN
(degenerate layers) are skipped and counted, as the reference code does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from redaudit.core.spec import DEFAULT_BETA, DEFAULT_EPSILON


def pair_scores(similarity: np.ndarray, epsilon: float, beta: float) -> np.ndarray:
    """Element-wise soft indicator (1 + tanh(β (S − ε))) / 2, in [0, 1]; NaN stays NaN."""
    return (1.0 + np.tanh(beta * (np.asarray(similarity, dtype=np.float64) - epsilon))) / 2.0


def msrs_of_matrix(similarity: np.ndarray, epsilon: float = DEFAULT_EPSILON, beta: float = DEFAULT_BETA,
                   layer_mask: np.ndarray | None = None) -> float:
    """MSRS of one similarity matrix over the upper triangle (i < j).

    ``layer_mask`` restricts the sum to the selected layers (used to leave out layers that are
    degenerate in every batch, which the scan reports separately). Returns NaN when any counted
    pair is NaN, never a silently imputed number.
    """
    matrix = np.asarray(similarity, dtype=np.float64)
    if layer_mask is not None:
        keep = np.flatnonzero(layer_mask)
        matrix = matrix[np.ix_(keep, keep)]
    rows, cols = np.triu_indices(matrix.shape[0], k=1)
    values = matrix[rows, cols]
    if values.size == 0:
        return 0.0
    if np.isnan(values).any():
        return float("nan")
    return float(pair_scores(values, epsilon, beta).sum())


@dataclass(frozen=True)
class MsrsSummary:
    """MSRS over batches: mean, sample std (ddof=1; 0 for a single batch), per-batch values."""

    mean: float
    std: float
    per_batch: np.ndarray
    nan_batches: int


def summarize_batches(per_batch: np.ndarray) -> MsrsSummary:
    values = np.asarray(per_batch, dtype=np.float64)
    finite = values[np.isfinite(values)]
    nan_batches = int(values.size - finite.size)
    if finite.size == 0:
        return MsrsSummary(float("nan"), float("nan"), values, nan_batches)
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return MsrsSummary(float(finite.mean()), std, values, nan_batches)
