"""How far the MSRS of a scan could move with other probe batches: a percentile bootstrap over batches.

MSRS is the mean of one score per probe batch (:func:`redaudit.core.msrs.summarize_batches`), so
the question "how sure is this number" is the question of a mean's uncertainty. The per-batch std
the reports always showed is the spread of single batches, not of their mean; the interval here is
of the mean. Batches are the resampling unit because they are what the score is computed on (CKA
needs a batch; single samples have no score). NaN batches are left out, exactly as the mean leaves
them out.

Deterministic: the generator is seeded with a constant, so the same per-batch values always give
the same interval — the JSON, the HTML, the terminal, the history and the dashboard recompute it
from the stored per-batch values and must agree digit for digit. The resamples are drawn as one
(resamples × n) index matrix, in chunks of rows; NumPy's ``Generator.integers`` yields the same
stream drawn row by row or element by element, which is what the tests' plain loop relies on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Resamples per interval: the 2.5 % and 97.5 % quantiles of 2,000 means move by well under a
#: tenth of the interval between seeds, and 2,000 × a few hundred batches is a few milliseconds.
DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
#: Finite batches a scan needs before its interval means anything. The percentile bootstrap of a
#: mean is too narrow on few values: a nominal 95 % interval held the true mean in 48 % of 2,000
#: trials with 2 batches, 75 % with 3, 84 % with 5, 89 % with 8 and 91 % with 10 (normal per-batch
#: values, 1,000 resamples; 93 % from 20 on) — 10 is the first count above 90 %. Below it the
#: interval of an increase (what ``check --significant`` and the trend arrows act on) is undefined
#: and says "too few batches to tell".
MIN_INTERVAL_BATCHES = 10
#: A constant, not a clock or an entropy source: the interval is a function of the values only.
BOOTSTRAP_SEED = 20241115
#: Index-matrix elements drawn at once (8 MB of int64): bounds memory for scans of many batches.
_CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class MeanInterval:
    """A ``level`` percentile-bootstrap interval of the mean over ``batches`` finite values.

    ``low``/``high`` are NaN when the interval is undefined (fewer than
    :data:`MIN_INTERVAL_BATCHES` finite batches: below that a nominal 95 % interval misses the
    mean too often to be shown as one, the same rule the gate applies to an increase); ``reason``
    then says why ("too few batches to tell").
    """

    low: float
    high: float
    level: float
    batches: int
    resamples: int
    reason: str | None = None

    @property
    def defined(self) -> bool:
        return self.reason is None

    @property
    def width(self) -> float:
        return self.high - self.low if self.defined else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready (None for undefined bounds), as the scan report and the API write it."""
        return {"level": self.level, "low": self.low if self.defined else None,
                "high": self.high if self.defined else None, "batches": self.batches,
                "resamples": self.resamples, "seed": BOOTSTRAP_SEED,
                "method": "percentile bootstrap of the mean over probe batches", "undefined_reason": self.reason}


def _check(level: float, resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), not {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")


def resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` means of ``values`` drawn with replacement (n indices per resample)."""
    count = values.size
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // count)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows_per_chunk):
        stop = min(resamples, start + rows_per_chunk)
        rows = rng.integers(0, count, size=(stop - start, count), dtype=np.int32)  # the int64 stream, cheaper
        means[start:stop] = np.take(values, rows).mean(axis=1)
    return means


def percentiles(values: np.ndarray, levels: tuple[float, ...]) -> list[float]:
    """NumPy's default (``linear``) quantiles, by one sort: ``np.quantile``'s own overhead was
    most of an interval's cost, and ``history --scans`` computes one per listed scan."""
    ordered = np.sort(values)
    top = ordered.size - 1
    out = []
    for level in levels:
        position = top * level
        below = int(math.floor(position))
        above = min(below + 1, top)
        out.append(float(ordered[below] + (position - below) * (ordered[above] - ordered[below])))
    return out


def _finite(per_batch) -> np.ndarray:
    values = np.asarray(per_batch, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def _undefined_reason(count: int, minimum: int = MIN_INTERVAL_BATCHES) -> str | None:
    if count == 0:
        return "no batch gave a defined MSRS"
    if count < minimum:
        return (f"too few batches to tell ({count}; an interval needs at least {minimum}: "
                f"scan at least {minimum}x --cka-batch samples)")
    return None


def bootstrap_mean(per_batch, level: float = DEFAULT_LEVEL, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> MeanInterval:
    """The percentile bootstrap interval of the mean of the finite ``per_batch`` values."""
    _check(level, resamples)
    values = _finite(per_batch)
    reason = _undefined_reason(values.size)
    if reason is not None:
        return MeanInterval(math.nan, math.nan, level, int(values.size), resamples, reason)
    means = resampled_means(values, resamples, np.random.default_rng(seed))
    tail = (1.0 - level) / 2.0
    low, high = percentiles(means, (tail, 1.0 - tail))
    return MeanInterval(low, high, level, int(values.size), resamples)


@dataclass(frozen=True)
class IncreaseInterval:
    """The relative increase of one mean over another, in percent, and its bootstrap interval."""

    increase_pct: float
    low: float
    high: float
    level: float
    reason: str | None = None

    @property
    def defined(self) -> bool:
        return self.reason is None


def bootstrap_increase(baseline_batches, new_batches, level: float = DEFAULT_LEVEL,
                       resamples: int = DEFAULT_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> IncreaseInterval:
    """Percent increase ``100 (mean(new) / mean(baseline) − 1)`` and its percentile bootstrap
    interval, each scan's batches resampled independently (the two scans ran separately), the
    baseline's first, from one generator.

    A ratio rather than a difference because the gate's limit is a percentage: the interval is
    then directly the set of increases the batches are compatible with. Resamples whose baseline
    mean is 0 give +inf (any rise from 0 is unbounded), which the quantiles handle.
    """
    _check(level, resamples)
    base, new = _finite(baseline_batches), _finite(new_batches)
    point = float("nan")
    if base.size and new.size:
        point = _percent(np.array([base.mean()]), np.array([new.mean()]))[0]
    reason = next((f"{what}: {why}" for what, values in (("the baseline", base), ("the new scan", new))
                   if (why := _undefined_reason(values.size)) is not None), None)
    if reason is not None:
        return IncreaseInterval(float(point), math.nan, math.nan, level, reason)
    rng = np.random.default_rng(seed)
    base_means = resampled_means(base, resamples, rng)
    new_means = resampled_means(new, resamples, rng)
    tail = (1.0 - level) / 2.0
    # +inf (a rise from 0) as the largest float, so interpolating between two of them is not NaN
    increases = np.minimum(_percent(base_means, new_means), _HUGE)
    low, high = (math.inf if bound >= _HUGE else bound for bound in percentiles(increases, (tail, 1.0 - tail)))
    return IncreaseInterval(float(point), low, high, level)


_HUGE = float(np.finfo(np.float64).max)


def _percent(base: np.ndarray, new: np.ndarray) -> np.ndarray:
    """100 (new / base − 1); a rise from 0 is +inf, 0 → 0 is 0 (as ``check.increase_pct``)."""
    out = np.where(new > base, np.inf, 0.0)
    positive = base > 0
    out[positive] = 100.0 * (new[positive] / base[positive] - 1.0)
    return out
