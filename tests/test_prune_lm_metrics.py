"""Next-token agreement, KL and perplexity against a plain, independent computation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from redaudit.prune.activations import _mean_cosine
from redaudit.prune.lm_metrics import (
    NextTokenStats,
    lm_output_index,
    next_token_agreement,
)


def _plain(original, pruned, ids, mask):
    """Position by position in Python floats: softmax, argmax, KL, NLL of the next real token."""
    agree = positions = 0
    kl_total = nll_p = nll_q = 0.0
    scored = 0
    for n in range(original.shape[0]):
        for t in range(original.shape[1]):
            if not mask[n, t]:
                continue
            p = [math.exp(v) for v in original[n, t].tolist()]
            q = [math.exp(v) for v in pruned[n, t].tolist()]
            p = [v / sum(p) for v in p]
            q = [v / sum(q) for v in q]
            positions += 1
            agree += int(max(range(len(p)), key=p.__getitem__) == max(range(len(q)), key=q.__getitem__))
            kl_total += sum(a * math.log(a / b) for a, b in zip(p, q))
            if t + 1 < original.shape[1] and mask[n, t + 1]:
                scored += 1
                nll_p -= math.log(p[ids[n, t + 1]])
                nll_q -= math.log(q[ids[n, t + 1]])
    return agree / positions, kl_total / positions, math.exp(nll_p / scored), math.exp(nll_q / scored)


def _logits(seed: int = 0, shape=(5, 9, 13)):
    rng = np.random.default_rng(seed)
    original = rng.normal(0, 2, shape).astype(np.float32)
    pruned = (original + rng.normal(0, 1.5, shape)).astype(np.float32)  # disagrees at some positions
    ids = rng.integers(0, shape[2], shape[:2])
    mask = np.ones(shape[:2], dtype=np.int64)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    pruned[1, 6:] = rng.normal(0, 9, pruned[1, 6:].shape)  # garbage at padding: must not count
    return original, pruned, ids, mask


def test_metrics_equal_a_plain_computation():
    original, pruned, ids, mask = _logits()
    top1, kl, ppl_original, ppl_pruned = _plain(original, pruned, ids, mask)
    got = next_token_agreement(original, pruned, ids, mask)
    assert 0.2 < top1 < 0.95  # the case really has disagreements
    assert got.top1_agreement == pytest.approx(top1, abs=1e-12)
    assert got.kl_mean == pytest.approx(kl, rel=1e-9)
    assert got.perplexity_original == pytest.approx(ppl_original, rel=1e-9)
    assert got.perplexity_pruned == pytest.approx(ppl_pruned, rel=1e-9)
    assert got.positions == int(mask.sum())


def test_streamed_chunks_equal_one_pass():
    original, pruned, ids, mask = _logits(seed=3)
    stats = NextTokenStats()
    for start in range(0, 5, 2):
        rows = slice(start, start + 2)
        stats.update(original[rows], pruned[rows], ids[rows], mask[rows])
    whole, streamed = next_token_agreement(original, pruned, ids, mask).to_dict(), stats.result("logits", True).to_dict()
    assert streamed.pop("output") == whole.pop("output")
    assert streamed == pytest.approx(whole, rel=1e-12)


def test_identical_models_agree_fully():
    original, _, ids, mask = _logits()
    same = next_token_agreement(original, original.copy(), ids, mask)
    assert same.top1_agreement == 1.0 and same.kl_mean == pytest.approx(0.0, abs=1e-12)
    assert same.perplexity_ratio == pytest.approx(1.0)


def test_synthetic_ids_report_no_perplexity():
    original, pruned, ids, mask = _logits()
    got = next_token_agreement(original, pruned, ids, mask, real_ids=False)
    assert got.perplexity_original is None and got.perplexity_pruned is None and got.perplexity_ratio is None
    assert got.top1_agreement == next_token_agreement(original, pruned, ids, mask).top1_agreement


def test_a_mask_covering_a_past_uses_its_last_entries():
    original, pruned, ids, mask = _logits()
    with_past = np.concatenate([np.ones((5, 4), np.int64), mask], axis=1)
    assert next_token_agreement(original, pruned, ids, with_past) == next_token_agreement(original, pruned, ids, mask)


def test_lm_output_is_recognised_by_name_and_shape():
    ids = np.zeros((2, 7), np.int64)
    assert lm_output_index(["logits"], ids, [np.zeros((2, 7, 11))]) == 0
    assert lm_output_index(["logits"], ids, [np.zeros((2, 11))]) is None
    assert lm_output_index(["scores"], ids, [np.zeros((2, 7, 11))]) is None
    assert lm_output_index(["logits"], None, [np.zeros((2, 7, 11))]) is None


def test_block_cosine_leaves_padding_tokens_out():
    rng = np.random.default_rng(0)
    first = rng.normal(size=(3, 5, 4))
    second = first + 0.1 * rng.normal(size=(3, 5, 4))
    mask = np.ones((3, 5), np.int64)
    mask[0, 3:] = 0
    second_padded = second.copy()
    second_padded[0, 3:] = -first[0, 3:]  # cosine -1 at padding
    total, count = _mean_cosine(first, second_padded, mask)
    real = mask.reshape(-1) != 0
    a, b = first.reshape(-1, 4)[real], second.reshape(-1, 4)[real]
    expected = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert count == int(mask.sum())
    assert total / count == pytest.approx(float(expected.mean()), rel=1e-12)
