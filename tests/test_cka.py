"""CKA math: known answers, invariances, estimator bias, batched == per-pair."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from redaudit.core.cka import cka_all_pairs, cka_pair, hsic_all_pairs


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


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


@settings(max_examples=40, deadline=None, derandomize=True)
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
