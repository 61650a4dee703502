"""verify.compare_outputs works through chunks of samples and equals the whole-array formulas."""
from __future__ import annotations

import numpy as np
import pytest

from redaudit.prune.verify import compare_outputs


def whole(ref: np.ndarray, new: np.ndarray) -> dict[str, float]:
    """The formulas on whole float64 arrays (what compare_outputs computed before chunking)."""
    ref64, new64 = ref.astype(np.float64).reshape(len(ref), -1), new.astype(np.float64).reshape(len(new), -1)
    diff = new64 - ref64
    lengths = np.linalg.norm(ref64, axis=1) * np.linalg.norm(new64, axis=1)
    cosine = np.where(lengths > 0, np.einsum("ij,ij->i", ref64, new64) / np.where(lengths > 0, lengths, 1.0),
                      np.where(np.abs(diff).max(axis=1) == 0, 1.0, 0.0))
    return {"max_abs_error": float(np.abs(diff).max()), "relative_error": float(np.linalg.norm(diff) / np.linalg.norm(ref64)),
            "cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min())}


@pytest.mark.parametrize("chunk", [1, 5, 16, 1000])
@pytest.mark.parametrize("shape", [(37, 6), (37, 4, 5)])
def test_chunked_agreement_equals_the_whole_array_formulas(chunk, shape):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=shape).astype(np.float32)
    new = (ref + rng.normal(0, 0.3, size=shape)).astype(np.float32)
    ref[3] = 0  # a zero reference row: cosine 0 unless unchanged
    new[7] = ref[7]
    ref[9], new[9] = 0, 0  # both zero: unchanged, cosine 1
    (agreement,) = compare_outputs(["y"], [ref], [new], chunk=chunk)
    expected = whole(ref, new)
    for key, value in expected.items():
        assert getattr(agreement, key) == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert (agreement.top1_agreement is None) == (len(shape) != 2)
