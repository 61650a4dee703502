"""MSRS on hand-made matrices and on generated models whose redundancy we control."""
from __future__ import annotations

import math

import numpy as np
import pytest

import models
import redaudit
from redaudit.core.msrs import msrs_of_matrix, pair_scores, summarize_batches


def test_msrs_equals_formula_on_hand_made_matrix():
    s = np.array([[1.0, 0.9, 0.5], [0.9, 1.0, 0.81], [0.5, 0.81, 1.0]])
    expected = sum((1 + math.tanh(100 * (v - 0.8))) / 2 for v in (0.9, 0.5, 0.81))
    assert msrs_of_matrix(s, 0.8, 100) == pytest.approx(expected, abs=1e-12)
    assert msrs_of_matrix(s, 0.8, 100) == pytest.approx(1.0 + 0.0 + (1 + math.tanh(1.0)) / 2, abs=1e-8)


def test_msrs_parameters_matter():
    s = np.array([[1.0, 0.75], [0.75, 1.0]])
    assert msrs_of_matrix(s, 0.8, 100) < 0.01
    assert msrs_of_matrix(s, 0.7, 100) > 0.99
    assert msrs_of_matrix(s, 0.8, 1) == pytest.approx((1 + math.tanh(-0.05)) / 2)


def test_all_identical_layers_count_every_pair():
    assert msrs_of_matrix(np.ones((6, 6))) == pytest.approx(15.0, abs=1e-9)


def test_nan_matrix_is_nan_and_mask_excludes_layer():
    s = np.array([[1.0, np.nan, 0.9], [np.nan, np.nan, np.nan], [0.9, np.nan, 1.0]])
    assert math.isnan(msrs_of_matrix(s))
    assert msrs_of_matrix(s, layer_mask=np.array([True, False, True])) == pytest.approx(pair_scores(0.9, 0.8, 100))


def test_summary_skips_and_counts_nan_batches():
    summary = summarize_batches(np.array([1.0, np.nan, 3.0]))
    assert summary.mean == pytest.approx(2.0)
    assert summary.std == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert summary.nan_batches == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_duplicated_block_raises_msrs(seed):
    base = redaudit.scan(models.residual_cnn(blocks=3, seed=seed), samples=512)
    duplicated = redaudit.scan(models.residual_cnn(blocks=3, seed=seed, duplicate_block=1), samples=512)
    assert len(duplicated.layers) == len(base.layers) + 1
    assert duplicated.msrs > base.msrs + 0.1
    assert (duplicated.msrs_batches > base.msrs_batches).all()


def test_scan_msrs_matches_per_batch_formula():
    result = redaudit.scan(models.residual_cnn(blocks=2), samples=768)
    assert result.batches == 3 and result.msrs_batches.shape == (3,)
    assert result.msrs == pytest.approx(float(np.mean(result.msrs_batches)), abs=1e-12)
