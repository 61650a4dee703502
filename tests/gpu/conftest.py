"""GPU tests run only where onnxruntime has a usable CUDA provider and CuPy sees a device;
elsewhere (CI, 2-core CPU machines) they are skipped with the reason."""
from __future__ import annotations

import pytest


def _cuda_reason() -> str | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider here (install redaudit[gpu] on a CUDA machine)"
    try:
        import cupy  # noqa: F401

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no CUDA device"
    except Exception as error:  # noqa: BLE001
        return f"CuPy is not usable: {type(error).__name__}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _cuda_reason()
    if reason is None:
        return
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.skip(reason=reason))
