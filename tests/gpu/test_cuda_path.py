"""CUDA + CuPy against CPU + NumPy on the generated test models: the same IRs, the same numbers.
Run on a GPU machine: `pytest tests/gpu` (skipped elsewhere)."""
from __future__ import annotations

import numpy as np
import pytest

import redaudit
from tests import models

SPEC = dict(samples=512, cka_batch=128)


@pytest.mark.parametrize("make", [lambda: models.residual_cnn(blocks=4, size=16), lambda: models.mlp(),
                                  lambda: models.masked_attention_encoder(layers=3)])
def test_cuda_cupy_equals_cpu_numpy(make):
    gpu = redaudit.scan(make(), device="cuda", backend="cupy", **SPEC)
    cpu = redaudit.scan(make(), device="cpu", backend="numpy", **SPEC)
    assert gpu.provider == "CUDAExecutionProvider" and gpu.backend == "cupy"
    assert gpu.layer_names == cpu.layer_names
    np.testing.assert_allclose(gpu.similarity, cpu.similarity, atol=1e-4)
    assert gpu.msrs == pytest.approx(cpu.msrs, abs=1e-3)


def test_io_binding_hands_device_arrays_to_cupy():
    import cupy

    from redaudit.core.prepared import PreparedModel
    from redaudit.core.run import BatchRunner

    prepared = PreparedModel.load(models.residual_cnn(blocks=2), device="cuda")
    selection = prepared.taps("block")
    augmented = prepared.augmented(selection, "pool")
    session, provider = prepared.session(augmented)
    batch = {"input": np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)}
    bound = BatchRunner(session, augmented.fetch_names, device_arrays=cupy).run(batch)
    plain = BatchRunner(session, augmented.fetch_names).run(batch)
    assert provider == "CUDAExecutionProvider"
    assert all(isinstance(out, cupy.ndarray) for out in bound)
    for device_array, host_array in zip(bound, plain):
        np.testing.assert_allclose(cupy.asnumpy(device_array), host_array, atol=1e-5)


def test_numpy_backend_on_a_cuda_session_fetches_to_the_host():
    result = redaudit.scan(models.mlp(), device="cuda", backend="numpy", **SPEC)
    assert result.provider == "CUDAExecutionProvider" and result.backend == "numpy"
