"""Datasets for the NAS: scikit-learn's bundled digits by default, or a user's ``.npz``.

Inputs are validated once here, at the edge, so training and scanning can trust shapes:
``x`` float32 with samples on the first axis, ``y`` int64 class indices 0..K-1. The
train/validation/test split is stratified and seeded, so every worker of a study (on any
machine) sees the same split; the fingerprint ties a study to its data.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from redaudit.errors import RedauditError


class NasDataError(RedauditError):
    """The dataset file is missing or its arrays have the wrong shapes, types or labels."""


@dataclass(frozen=True)
class Split:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Dataset:
    """Seeded split of one dataset. ``sample_shape`` excludes the batch axis."""

    name: str
    train: Split
    validation: Split
    test: Split
    classes: int
    fingerprint: str  # sha256 of the arrays and split seed: workers must agree on it

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (1,797 images, no download), scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise NasDataError("the digits dataset needs scikit-learn: pip install 'redaudit[nas]'") from None
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    return x, bunch.target.astype(np.int64)


def load_npz_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` (N, ...) and ``y`` (N,) from an ``.npz``; ``allow_pickle`` stays off."""
    file = Path(path)
    try:
        with np.load(file, allow_pickle=False) as archive:
            missing = [key for key in ("x", "y") if key not in archive.files]
            if missing:
                raise NasDataError(f"{file}: missing array(s) {missing}; save with np.savez(path, x=..., y=...)")
            x, y = archive["x"], archive["y"]
    except FileNotFoundError:
        raise NasDataError(f"data file not found: {file}") from None
    except (ValueError, OSError) as exc:
        raise NasDataError(f"{file} is not a readable .npz without pickled objects: {exc}") from None
    return validate_arrays(x, y, source=str(file))


def validate_arrays(x: np.ndarray, y: np.ndarray, source: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Check and normalise ``x`` to float32 (N, C, H, W) or (N, D) and ``y`` to int64 0..K-1."""
    if not np.issubdtype(x.dtype, np.number) or x.dtype.kind == "c":
        raise NasDataError(f"{source}: x must be a real numeric array, got dtype {x.dtype}")
    if x.ndim == 3:  # (N, H, W) greyscale images: add the channel axis
        x = x[:, None, :, :]
    if x.ndim not in (2, 4):
        raise NasDataError(f"{source}: x must be (N, D), (N, H, W) or (N, C, H, W), got shape {x.shape}")
    if y.ndim != 1:
        raise NasDataError(f"{source}: y must be 1-D class labels (N,), got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise NasDataError(f"{source}: x has {x.shape[0]} samples but y has {y.shape[0]} labels")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise NasDataError(f"{source}: y must hold integer class labels, got dtype {y.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise NasDataError(f"{source}: x contains NaN or Inf values")
    y = y.astype(np.int64, copy=False)
    if y.size and (y.min() < 0):
        raise NasDataError(f"{source}: labels must be 0..K-1, found negative label {int(y.min())}")
    classes = np.unique(y)
    if classes.size < 2:
        raise NasDataError(f"{source}: need at least 2 classes, found {classes.size}")
    if not np.array_equal(classes, np.arange(classes.size)):
        raise NasDataError(f"{source}: labels must be 0..K-1 with every class present, found {classes.tolist()[:10]}")
    counts = np.bincount(y)
    if counts.min() < 3:
        raise NasDataError(f"{source}: every class needs at least 3 samples for a train/validation/test split, "
                           f"class {int(counts.argmin())} has {int(counts.min())}")
    return x, y


def split_dataset(x: np.ndarray, y: np.ndarray, *, name: str, seed: int = 0,
                  validation: float = 0.2, test: float = 0.2) -> Dataset:
    """Stratified, seeded train/validation/test split (default 60/20/20)."""
    if not (0 < validation < 1 and 0 < test < 1 and validation + test < 1):
        raise NasDataError("validation and test fractions must be in (0, 1) and sum to less than 1")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for label in range(int(y.max()) + 1):
        members = rng.permutation(np.flatnonzero(y == label))
        n_val = max(1, int(round(validation * members.size)))
        n_test = max(1, int(round(test * members.size)))
        parts["validation"].append(members[:n_val])
        parts["test"].append(members[n_val:n_val + n_test])
        parts["train"].append(members[n_val + n_test:])
    splits = {key: np.sort(np.concatenate(value)) for key, value in parts.items()}
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    digest.update(f"{x.shape}|{seed}|{validation}|{test}".encode())
    return Dataset(name=name, classes=int(y.max()) + 1, fingerprint=digest.hexdigest(),
                   **{key: Split(x[idx], y[idx]) for key, idx in splits.items()})


def load_dataset(path: str | Path | None = None, *, seed: int = 0) -> Dataset:
    """Digits when ``path`` is None, else the user's ``.npz``; always the same split for a seed."""
    if path is None:
        x, y = load_digits_arrays()
        return split_dataset(x, y, name="digits", seed=seed)
    x, y = load_npz_arrays(path)
    return split_dataset(x, y, name=Path(path).name, seed=seed)
