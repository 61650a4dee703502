"""Is a change between two recorded scans beyond batch noise? `diff` and the history trend arrows
answer with the same bootstrap interval as `check --significant`, of the *mean* over batches.

The old rule compared the change with twice the combined per-batch std — the spread of single
batches, √n times wider than the uncertainty of their mean — so a change of several standard
errors read as "within batch noise".
"""
from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np

from redaudit.core.bootstrap import bootstrap_increase
from redaudit.history.records import ScanSummary, change_beyond_noise, trend


def summary(batches) -> ScanSummary:
    values = np.asarray(batches, dtype=np.float64)
    return ScanSummary(scan_id=1, created_at=datetime(2026, 1, 1, tzinfo=timezone.utc), label=None,
                       msrs=float(values.mean()), msrs_std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
                       layer_count=5, samples=64 * values.size, seed=0, input_hash="x", redaudit_version="t",
                       total_s=None, config={}, msrs_batches=tuple(float(v) for v in values))


def test_many_noisy_batches_resolve_a_small_change_of_their_mean():
    before = summary([9.0, 11.0] * 50)          # mean 10, std ≈ 1, standard error ≈ 0.1
    after = summary([9.5, 11.5] * 50)           # +0.5 = +5 %: about 3.5 standard errors
    assert 0.5 < 2 * math.hypot(before.msrs_std, after.msrs_std)  # the old rule called this noise
    assert bootstrap_increase(before.msrs_batches, after.msrs_batches).low > 0
    assert change_beyond_noise(before, after)
    assert trend(before, after) == "up"
    assert trend(after, before) == "down"


def test_a_change_inside_the_interval_is_noise():
    rng = np.random.default_rng(3)
    before = summary(10 + rng.normal(0, 1, 10))
    after = summary(np.asarray(before.msrs_batches) + rng.normal(0, 1, 10) * 0.5)
    interval = bootstrap_increase(before.msrs_batches, after.msrs_batches)
    assert interval.low < 0 < interval.high
    assert not change_beyond_noise(before, after)
    assert trend(before, after) == "flat"


def test_single_batches_fall_back_to_the_point_estimate_with_a_one_percent_floor():
    assert change_beyond_noise(summary([10.0]), summary([10.5]))
    assert not change_beyond_noise(summary([10.0]), summary([10.05]))
    assert trend(summary([10.0]), summary([10.05])) == "flat"


def test_tiny_changes_stay_flat_even_when_batches_agree_exactly():
    # Identical constant batches have a zero-width interval; a 0.1 % change is still "flat".
    assert trend(summary([10.0] * 8), summary([10.01] * 8)) == "flat"
    assert trend(summary([10.0] * 8), summary([10.5] * 8)) == "up"
