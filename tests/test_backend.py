"""Backend choice and the device-independent similarity path (CPU tests cover the CuPy logic)."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from redaudit.core.backend import ArrayBackend, select_backend
from redaudit.errors import BackendUnavailableError, ConfigError
from redaudit.core.similarity import SimilarityAccumulator


def _fake_cupy() -> types.ModuleType:
    """A stand-in exposing NumPy under CuPy's API surface (asnumpy, cuda.runtime)."""
    module = types.ModuleType("cupy")
    for name in dir(np):
        if not name.startswith("_"):
            setattr(module, name, getattr(np, name))
    module.asnumpy = lambda array: np.array(array, copy=True)
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    return module


def test_auto_falls_back_to_numpy_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy → ImportError
    assert select_backend("auto").name == "numpy"
    with pytest.raises(BackendUnavailableError, match="CuPy is not installed"):
        select_backend("cupy")


def test_auto_picks_cupy_when_a_device_is_usable(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    assert select_backend("auto").name == "cupy"


def test_cupy_without_device_is_refused(monkeypatch):
    fake = _fake_cupy()
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert select_backend("auto").name == "numpy"
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        select_backend("cupy")


def test_unknown_backend():
    with pytest.raises(ConfigError):
        select_backend("jax")


def test_accumulator_same_numbers_through_cupy_api():
    rng = np.random.default_rng(0)
    batches = [[rng.normal(size=(32, d)).astype(np.float32) for d in (4, 9, 16)] for _ in range(3)]
    results = []
    for backend in (ArrayBackend("numpy", np), ArrayBackend("cupy", _fake_cupy())):
        accumulator = SimilarityAccumulator(3, backend)
        for features in batches:
            accumulator.add_batch(features)
        results.append(accumulator.finish(0.8, 100.0))
    np.testing.assert_array_equal(results[0].similarity, results[1].similarity)
    np.testing.assert_array_equal(results[0].msrs.per_batch, results[1].msrs.per_batch)
