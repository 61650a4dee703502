"""``check --significant``: the increase gate fails only beyond batch noise; intervals computed on
read from the stored per-batch MSRS equal those of the fresh scan (SQLite and PostgreSQL)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from redaudit.cli.history import history_command
from redaudit.core.bootstrap import bootstrap_increase, bootstrap_mean
from redaudit.history import check_result, record_scan
from redaudit.history.store import open_store
from redaudit.report.numbers import interval_bounds
from tests.history.conftest import make_result

BASE_BATCHES = [8.0, 8.6, 7.4, 8.2, 7.8, 8.3, 7.7, 8.0, 8.1, 7.9, 8.4, 7.6]  # >= MIN_INTERVAL_BATCHES


def with_batches(result, batches):
    values = np.asarray(batches, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return replace(result, msrs=float(finite.mean()), msrs_std=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
                   msrs_batches=values, batches=len(values), nan_batches=int((~np.isfinite(values)).sum()))


@pytest.fixture
def baseline(db_url):
    base = with_batches(make_result(file_tag="v1"), BASE_BATCHES)
    record_scan(db_url, base, "net", label="v1")
    return db_url, base


def test_interval_on_read_equals_the_fresh_scans(baseline):
    db_url, base = baseline
    with open_store(db_url) as store:
        stored = store.model_history("net").versions[0].scans[0]
    assert stored.msrs_batches == tuple(BASE_BATCHES)
    assert stored.msrs_interval == base.msrs_interval == bootstrap_mean(BASE_BATCHES)


def test_nan_batches_survive_the_round_trip(db_url):
    result = with_batches(make_result(file_tag="n"), [3.0, float("nan"), 3.5, 2.5])
    record_scan(db_url, result, "net")
    with open_store(db_url) as store:
        stored = store.model_history("net").versions[0].scans[0]
    assert stored.msrs_batches == (3.0, None, 3.5, 2.5) and stored.msrs_interval == result.msrs_interval


def test_noisy_increase_fails_plain_gate_and_passes_significant(baseline):
    db_url, _ = baseline
    noisy = with_batches(make_result(file_tag="v2"), [9.5, 7.0, 9.9, 7.6, 8.9, 10.1, 7.5, 9.8, 8.6, 9.0, 7.2, 9.7])
    plain = check_result(noisy, against="net", max_increase=5, db=db_url)
    assert not plain.passed and plain.increase_pct > 5
    outcome = check_result(noisy, against="net", max_increase=5, db=db_url, significant=True)
    expected = bootstrap_increase(BASE_BATCHES, noisy.msrs_batches)
    assert outcome.passed and expected.low <= 5 < outcome.increase_pct
    assert (outcome.increase_interval.low, outcome.increase_interval.high) == (expected.low, expected.high)
    assert "within batch noise" in outcome.reason and f"{expected.low:+.1f}%" in outcome.reason


def test_clear_increase_fails_significant_too(baseline):
    db_url, _ = baseline
    grown = with_batches(make_result(file_tag="v2"), [v * 1.3 for v in BASE_BATCHES[::-1]])
    outcome = check_result(grown, against="net", max_increase=5, db=db_url, significant=True)
    assert not outcome.passed and outcome.increase_interval.low > 5
    assert "beyond batch noise" in outcome.reason


def test_increase_within_the_limit_passes_whatever_the_interval(baseline):
    db_url, _ = baseline
    same = with_batches(make_result(file_tag="v2"), BASE_BATCHES[::-1])
    outcome = check_result(same, against="net", max_increase=5, db=db_url, significant=True)
    assert outcome.passed and outcome.increase_pct == pytest.approx(0.0, abs=1e-9)


def test_single_batch_falls_back_to_the_point_estimate(baseline):
    db_url, _ = baseline
    single = with_batches(make_result(file_tag="v2"), [9.0])
    outcome = check_result(single, against="net", max_increase=5, db=db_url, significant=True)
    assert not outcome.passed and "too few batches to tell (1;" in outcome.reason
    assert "the point estimate decides" in outcome.reason


def test_too_few_batches_give_no_interval_and_say_so(baseline):
    """Two batches make a bootstrap interval of a mean that covers the truth about half the
    time: the gate must not read one as evidence of a regression (issue 24: "+11.0% to +170.6%"
    from 2 batches). Below MIN_INTERVAL_BATCHES the interval is undefined and the verdict says why."""
    from redaudit.core.bootstrap import MIN_INTERVAL_BATCHES

    db_url, _ = baseline
    few = with_batches(make_result(file_tag="v2"), [8.0, 8.1, 9.9][:MIN_INTERVAL_BATCHES - 1])
    outcome = check_result(few, against="net", max_increase=50, db=db_url, significant=True)
    assert outcome.increase_interval is not None and not outcome.increase_interval.defined
    assert f"too few batches to tell (3; an interval needs at least {MIN_INTERVAL_BATCHES}" in outcome.reason
    assert outcome.passed  # +6 % within 50 %: the point estimate decides
    assert bootstrap_increase(BASE_BATCHES, BASE_BATCHES).defined


def test_history_lists_the_interval_per_scan(baseline):
    db_url, base = baseline
    runner = CliRunner()
    every = runner.invoke(history_command, ["net", "--db", db_url, "--scans"])
    assert every.exit_code == 0, every.output
    assert "95% CI" in every.output and interval_bounds(base.msrs_interval) in every.output
    data = json.loads(runner.invoke(history_command, ["net", "--db", db_url, "--json"]).output)
    ci = data["versions"][0]["scans"][0]["msrs_ci"]
    assert (ci["low"], ci["high"], ci["batches"]) == (base.msrs_interval.low, base.msrs_interval.high, 12)
