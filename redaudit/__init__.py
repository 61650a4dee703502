"""redaudit: measure structural redundancy (RedTest / MSRS) in any ONNX model."""
from __future__ import annotations

from redaudit.errors import RedauditError
from redaudit.core.result import LayerInfo, ModelInfo, ScanConfig, ScanResult

__version__ = "0.1.0"

__all__ = ["scan", "ScanResult", "ScanConfig", "LayerInfo", "ModelInfo", "RedauditError", "__version__"]


def scan(path, **options):  # noqa: D401 - thin re-export, imported lazily to keep import light
    """Scan an ONNX model; see :func:`redaudit.core.engine.scan_model` for the options."""
    from redaudit.core.engine import scan_model

    return scan_model(path, **options)
