"""Array-module choice: CuPy when a CUDA GPU is usable, NumPy otherwise.

The CKA code is written once against ``xp``; this module decides which ``xp`` and moves
results back to NumPy for reporting.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from redaudit.errors import BackendUnavailableError, ConfigError

BACKENDS = ("auto", "numpy", "cupy")

#: Environment variables through which a user sets the BLAS thread count themselves.
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


@dataclass(frozen=True)
class ArrayBackend:
    name: str
    xp: Any

    def to_numpy(self, array: Any) -> np.ndarray:
        if self.name == "cupy":
            return self.xp.asnumpy(array)
        return np.asarray(array)


@contextlib.contextmanager
def blas_beside_cpu_inference(backend: ArrayBackend, runtime_on_cpu: bool) -> Iterator[None]:
    """One BLAS thread for the NumPy CKA math while onnxruntime runs on the CPU beside it.

    A scan's similarity math (one batch's Grams) runs while onnxruntime computes the next batch
    with its own pool, which already holds every core by default. A multi-threaded BLAS beside it
    oversubscribes the cores and its idle threads spin: on 2 cores with other work running, a
    flattened scan took 69 s wall with OpenBLAS's default 2 threads and 9.8 s with one (issue 27;
    scikit-learn's KMeans caps BLAS around its own threads for the same reason). The cap is
    scoped to the scan's streaming loop (threadpoolctl restores the count after) and is skipped
    when the user chose a count (``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OMP_NUM_THREADS``;
    the CLI sets the first to 1 by default), when the math runs on CuPy, and when onnxruntime
    runs on a GPU (the CPU cores are then the BLAS's alone).
    """
    if backend.name != "numpy" or not runtime_on_cpu or any(os.environ.get(v) for v in _BLAS_THREAD_VARIABLES):
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _cupy_or_reason() -> tuple[Any | None, str]:
    try:
        import cupy  # type: ignore[import-not-found]
    except Exception as error:  # noqa: BLE001 - any import failure means "not usable"
        return None, f"CuPy is not installed ({type(error).__name__}); install redaudit[gpu]"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "CuPy found no CUDA device"
        cupy.zeros(1).sum()  # forces context creation: catches driver/runtime mismatches
    except Exception as error:  # noqa: BLE001
        return None, f"CuPy cannot use the GPU: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    return cupy, ""


def select_backend(requested: str = "auto") -> ArrayBackend:
    """``auto`` falls back to NumPy silently; an explicit ``cupy`` that cannot run is an error."""
    if requested not in BACKENDS:
        raise ConfigError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if requested == "numpy":
        return ArrayBackend("numpy", np)
    cupy, reason = _cupy_or_reason()
    if cupy is not None:
        return ArrayBackend("cupy", cupy)
    if requested == "cupy":
        raise BackendUnavailableError(f"--backend cupy requested but {reason}")
    return ArrayBackend("numpy", np)
