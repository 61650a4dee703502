"""Array-module choice: CuPy when a CUDA GPU is usable, NumPy otherwise.

The CKA code is written once against ``xp``; this module decides which ``xp`` and moves
results back to NumPy for reporting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from redaudit.errors import BackendUnavailableError, ConfigError

BACKENDS = ("auto", "numpy", "cupy")


@dataclass(frozen=True)
class ArrayBackend:
    name: str
    xp: Any

    def to_numpy(self, array: Any) -> np.ndarray:
        if self.name == "cupy":
            return self.xp.asnumpy(array)
        return np.asarray(array)


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
