"""Closed-form linear healing: fit ``y ≈ x·T + b`` on activations, streaming, in float64.

When a span of the network (entry tensor x → exit tensor y) is removed, the cheapest thing that
keeps most of what it computed is the best affine map from x to y (ReplaceMe, arXiv 2505.02819;
TOAST, arXiv 2410.04941). Ridge least squares needs only the sufficient statistics
``[x 1]ᵀ[x 1]`` and ``[x 1]ᵀy`` (plus ``Σ‖y‖²`` for errors), so activations are added batch by
batch and never held: memory is O(D²) whatever the number of calibration samples.

Two choices are made here and written down because they change the answer:

* **Prior.** The penalty is ``α‖T − P‖²`` with ``P = I`` when the span is shape-preserving
  (``prior="identity"``, the default) and ``P = 0`` otherwise (``prior="zero"``, ReplaceMe's
  form). Shrinking toward the identity means a heavily regularised fit degrades to plain removal
  (``y = x``), never to ``y = b``: the heal can only move away from "remove" as far as the data
  supports. The bias is never penalised. A map with extra features (the attention mix of
  :mod:`redaudit.prune.heal`: ``[x, P̄x] → y``) passes its prior as a matrix, ``[I; 0]``: the
  plain removal again.
* **α by held-out error.** Samples (the first axis of each batch, so all tokens of a sentence
  stay together) are dealt round-robin into ``folds`` folds; for each candidate α the map is fitted
  on all folds but one and its squared error measured on the one left out, exactly, from that
  fold's statistics. The α with the least total held-out error wins and is refitted on all data.
  Candidates are relative: ``α = λ · mean diagonal of xᵀx`` for λ in :data:`DEFAULT_LAMBDAS`, so
  the grid does not depend on the activations' scale or the sample count.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: Relative ridge strengths tried (α = λ · mean diagonal of xᵀx); 1e-8 only guards singularity.
DEFAULT_LAMBDAS: tuple[float, ...] = (1e-8, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class LinearMap:
    """``y ≈ x @ weight + bias`` over the last axis of x (channels for NCHW maps, moved last).

    ``heldout_error`` and ``removal_error`` are squared errors relative to the variance of y
    (1 − R²) on held-out folds: the fitted map's, and plain removal's (``y = x``, NaN when the
    shapes differ). ``heldout_error`` is NaN when there were too few samples to hold any out.
    """

    weight: np.ndarray  # (D_in, D_out) float64
    bias: np.ndarray  # (D_out,) float64
    alpha: float
    relative_alpha: float
    rows: int
    samples: int
    heldout_error: float
    removal_error: float


def _solve(gram: np.ndarray, cross: np.ndarray, alpha: float, prior: np.ndarray | None) -> np.ndarray:
    """θ = (G + αJ)⁻¹ (C + αJP) with J = I except the bias row (unpenalised)."""
    d = gram.shape[0] - 1
    lhs = gram.copy()
    lhs[np.arange(d), np.arange(d)] += alpha
    rhs = cross.copy()
    if prior is not None:
        rhs[:d] += alpha * prior
    try:
        return np.linalg.solve(lhs, rhs)
    except np.linalg.LinAlgError:  # singular even with the guard: the minimum-norm solution
        return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def _squared_error(theta: np.ndarray, gram: np.ndarray, cross: np.ndarray, y_square: float) -> float:
    """Σ‖y − [x 1]θ‖² from the statistics: Σ‖y‖² − 2 tr(θᵀC) + tr(θᵀGθ)."""
    return float(y_square - 2.0 * np.sum(theta * cross) + np.sum(theta * (gram @ theta)))


class RidgeAccumulator:
    """Streaming sufficient statistics for ridge regression of y on x, per fold.

    ``add_batch(x, y)`` takes x of shape (N, ..., D_in) and y of shape (N, ..., D_out) — rows are
    all positions of the leading axes — and an optional boolean ``mask`` of shape (N, ...) that
    keeps only some rows (e.g. real tokens, not padding). ``solve()`` returns a :class:`LinearMap`.
    """

    def __init__(self, d_in: int, d_out: int, folds: int = DEFAULT_FOLDS) -> None:
        if folds < 1:
            raise ValueError("folds must be at least 1")
        self.d_in, self.d_out, self.folds = d_in, d_out, folds
        self.gram = np.zeros((folds, d_in + 1, d_in + 1))
        self.cross = np.zeros((folds, d_in + 1, d_out))
        self.y_square = np.zeros(folds)
        self.rows = np.zeros(folds, dtype=np.int64)
        self.samples = 0

    def add_batch(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> None:
        if x.shape[:-1] != y.shape[:-1] or x.shape[-1] != self.d_in or y.shape[-1] != self.d_out:
            raise ValueError(f"x {x.shape} and y {y.shape} do not match a {self.d_in} → {self.d_out} map")
        if mask is not None and mask.shape != x.shape[:-1]:
            raise ValueError(f"mask {mask.shape} does not match the rows of x {x.shape}")
        fold_of_sample = (self.samples + np.arange(x.shape[0])) % self.folds
        self.samples += x.shape[0]
        x_rows = x.reshape(x.shape[0], -1, self.d_in)
        y_rows = y.reshape(y.shape[0], -1, self.d_out)
        keep_rows = None if mask is None else mask.reshape(mask.shape[0], -1).astype(bool)
        for fold in range(self.folds):
            pick = fold_of_sample == fold
            if not pick.any():
                continue
            if keep_rows is None:
                xs = x_rows[pick].reshape(-1, self.d_in).astype(np.float64)
                ys = y_rows[pick].reshape(-1, self.d_out).astype(np.float64)
            else:
                keep = keep_rows[pick]
                xs, ys = x_rows[pick][keep].astype(np.float64), y_rows[pick][keep].astype(np.float64)
            if not len(xs):
                continue
            x_sum = xs.sum(0)
            self.gram[fold, :-1, :-1] += xs.T @ xs
            self.gram[fold, :-1, -1] += x_sum
            self.gram[fold, -1, :-1] += x_sum
            self.gram[fold, -1, -1] += len(xs)
            self.cross[fold, :-1] += xs.T @ ys
            self.cross[fold, -1] += ys.sum(0)
            self.y_square[fold] += float(np.einsum("ij,ij->", ys, ys))
            self.rows[fold] += len(xs)

    def _variance(self, fold: int | None = None) -> float:
        """Σ‖y − ȳ‖² over one fold (or all): the denominator of the relative errors."""
        cross = self.cross.sum(0) if fold is None else self.cross[fold]
        y_square = self.y_square.sum() if fold is None else self.y_square[fold]
        rows = self.rows.sum() if fold is None else self.rows[fold]
        return float(y_square - np.sum(cross[-1] ** 2) / max(rows, 1))

    def solve(self, lambdas: Sequence[float] = DEFAULT_LAMBDAS, prior: str | np.ndarray = "identity") -> LinearMap:
        """The ridge map with α chosen by held-out error (see the module docstring). ``prior``:
        "identity" (square maps; "zero" otherwise), "zero", or a (D_in, D_out) matrix that the
        penalty shrinks toward and that plain removal amounts to."""
        total_rows = int(self.rows.sum())
        if total_rows == 0:
            raise ValueError("no calibration rows were added")
        if isinstance(prior, np.ndarray):
            if prior.shape != (self.d_in, self.d_out):
                raise ValueError(f"prior matrix {prior.shape} does not match a {self.d_in} → {self.d_out} map")
            target: np.ndarray | None = np.asarray(prior, np.float64)
        elif prior not in ("identity", "zero"):
            raise ValueError(f"prior must be 'identity', 'zero' or a matrix, got {prior!r}")
        else:
            target = np.eye(self.d_in) if prior == "identity" and self.d_in == self.d_out else None
        gram, cross = self.gram.sum(0), self.cross.sum(0)
        scale = float(np.trace(gram[:-1, :-1])) / self.d_in or 1.0
        used = [f for f in range(self.folds) if self.rows[f] > 0]
        errors = np.full(len(lambdas), np.nan)
        removal = float("nan")
        if len(used) >= 2:
            errors[:] = 0.0
            for fold in used:
                train_gram, train_cross = gram - self.gram[fold], cross - self.cross[fold]
                for i, lam in enumerate(lambdas):
                    theta = _solve(train_gram, train_cross, lam * scale, target)
                    errors[i] += _squared_error(theta, self.gram[fold], self.cross[fold], self.y_square[fold])
            variance = sum(self._variance(f) for f in used)
            errors /= variance if variance > 0 else 1.0
        removal_map = target if isinstance(prior, np.ndarray) else (
            np.eye(self.d_in) if self.d_in == self.d_out else None)  # plain removal: y = x
        if removal_map is not None:
            removal_theta = np.vstack([removal_map, np.zeros((1, self.d_out))])
            variance = self._variance()
            removal = _squared_error(removal_theta, gram, cross, float(self.y_square.sum()))
            removal = removal / variance if variance > 0 else float("nan")
        best = int(np.nanargmin(errors)) if np.isfinite(errors).any() else 0
        theta = _solve(gram, cross, lambdas[best] * scale, target)
        return LinearMap(weight=theta[:-1], bias=theta[-1], alpha=lambdas[best] * scale,
                         relative_alpha=float(lambdas[best]), rows=total_rows, samples=self.samples,
                         heldout_error=float(errors[best]), removal_error=float(removal))


def fit_linear_heal(entry_acts: Iterable[np.ndarray], exit_acts: Iterable[np.ndarray], *,
                    masks: Iterable[np.ndarray | None] | None = None, lambdas: Sequence[float] = DEFAULT_LAMBDAS,
                    prior: str | np.ndarray = "identity", folds: int = DEFAULT_FOLDS) -> LinearMap:
    """Fit ``exit ≈ entry @ T + b`` from paired batches (each (N, ..., D), features last)."""
    accumulator: RidgeAccumulator | None = None
    mask_iter = iter(masks) if masks is not None else None
    for x, y in zip(entry_acts, exit_acts):
        if accumulator is None:
            accumulator = RidgeAccumulator(x.shape[-1], y.shape[-1], folds)
        accumulator.add_batch(x, y, next(mask_iter) if mask_iter is not None else None)
    if accumulator is None:
        raise ValueError("no calibration batches were given")
    return accumulator.solve(lambdas, prior)
