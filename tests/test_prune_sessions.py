"""A prune holds one onnxruntime session at a time (each holds a copy of the weights: a large
model's prune must not hold two), and the calibration that keeps it so (exits of the original
first, then the entries of the healed model) gives the statistics of reading both together."""
from __future__ import annotations

import weakref

import heal_models as hm
import numpy as np
import pytest
import weights_models as wm

from redaudit.core import run
from redaudit.prune import calibrate, find_candidates, prune_model
from redaudit.prune.calibrate import calibrate_spans, calibration_batches
from redaudit.prune.heal import heal_blocks
from redaudit.prune.padding import trim_is_exact


@pytest.fixture
def live_sessions(monkeypatch) -> list[int]:
    """After each session SessionFactory makes: how many of its sessions are alive (weak references,
    no garbage collection forced: a session kept by a reference cycle holds its weights too)."""
    alive: weakref.WeakSet = weakref.WeakSet()
    counts: list[int] = []
    create = run.SessionFactory.create

    def counted(self, model, what="the model"):
        made = create(self, model, what)
        alive.add(made[0])
        counts.append(len(alive))
        return made

    monkeypatch.setattr(run.SessionFactory, "create", counted)
    return counts


@pytest.mark.parametrize("iterative", [False, True])
def test_prune_heal_linear_of_two_spans_holds_one_session_at_a_time(tmp_path, live_sessions, iterative):
    model = wm.save_external(wm.wide_residual_mlp(width=64, blocks=4), tmp_path / "src" / "model.onnx")
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    choice = {"remove": 2} if iterative else {"blocks": ["block0.out", "block2.out"]}  # two spans, healed in turn
    result = prune_model(str(model), **choice, iterative=iterative, heal="linear", inputs={"x": x}, samples=64,
                         cka_batch=32, device="cpu", latency=False, force=True, output=tmp_path / "out" / "p.onnx")
    assert len(result.healed) == 2
    if not iterative:
        assert tuple(result.healed[1]["fitted_after"]) == ("block0.out",)  # sequential: the second span on the healed first
    assert len(live_sessions) >= 6 and max(live_sessions) == 1, live_sessions


def _sums(accumulators) -> list[tuple]:
    return [(a.gram.sum(0), a.cross.sum(0), a.y_square.sum(), a.rows.sum()) for a in accumulators]


def _assert_same(left, right) -> None:
    for stats_left, stats_right in zip(left, right, strict=True):
        for a, b in zip(stats_left, stats_right, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("entry_cut_holds", [True, False])
def test_entries_of_the_healed_model_with_stored_exits(monkeypatch, live_sessions, entry_cut_holds):
    """Sequential calibration with padding cut: the exits pass and the entries pass each prove the
    cut; where the healed model's check fails, the exits are recomputed on full batches, and the
    statistics equal the uncut ones either way."""
    model = hm.padded_encoder(mixing="masked")
    first, second = find_candidates(model)[:2]
    healed, _ = heal_blocks(model, [first], hm.padded_tokens(64, seq=12, seed=1))
    feeds = list(calibration_batches(model, hm.padded_tokens(96, seq=12), 16))
    span = [(second.entry, second.exit)]
    full = _sums(calibrate_spans(model, span, feeds, entry_model=healed, trim_padding=False))
    checks: list[bool] = []

    def check(fetch, feed, mask_name):
        checks.append(trim_is_exact(fetch, feed, mask_name) and (entry_cut_holds or not checks))
        return checks[-1]

    monkeypatch.setattr(calibrate, "trim_is_exact", check)
    live_sessions.clear()
    cut = _sums(calibrate_spans(model, span, feeds, entry_model=healed))
    assert checks == [True, entry_cut_holds]
    assert max(live_sessions) == 1 and len(live_sessions) == (2 if entry_cut_holds else 4)
    _assert_same(full, cut)


@pytest.mark.parametrize("large", [False, True])
def test_latency_holds_both_sessions_only_for_small_models(tmp_path, live_sessions, monkeypatch, large):
    """Alternating single runs needs both sessions; a model past ALTERNATE_RUNS_BELOW is timed in
    rounds with one session alive at a time (as if it were large: the bound set to 0)."""
    from redaudit.prune import verify

    if large:
        monkeypatch.setattr(verify, "ALTERNATE_RUNS_BELOW", 0)
    model = wm.save_external(wm.wide_residual_mlp(width=64, blocks=4), tmp_path / "src" / "model.onnx")
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    result = prune_model(str(model), remove=1, heal="linear", inputs={"x": x}, samples=64, cka_batch=32,
                         device="cpu", latency=True, latency_repeats=5, measure_msrs=False, force=True)
    assert result.latency is not None and result.latency.original_ms > 0 and result.latency.pruned_ms > 0
    assert result.latency.repeats == 5
    assert max(live_sessions) == (1 if large else 2), live_sessions
