from __future__ import annotations

import numpy as np
import pytest

from redaudit.nas.data import NasDataError, load_dataset, load_npz_arrays, split_dataset


def test_digits_split_is_seeded_stratified_and_disjoint():
    first = load_dataset(None, seed=0)
    again = load_dataset(None, seed=0)
    other = load_dataset(None, seed=1)
    assert first.name == "digits" and first.classes == 10 and first.sample_shape == (1, 8, 8)
    sizes = (len(first.train), len(first.validation), len(first.test))
    assert sum(sizes) == 1797 and 350 <= sizes[1] <= 370 and 350 <= sizes[2] <= 370
    assert first.fingerprint == again.fingerprint != other.fingerprint
    np.testing.assert_array_equal(first.validation.x, again.validation.x)
    assert not np.array_equal(first.validation.y, other.validation.y)
    # every class is represented in every split in about the same proportion
    for split in (first.train, first.validation, first.test):
        share = np.bincount(split.y, minlength=10) / len(split)
        assert share.min() > 0.07 and share.max() < 0.13
    assert first.train.x.dtype == np.float32 and first.train.x.max() <= 1.0


def test_user_npz_images_get_a_channel_axis(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6, 6)).astype(np.float64)
    y = np.repeat(np.arange(3), 20).astype(np.float32)  # integer-valued floats are accepted
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_dataset(tmp_path / "d.npz", seed=3)
    assert data.sample_shape == (1, 6, 6) and data.classes == 3 and data.train.y.dtype == np.int64
    assert len(data.train) + len(data.validation) + len(data.test) == 60


@pytest.mark.parametrize("arrays, fragment", [
    ({"x": np.zeros((10, 4))}, "missing array"),
    ({"x": np.zeros(10), "y": np.zeros(10)}, "x must be"),
    ({"x": np.zeros((10, 4)), "y": np.zeros(9)}, "10 samples but y has 9"),
    ({"x": np.zeros((10, 4)), "y": np.zeros((10, 2))}, "1-D"),
    ({"x": np.zeros((10, 4)), "y": np.linspace(0, 1, 10)}, "integer class labels"),
    ({"x": np.zeros((12, 4)), "y": np.array([0, 2] * 6)}, "0..K-1"),
    ({"x": np.zeros((12, 4)), "y": np.array([-1, 0] * 6)}, "negative"),
    ({"x": np.zeros((12, 4)), "y": np.zeros(12)}, "at least 2 classes"),
    ({"x": np.zeros((7, 4)), "y": np.array([0, 0, 0, 0, 0, 1, 1])}, "at least 3 samples"),
    ({"x": np.full((12, 4), np.nan), "y": np.array([0, 1] * 6)}, "NaN"),
    ({"x": np.array(["a"] * 12), "y": np.array([0, 1] * 6)}, "numeric"),
])
def test_bad_data_files_are_rejected_with_one_line(tmp_path, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(NasDataError) as info:
        load_npz_arrays(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_pickled_objects_and_missing_files_are_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}] * 6, dtype=object), y=np.array([0, 1] * 3))
    with pytest.raises(NasDataError, match="pickled"):
        load_npz_arrays(path)
    with pytest.raises(NasDataError, match="not found"):
        load_npz_arrays(tmp_path / "missing.npz")


def test_split_fractions_are_validated():
    x, y = np.zeros((30, 2), np.float32), np.repeat(np.arange(3), 10)
    with pytest.raises(NasDataError, match="fractions"):
        split_dataset(x, y, name="t", validation=0.6, test=0.5)
