"""Fold per-batch layer features into similarity statistics, one batch at a time.

Memory holds only the current batch's features plus L × L matrices per batch, so a scan of
10,240 samples needs no more memory than one of 2,560. Non-finite activations and constant
layers are detected per batch and per layer and reported, never turned into a number.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from redaudit.core.backend import ArrayBackend
from redaudit.core.cka import BatchHsic, batch_hsic, cka_from_hsic
from redaudit.core.msrs import msrs_of_matrix, summarize_batches, MsrsSummary

AGGREGATES = ("cka", "hsic")


@dataclass(frozen=True)
class SimilaritySummary:
    similarity: np.ndarray  # L × L, the reported matrix
    batch_cka: np.ndarray  # B × L × L
    msrs: MsrsSummary
    layer_issues: dict[int, str]
    excluded_layers: list[int]  # degenerate in every batch: left out of MSRS


@dataclass
class SimilarityAccumulator:
    layer_count: int
    backend: ArrayBackend
    estimator: str = "unbiased"
    aggregate: str = "cka"
    _batch_cka: list[np.ndarray] = field(default_factory=list)
    _hsic_sum: np.ndarray | None = None
    _hsic_batches: np.ndarray | None = None
    _nonfinite: np.ndarray | None = None
    _constant: np.ndarray | None = None
    _nonpositive: np.ndarray | None = None

    def __post_init__(self) -> None:
        size = self.layer_count
        self._hsic_sum = np.zeros((size, size))
        self._hsic_batches = np.zeros((size, size))
        self._nonfinite = np.zeros(size, dtype=int)
        self._constant = np.zeros(size, dtype=int)
        self._nonpositive = np.zeros(size, dtype=int)

    def add_batch(self, features: list[np.ndarray]) -> None:
        """``features[l]`` is (n, d_l) for the same n samples; any float dtype."""
        self.add_hsic(batch_hsic(features, self.estimator, self.backend.xp))

    def add_hsic(self, result: BatchHsic) -> None:
        """Fold one batch's HSIC matrix and flags (from :meth:`add_batch`, or computed in a CPU
        scan's lanes beside each other; batches are folded in order).

        Everything stays on the backend's device until the small results (HSIC matrix, constant
        and finite flags) come back together: no host sync per layer. A non-finite layer only
        spoils its own HSIC row and column, which are set to NaN here.
        """
        xp = self.backend.xp
        cka = self.backend.to_numpy(cka_from_hsic(result.hsic, xp, result.constant))
        hsic = self.backend.to_numpy(result.hsic)
        finite = self.backend.to_numpy(result.finite).astype(bool)
        constant = self.backend.to_numpy(result.constant).astype(bool) & finite
        broken = np.flatnonzero(~finite)
        self._nonfinite += ~finite
        cka[broken, :] = cka[:, broken] = np.nan
        hsic[broken, :] = hsic[:, broken] = np.nan
        self._constant += constant
        # A varying layer whose unbiased self-HSIC is still ≤ 0 (possible with few samples).
        self._nonpositive += np.isnan(np.diagonal(cka)) & ~constant & finite
        self._batch_cka.append(cka)
        usable = np.isfinite(hsic)
        self._hsic_sum += np.where(usable, hsic, 0.0)
        self._hsic_batches += usable

    def finish(self, epsilon: float, beta: float) -> SimilaritySummary:
        batches = len(self._batch_cka)
        batch_cka = np.stack(self._batch_cka) if batches else np.zeros((0, self.layer_count, self.layer_count))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN entries stay NaN
            if self.aggregate == "hsic":
                mean_hsic = np.where(self._hsic_batches > 0, self._hsic_sum / np.maximum(self._hsic_batches, 1), np.nan)
                always_constant = self._constant >= max(batches, 1)
                similarity = cka_from_hsic(np.nan_to_num(mean_hsic, nan=0.0), np, always_constant)
                similarity = np.where(np.isnan(mean_hsic), np.nan, similarity)
            else:
                similarity = np.nanmean(batch_cka, axis=0)
        issues: dict[int, str] = {}
        for position in range(self.layer_count):
            parts = []
            if self._nonfinite[position]:
                parts.append(f"NaN/Inf activations in {self._nonfinite[position]} of {batches} batches")
            if self._constant[position]:
                parts.append(f"constant output in {self._constant[position]} of {batches} batches")
            if self._nonpositive[position]:
                parts.append(f"self-HSIC not positive in {self._nonpositive[position]} of {batches} batches "
                             "(too few samples per CKA batch)")
            if parts:
                issues[position] = "; ".join(parts)
        degenerate = self._nonfinite + self._constant + self._nonpositive
        excluded = [p for p in range(self.layer_count) if batches and degenerate[p] >= batches]
        mask = np.ones(self.layer_count, dtype=bool)
        mask[excluded] = False
        per_batch = np.array([msrs_of_matrix(matrix, epsilon, beta, mask) for matrix in batch_cka])
        return SimilaritySummary(similarity, batch_cka, summarize_batches(per_batch), issues, excluded)
