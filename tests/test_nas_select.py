from __future__ import annotations

import pytest

from redaudit.errors import ConfigError
from redaudit.nas.select import Candidate, pareto_front, select


def cand(number, acc, msrs, params=1000):
    return Candidate(number=number, val_accuracy=acc, test_accuracy=acc, msrs=msrs, parameters=params,
                     flops=1, latency_ms=0.1, architecture={})


POOL = [cand(0, 0.980, 6.0, 50_000), cand(1, 0.975, 0.5, 9_000), cand(2, 0.972, 0.1, 5_000),
        cand(3, 0.960, 0.0, 3_000), cand(4, 0.980, 2.0, 60_000)]


def test_accuracy_rule_takes_best_validation_accuracy_earliest_on_ties():
    assert select(POOL, "accuracy").number == 0


def test_redundancy_aware_rule_takes_lowest_msrs_within_tolerance():
    assert select(POOL, "redundancy-aware", tolerance=0.01).number == 2   # 0.972 >= 0.970
    assert select(POOL, "redundancy-aware", tolerance=0.005).number == 1  # only 0.975 and up
    assert select(POOL, "redundancy-aware", tolerance=0.0).number == 4    # among the 0.980s
    assert select(POOL, "redundancy-aware", tolerance=0.05).number == 3


def test_ties_in_msrs_fall_to_fewer_parameters():
    pool = [cand(0, 0.98, 0.0, 9_000), cand(1, 0.98, 0.0, 4_000)]
    assert select(pool, "redundancy-aware").number == 1


def test_nan_msrs_never_wins():
    pool = [cand(0, 0.98, float("nan"), 10), cand(1, 0.975, 3.0)]
    assert select(pool, "redundancy-aware").number == 1


def test_pareto_front_is_non_dominated_and_sorted():
    front = pareto_front(POOL)
    assert [c.number for c in front] == [4, 1, 2, 3]


def test_selection_errors():
    with pytest.raises(ConfigError, match="no completed trials"):
        select([], "accuracy")
    with pytest.raises(ConfigError, match="rule"):
        select(POOL, "fastest")
