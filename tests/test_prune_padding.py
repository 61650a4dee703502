"""Calibration without trailing padding: the same statistics as full batches where the model's
real tokens never see the padding, full batches kept where they do (or the length is fixed)."""
from __future__ import annotations

import heal_models as hm
import numpy as np
import pytest

from redaudit.prune import calibrate, find_candidates
from redaudit.prune.calibrate import calibrate_spans, calibration_batches
from redaudit.prune.heal import HealOptions, LinearHealer
from redaudit.prune.padding import (
    real_lengths,
    sorted_by_length,
    trim_is_exact,
    trimmed,
)


def test_lengths_sorting_and_cutting():
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 1, 0]])
    assert real_lengths(mask).tolist() == [2, 3, 0, 1, 3]  # one past the last real token
    arrays = {"attention_mask": mask, "ids": np.arange(5)}
    assert sorted_by_length(arrays, "attention_mask")["ids"].tolist() == [2, 3, 0, 1, 4]  # stable
    feed = {"attention_mask": mask[[0, 3]], "input_ids": mask[[0, 3]] * 7, "other": np.ones((2, 9))}
    cut = trimmed(feed, "attention_mask")
    assert cut["attention_mask"].shape == (2, 2) and cut["input_ids"].shape == (2, 2)
    assert cut["other"].shape == (2, 9)  # not shaped like the mask: untouched
    assert trimmed({"attention_mask": mask[[2]]}, "attention_mask")["attention_mask"].shape == (1, 1)


def _statistics(model, spans, feeds, trim: bool, monkeypatch) -> tuple[list, list]:
    decisions: list[bool] = []
    monkeypatch.setattr(calibrate, "trim_is_exact", lambda *a: decisions.append(trim_is_exact(*a)) or decisions[-1])
    accumulators = calibrate_spans(model, spans, feeds, trim_padding=trim)
    return [(a.gram.sum(0), a.cross.sum(0), a.y_square.sum(), a.rows.sum()) for a in accumulators], decisions


def _assert_same(left, right):
    for stats_left, stats_right in zip(left, right, strict=True):
        for a, b in zip(stats_left, stats_right):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_cut_batches_give_the_full_batches_statistics(monkeypatch):
    model = hm.padded_encoder(mixing="masked")
    spans = [(b.entry, b.exit) for b in find_candidates(model)]
    arrays = hm.padded_tokens(96, seq=12)
    feeds = list(calibration_batches(model, arrays, 16))
    full, none_asked = _statistics(model, spans, feeds, False, monkeypatch)
    cut, decisions = _statistics(model, spans, feeds, True, monkeypatch)
    assert none_asked == [] and decisions == [True]  # proven once, then used
    _assert_same(full, cut)
    assert full[0][3] == arrays["attention_mask"].sum()  # rows = real tokens either way


def test_padding_that_reaches_real_tokens_keeps_full_batches(monkeypatch):
    model = hm.padded_encoder(mixing="unmasked")
    spans = [(b.entry, b.exit) for b in find_candidates(model)]
    feeds = list(calibration_batches(model, hm.padded_tokens(64, seq=12), 16))
    full, _ = _statistics(model, spans, feeds, False, monkeypatch)
    kept, decisions = _statistics(model, spans, feeds, True, monkeypatch)
    assert decisions == [False]  # the check saw the difference
    _assert_same(full, kept)


def test_a_fixed_sequence_length_is_never_cut(monkeypatch):
    model = hm.padded_encoder(mixing="masked", seq=12)
    spans = [(b.entry, b.exit) for b in find_candidates(model)]
    _, decisions = _statistics(model, spans, list(calibration_batches(model, hm.padded_tokens(32), 16)),
                               True, monkeypatch)
    assert decisions == []


@pytest.mark.parametrize("trim", [True, False])
def test_healer_sorts_by_length_only_when_cutting(trim, monkeypatch):
    model = hm.padded_encoder(mixing="masked")
    arrays = hm.padded_tokens(64, seq=12)
    seen: list[np.ndarray] = []
    real = calibrate.calibrate_spans

    def spy(model_, spans, feeds, **kw):
        feeds = list(feeds)
        seen.extend(real_lengths(feed["attention_mask"]) for feed in feeds)
        return real(model_, spans, feeds, **kw)
    import redaudit.prune.heal as heal_module
    monkeypatch.setattr(heal_module, "calibrate_spans", spy)
    _, (span,) = LinearHealer(model, arrays, HealOptions(batch_size=16, trim_padding=trim)).apply(
        [find_candidates(model)[1]])
    lengths = np.concatenate(seen)
    assert (np.all(np.diff(lengths) >= 0) if trim else lengths.tolist() == real_lengths(arrays["attention_mask"]).tolist())
    assert span.rows == arrays["attention_mask"].sum()
