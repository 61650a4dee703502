"""The bootstrap interval of MSRS over batches, against a plain-Python loop with the same generator,
plus the properties an interval of a mean must have."""
from __future__ import annotations

import math

import numpy as np
import pytest

from redaudit.core.bootstrap import (
    BOOTSTRAP_SEED,
    bootstrap_increase,
    bootstrap_mean,
    resampled_means,
)


def loop_means(values: list[float], resamples: int, rng: np.random.Generator) -> list[float]:
    """One index at a time, summed left to right: no NumPy array arithmetic."""
    count = len(values)
    means = []
    for _ in range(resamples):
        total = 0.0
        for _ in range(count):
            total += values[int(rng.integers(0, count))]
        means.append(total / count)
    return means


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (NumPy's default ``method``), by hand."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def loop_interval(per_batch: list[float], level: float = 0.95, resamples: int = 2000) -> tuple[float, float]:
    values = [v for v in per_batch if math.isfinite(v)]
    means = loop_means(values, resamples, np.random.default_rng(BOOTSTRAP_SEED))
    tail = (1 - level) / 2
    return percentile(means, tail), percentile(means, 1 - tail)


@pytest.mark.parametrize("count", [10, 11, 41])
def test_interval_equals_plain_loop(count):
    per_batch = list(np.random.default_rng(count).gamma(4.0, 2.0, size=count))
    interval = bootstrap_mean(per_batch)
    low, high = loop_interval(per_batch)
    assert interval.defined and interval.batches == count and interval.resamples == 2000
    assert interval.low == pytest.approx(low, rel=1e-12, abs=1e-12)
    assert interval.high == pytest.approx(high, rel=1e-12, abs=1e-12)


def test_other_level_equals_plain_loop():
    per_batch = list(np.random.default_rng(7).normal(5.0, 1.0, size=12))
    interval = bootstrap_mean(per_batch, level=0.8, resamples=500)
    assert (interval.low, interval.high) == pytest.approx(loop_interval(per_batch, 0.8, 500), rel=1e-12)


def test_chunked_draw_equals_one_draw(monkeypatch):
    """Many batches are drawn in chunks of rows; the stream must not depend on the chunk size."""
    from redaudit.core import bootstrap

    values = np.random.default_rng(3).normal(size=300)
    whole = resampled_means(values, 50, np.random.default_rng(1))
    monkeypatch.setattr(bootstrap, "_CHUNK_ELEMENTS", 7 * 300 + 5)
    assert np.array_equal(resampled_means(values, 50, np.random.default_rng(1)), whole)


def test_nan_batches_are_left_out_as_the_mean_leaves_them_out():
    values = [3.0, 5.0, 4.0, 6.5, 2.5, 7.0, 4.5, 5.5, 3.5, 6.0]
    clean = bootstrap_mean(values)
    with_nan = bootstrap_mean(values[:2] + [float("nan")] + values[2:] + [float("nan")])
    assert clean.defined and (with_nan.low, with_nan.high, with_nan.batches) == (clean.low, clean.high, 10)


def test_interval_contains_the_mean():
    for seed in range(20):
        per_batch = np.random.default_rng(seed).exponential(3.0, size=10 + seed)
        interval = bootstrap_mean(per_batch)
        assert interval.low <= per_batch.mean() <= interval.high
        assert interval.low >= per_batch.min() and interval.high <= per_batch.max()


def test_width_shrinks_like_one_over_sqrt_n():
    """iid batches: the interval of a mean over 16× the batches is about 4× narrower."""
    rng = np.random.default_rng(11)
    ratios = [bootstrap_mean(rng.normal(8.0, 0.5, size=25)).width /
              bootstrap_mean(rng.normal(8.0, 0.5, size=400)).width for _ in range(10)]
    assert 3.4 < float(np.mean(ratios)) < 4.6
    # and it is the mean's interval, not the batches' spread: 95 % of ±1.96 σ/√n
    assert bootstrap_mean(rng.normal(8.0, 0.5, size=400)).width == pytest.approx(2 * 1.96 * 0.5 / 20, rel=0.15)


def test_constant_batches_give_zero_width():
    interval = bootstrap_mean([7.25] * 10)
    assert interval.defined and interval.width == 0.0 and interval.low == pytest.approx(7.25, abs=1e-12)


@pytest.mark.parametrize("per_batch, words", [([4.2], "too few batches to tell (1;"),
                                              ([4.2, float("nan")], "too few batches to tell (1;"),
                                              ([4.0, 5.0], "too few batches to tell (2;"),
                                              (list(range(1, 10)) + [float("nan")], "too few batches to tell (9;"),
                                              ([float("nan")] * 3, "no batch"), ([], "no batch")])
def test_fewer_than_ten_batches_have_no_interval(per_batch, words):
    """Below MIN_INTERVAL_BATCHES the percentile bootstrap of a mean undercovers (48 % for a nominal
    95 % with 2 batches): no interval is shown, as the gate shows none for an increase."""
    interval = bootstrap_mean(per_batch)
    assert not interval.defined and words in interval.reason
    assert math.isnan(interval.low) and math.isnan(interval.high) and math.isnan(interval.width)
    assert interval.to_dict()["low"] is None and interval.to_dict()["undefined_reason"] == interval.reason


def test_deterministic_and_independent_of_global_random_state():
    per_batch = [1.0, 2.5, 2.0, 3.5, 1.5]
    first = bootstrap_mean(per_batch)
    np.random.seed(123)
    np.random.random(10)
    assert bootstrap_mean(per_batch) == first


@pytest.mark.parametrize("level, resamples", [(0.0, 10), (1.0, 10), (0.95, 0)])
def test_bad_parameters_raise(level, resamples):
    with pytest.raises(ValueError):
        bootstrap_mean([1.0, 2.0], level=level, resamples=resamples)


def test_increase_interval_equals_plain_loop():
    base = list(np.random.default_rng(1).normal(8.0, 0.6, size=10))
    new = list(np.random.default_rng(2).normal(9.0, 0.6, size=14))
    result = bootstrap_increase(base, new, resamples=800)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    base_means, new_means = loop_means(base, 800, rng), loop_means(new, 800, rng)
    increases = [100.0 * (n / b - 1.0) for b, n in zip(base_means, new_means)]
    assert result.increase_pct == pytest.approx(100.0 * (np.mean(new) / np.mean(base) - 1.0), rel=1e-12)
    assert result.low == pytest.approx(percentile(increases, 0.025), rel=1e-10)
    assert result.high == pytest.approx(percentile(increases, 0.975), rel=1e-10)
    assert result.low < result.increase_pct < result.high


def test_increase_interval_separates_noise_from_a_shift():
    rng = np.random.default_rng(5)
    same = bootstrap_increase(rng.normal(8.0, 0.6, size=10), rng.normal(8.0, 0.6, size=10))
    assert same.low < 0.0 < same.high
    shifted = bootstrap_increase(rng.normal(8.0, 0.3, size=10), rng.normal(10.0, 0.3, size=10))
    assert shifted.low > 15.0


def test_increase_from_zero_is_infinite_and_undefined_with_one_batch():
    assert bootstrap_increase([0.0] * 10, [1.0, 2.0] * 5).low == math.inf
    assert bootstrap_increase([0.0] * 10, [0.0] * 10).high == 0.0
    single = bootstrap_increase([5.0], [6.0, 6.5])
    assert not single.defined and "baseline" in single.reason and single.increase_pct == pytest.approx(25.0)


def test_percentiles_equal_numpys_linear_quantiles():
    from redaudit.core.bootstrap import percentiles

    for size in (1, 2, 7, 2000):
        values = np.random.default_rng(size).normal(size=size)
        levels = (0.0, 0.025, 0.5, 0.975, 1.0)
        assert percentiles(values, levels) == pytest.approx(list(np.quantile(values, levels)), rel=1e-12, abs=1e-15)


def test_an_increase_interval_needs_min_interval_batches_on_both_sides():
    """Coverage of a nominal 95 % percentile interval of a mean, measured here as MIN_INTERVAL_BATCHES'
    comment says: below the minimum it falls clearly short, at it it is within 5 points."""
    from redaudit.core.bootstrap import MIN_INTERVAL_BATCHES, percentiles, resampled_means

    rng = np.random.default_rng(11)

    def coverage(count: int, trials: int = 400) -> float:
        hits = 0
        for _ in range(trials):
            low, high = percentiles(resampled_means(rng.normal(0.0, 1.0, count), 500, rng), (0.025, 0.975))
            hits += low <= 0.0 <= high
        return hits / trials
    assert coverage(2) < 0.6 and coverage(MIN_INTERVAL_BATCHES) > 0.86
    few = bootstrap_increase([8.0, 8.5] * 5, [8.0, 9.0, 9.5])
    assert not few.defined and few.reason.startswith("the new scan: too few batches to tell (3;")
    assert bootstrap_increase([8.0, 8.5] * 5, [9.0, 9.5] * 5).defined
