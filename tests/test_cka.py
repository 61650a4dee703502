"""CKA math: known answers, invariances, estimator bias, batched == per-pair."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from redaudit.core.cka import feature_side_cheaper as _FEATURE_SIDE_CHEAPER
from redaudit.core.cka import cka_all_pairs, cka_pair, hsic_all_pairs


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.fixture(autouse=True, params=["gram", "features"])
def hsic_method(request, monkeypatch):
    """Every test here runs once per way of forming the HSIC terms (cka.HSIC_METHODS): the n × n
    Grams and the Σd × Σd feature-side product must give the same CKA on every input."""
    import redaudit.core.cka as cka

    monkeypatch.setattr(cka, "feature_side_cheaper", lambda n, widths: request.param == "features")
    return request.param


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_exact_copy_gives_one(estimator):
    x = _random(64, 20, 0)
    matrix = cka_all_pairs([x, x.copy(), _random(64, 7, 1)], estimator)
    assert matrix[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(np.diag(matrix), 1.0, atol=1e-12)
    assert np.allclose(matrix, matrix.T, atol=1e-14)


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_invariant_to_rotation_and_isotropic_scaling(estimator):
    x, y = _random(80, 16, 2), _random(80, 16, 3) + _random(80, 16, 2)
    rotation, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(16, 16)))
    base = cka_pair(x, y, estimator)
    assert cka_pair(x @ rotation * 7.5, y, estimator) == pytest.approx(base, abs=1e-10)
    assert cka_pair(x, y * 0.01, estimator) == pytest.approx(base, abs=1e-10)
    assert cka_all_pairs([x @ rotation, x], estimator)[0, 1] == pytest.approx(1.0, abs=1e-9)


def test_not_invariant_to_anisotropic_scaling():
    """A guard that the invariance test can fail: per-feature scaling does change CKA."""
    x, y = _random(80, 16, 2), _random(80, 16, 3) + _random(80, 16, 2)
    scales = np.linspace(0.1, 10, 16)
    assert abs(cka_pair(x * scales, y) - cka_pair(x, y)) > 1e-3


def test_unbiased_near_zero_for_independent_wide_features_biased_not():
    """d ≫ n: the biased estimator reports large similarity between independent noise."""
    n, d = 64, 4096
    x, y = _random(n, d, 10), _random(n, d, 11)
    unbiased = cka_pair(x, y, "unbiased")
    biased = cka_pair(x, y, "biased")
    assert abs(unbiased) < 0.05
    assert biased > 0.5


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_batched_all_pairs_equals_per_pair(estimator):
    features = [_random(40, d, seed) for seed, d in enumerate((3, 17, 64, 5))]
    features.append(features[1] @ _random(17, 9, 99))  # a linear map of layer 1
    matrix = cka_all_pairs(features, estimator)
    expected = np.array([[cka_pair(a, b, estimator) for b in features] for a in features])
    assert np.abs(matrix - expected).max() < 1e-10


def test_blocked_gram_path_matches_unblocked(monkeypatch):
    import redaudit.core.cka as cka

    features = [_random(50, d, seed) for seed, d in enumerate((4, 8, 16))]
    whole = cka.hsic_all_pairs(features)
    monkeypatch.setattr(cka, "_GRAM_BLOCK_BYTES", 8 * 50 * 3 * 7)  # 7 rows per block
    assert np.abs(cka.hsic_all_pairs(features) - whole).max() < 1e-12


def test_constant_layer_is_nan_not_a_number():
    x = _random(32, 6, 0)
    matrix = cka_all_pairs([x, np.full((32, 4), 3.0), x * 1e-6])
    assert np.isnan(matrix[1]).all() and np.isnan(matrix[:, 1]).all()
    assert matrix[0, 2] == pytest.approx(1.0, abs=1e-9)  # tiny but not constant


def test_unbiased_needs_four_samples():
    with pytest.raises(ValueError):
        hsic_all_pairs([_random(3, 2, 0)] * 2)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the fixture sets the method only
@given(n=st.integers(6, 40), d1=st.integers(1, 12), d2=st.integers(1, 12), seed=st.integers(0, 10_000),
       scale=st.floats(1e-3, 1e3))
def test_property_symmetric_bounded_and_scale_invariant(n, d1, d2, seed, scale):
    x, y = _random(n, d1, seed), _random(n, d2, seed + 1)
    matrix = cka_all_pairs([x, y, y * scale])
    # With very few samples the unbiased self-HSIC of a layer can come out ≤ 0: that layer is
    # reported as NaN by design (tested elsewhere); the properties below are for the rest.
    assume(np.isfinite(matrix).all())
    assert np.allclose(matrix, matrix.T, atol=1e-12)
    assert matrix[1, 2] == pytest.approx(1.0, abs=1e-8)
    assert matrix[0, 1] == pytest.approx(matrix[0, 2], abs=1e-8)
    biased = cka_all_pairs([x, y], "biased")
    assert -1e-12 <= biased[0, 1] <= 1 + 1e-12


def _reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased CKA through U-centred Grams (Székely & Rizzo), from float64-centred features:
    a different formula from cka.py's, sharing no code with it."""
    def u_centred(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        x = x - x.mean(axis=0)
        gram = x @ x.T
        n = len(gram)
        np.fill_diagonal(gram, 0.0)
        rows = gram.sum(axis=1) / (n - 2)
        centred = gram - rows[:, None] - rows[None, :] + gram.sum() / ((n - 1) * (n - 2))
        np.fill_diagonal(centred, 0.0)
        return centred

    kx, ky = u_centred(x), u_centred(y)
    return float((kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum()))


def _far_from_zero(n: int, seed: int, dtype=np.float64) -> list[np.ndarray]:
    """Three layers whose values sit at ~1e3 and move by ~1e-3 across samples (std/mean 1e-6),
    the regime of pooled post-ReLU CNN features, only more extreme."""
    base = _random(n, 8, seed)
    related = base @ _random(8, 6, seed + 1) + 0.5 * _random(n, 6, seed + 2)
    return [(1e3 + 1e-3 * layer).astype(dtype) for layer in (base, related, _random(n, 5, seed + 3))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_large_mean_small_spread_is_not_constant_and_matches_reference(dtype, estimator):
    features = _far_from_zero(64, 5, dtype)
    matrix = cka_all_pairs(features, estimator)
    assert np.isfinite(matrix).all(), matrix
    if estimator == "unbiased":
        expected = np.array([[_reference_cka(a, b) for b in features] for a in features])
        assert np.abs(matrix - expected).max() < 1e-6
    # The single-pair check implementation must be robust too: the same values, shifted, agree.
    shifted = [f.astype(np.float64) - f.astype(np.float64).mean(axis=0) for f in features]
    for i in range(3):
        for j in range(3):
            assert cka_pair(features[i], features[j], estimator) == pytest.approx(
                cka_pair(shifted[i], shifted[j], estimator), abs=1e-9)
            assert matrix[i, j] == pytest.approx(cka_pair(shifted[i], shifted[j], estimator), abs=1e-6)


def test_exactly_constant_layers_are_reported_constant():
    rng = np.random.default_rng(7)
    x = _random(48, 6, 0)
    jitter = np.float32(0.1) + np.float32(2 ** -27) * rng.integers(-1, 2, size=(48, 3)).astype(np.float32)
    assert np.ptp(jitter, axis=0).min() > 0  # rounding-level jitter, not an exact constant
    layers = [
        x,
        np.full((48, 4), 0.1),  # its float64 mean is not exactly 0.1
        np.full((48, 2), 1e3, dtype=np.float32),
        jitter.astype(np.float32),  # constant up to float32 rounding of its values
        np.zeros((48, 5), dtype=np.float32),
        np.hstack([np.full((48, 1), 1e3), 1e3 + 1e-3 * _random(48, 1, 9)]),  # one column moves: not constant
    ]
    for estimator in ("unbiased", "biased"):
        matrix = cka_all_pairs(layers, estimator)
        for position in (1, 2, 3, 4):
            assert np.isnan(matrix[position]).all() and np.isnan(matrix[:, position]).all()
        assert np.isfinite(matrix[np.ix_([0, 5], [0, 5])]).all()


def test_accumulator_keeps_far_from_zero_layer_and_flags_constant():
    from redaudit.core.backend import select_backend
    from redaudit.core.similarity import SimilarityAccumulator

    for aggregate in ("cka", "hsic"):
        accumulator = SimilarityAccumulator(4, select_backend("numpy"), aggregate=aggregate)
        for seed in range(3):
            features = _far_from_zero(64, 10 * seed, np.float32)
            accumulator.add_batch([*features, np.full((64, 3), 7.0, dtype=np.float32)])
        summary = accumulator.finish(0.8, 100.0)
        assert summary.excluded_layers == [3]
        assert list(summary.layer_issues) == [3] and "constant" in summary.layer_issues[3]
        assert np.isfinite(summary.similarity[:3, :3]).all()


def test_non_finite_layer_spoils_only_its_own_row():
    from redaudit.core.backend import select_backend
    from redaudit.core.similarity import SimilarityAccumulator

    clean = _far_from_zero(32, 3, np.float32)
    with_nan, with_inf = clean[0].copy(), clean[1].copy()
    with_nan[5, 2] = np.nan
    with_inf[0, 0] = np.inf
    accumulator = SimilarityAccumulator(5, select_backend("numpy"))
    accumulator.add_batch([*clean, with_nan, with_inf])
    summary = accumulator.finish(0.8, 100.0)
    assert sorted(summary.layer_issues) == [3, 4]
    assert all("NaN/Inf" in text for text in summary.layer_issues.values())
    assert np.isnan(summary.similarity[3:]).all() and np.isnan(summary.similarity[:, 3:]).all()
    expected = np.array([[_reference_cka(a, b) for b in clean] for a in clean])
    assert np.abs(summary.similarity[:3, :3] - expected).max() < 1e-6


def _pooled_like(n: int, widths: list[int], seed: int) -> list[np.ndarray]:
    """Narrow post-ReLU float32 layers sharing a source, offset from zero (pooled CNN blocks)."""
    rng = np.random.default_rng(seed)
    base = np.maximum(rng.normal(size=(n, max(widths))), 0)
    return [(np.maximum(base[:, :w] @ rng.normal(size=(w, w)) + 0.3 * rng.normal(size=(n, w)), 0) + 5)
            .astype(np.float32) for w in widths]


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_feature_side_equals_gram_side_on_a_large_pooled_batch(estimator):
    """The case the feature side exists for (one CKA batch of 600 samples, 9 narrow layers): both
    methods agree to rounding, and with the independent U-centred reference."""
    from redaudit.core.cka import batch_hsic, cka_from_hsic

    features = _pooled_like(600, [16, 16, 16, 32, 32, 32, 64, 64, 64], 3)
    by_gram, by_features = (batch_hsic(features, estimator, np, method) for method in ("gram", "features"))
    assert np.abs(by_features.hsic - by_gram.hsic).max() <= 1e-12 * np.abs(by_gram.hsic).max()
    matrix = cka_from_hsic(by_features.hsic)
    if estimator == "unbiased":
        expected = np.array([[_reference_cka(a, b) for b in features] for a in features])
        assert np.abs(matrix - expected).max() < 1e-12


def test_feature_side_keeps_a_non_finite_layer_in_its_own_row():
    """0 × NaN is NaN: block sums through an indicator matrix would spread one layer's NaN to
    every entry. Each layer's slice is summed on its own instead."""
    from redaudit.core.cka import batch_hsic

    features = _pooled_like(200, [8, 8, 16, 16], 5)
    features[1] = features[1].copy()
    features[1][7, 3] = np.nan
    result = batch_hsic(features, "unbiased", np, "features")
    assert np.isnan(result.hsic[1]).all() and np.isnan(result.hsic[:, 1]).all()
    others = [0, 2, 3]
    assert np.isfinite(result.hsic[np.ix_(others, others)]).all()
    assert not bool(result.finite[1]) and bool(result.finite[others].all())


def test_the_cheaper_method_is_chosen():
    choose = _FEATURE_SIDE_CHEAPER  # the real rule (the autouse fixture replaces the module's)
    assert choose(1024, [16] * 15 + [32] * 15 + [64] * 15)  # issue 27's L = 45 CNN, pooled, n = 1,024
    assert not choose(64, [16384] * 5 + [8192] * 5 + [4096] * 5)  # flattened, CKA batches of 64
    assert not choose(256, [64, 128, 256, 512] * 2 + [512])  # pooled ResNet-18 blocks, CKA batch 256
    assert not choose(10**6, [5000])  # C would take 200 MB


def test_unknown_method_is_refused():
    from redaudit.core.cka import batch_hsic

    with pytest.raises(ValueError, match="HSIC method"):
        batch_hsic([_random(10, 2, 0)] * 2, "unbiased", np, "fourier")


def test_spread_rule_runs_only_where_the_gram_cannot_prove_variation(monkeypatch):
    """The per-column max/min constancy rule costs a tenth of a wide layer's HSIC (issue 27); on
    the Gram path a layer whose centred energy is far above what a constant layer's rounding
    could leave is judged varying without it. Near-constant layers still get the exact rule."""
    import redaudit.core.centring as centring
    import redaudit.core.cka as cka

    calls: list[int] = []
    exact = centring.spread_constant
    monkeypatch.setattr(centring, "spread_constant", lambda raw, xp: calls.append(raw.shape[1]) or exact(raw, xp))
    layers = [_random(64, 300, 1).astype(np.float32), np.maximum(_random(64, 200, 2), 0.0),
              np.full((64, 7), 3.0, dtype=np.float32), _far_from_zero(64, 4, np.float32)[0]]
    result = cka.batch_hsic(layers, method="gram")
    assert calls == [7, 8]  # only the constant layer and the float32 1e3 ± 1e-3 one (80 ulps)
    assert result.constant.tolist() == [False, False, True, False]


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(4, 96), width=st.integers(1, 40), ulps=st.integers(0, 24), seed=st.integers(0, 10_000),
       exponent=st.integers(-30, 30), float32=st.booleans(), moving=st.integers(0, 3))
def test_constancy_verdict_is_the_spread_rule_on_every_path(n, width, ulps, seed, exponent, float32, moving):
    """Whatever shortcut a path takes, a layer is constant exactly when the per-column spread rule
    says so: constants jittered by 0-24 units of rounding at magnitudes 1e-30..1e30, in float32 and
    float64, with up to 3 columns that move by more."""
    import redaudit.core.cka as cka
    from redaudit.core.centring import spread_constant

    dtype = np.float32 if float32 else np.float64
    rng = np.random.default_rng(seed)
    centre_value = dtype(rng.uniform(0.5, 2.0) * 10.0 ** exponent)
    unit = np.finfo(dtype).eps * abs(centre_value)
    layer = (centre_value + (rng.integers(-ulps, ulps + 1, size=(n, width)) * unit / 2).astype(dtype)).astype(dtype)
    layer[:, :min(moving, width)] += dtype(rng.uniform(10, 100) * unit) * rng.normal(size=(n, min(moving, width))).astype(dtype)
    layers = [_random(n, 5, seed), layer]
    expected = bool(spread_constant(layer.reshape(n, -1), np))
    assert bool(cka.batch_hsic(layers, method="gram").constant[1]) == expected
    assert bool(cka.batch_hsic(layers, method="features").constant[1]) == expected
