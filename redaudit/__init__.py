"""redaudit: measure structural redundancy (RedTest / MSRS) in any ONNX model.

The public API is small: :func:`scan` (a path, an in-memory ModelProto or a
:class:`~redaudit.core.prepared.PreparedModel`, described by a :class:`ScanSpec` or keyword
options), its :class:`ScanResult`, and :class:`RedauditError` for everything a user can fix.
"""
from __future__ import annotations

import os
import signal as _signal
import sys as _sys

# When this process is the `redaudit` command (the console script, or `python -m
# redaudit.cli.main`), Ctrl-C and SIGTERM are held pending from this first line of ours until the
# CLI's handler is in place (redaudit.cli.main.main releases them): a signal during the start-up
# imports then ends the command with its one line instead of a KeyboardInterrupt traceback. As a
# library (any other program importing redaudit), nothing here touches the process.
# (A multiprocessing child inherits the parent's argv but never runs main(): left alone.)
if (os.path.basename(_sys.argv[0] if _sys.argv else "") == "redaudit"
        or "redaudit.cli.main" in getattr(_sys, "orig_argv", ())[:4]) and "multiprocessing" not in _sys.modules:
    _signal.pthread_sigmask(_signal.SIG_BLOCK, (_signal.SIGINT, _signal.SIGTERM))

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from redaudit.core.spec import ScanConfig, ScanSpec
from redaudit.core.version import __version__
from redaudit.errors import RedauditError, ScanCancelled

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from redaudit.core.result import LayerInfo, ModelInfo, ScanResult

    from redaudit.core.progress import ScanProgress
    from redaudit.core.prepared import PreparedModel

__all__ = ["scan", "prepare", "ScanSpec", "ScanResult", "ScanConfig", "LayerInfo", "ModelInfo", "RedauditError",
           "ScanCancelled", "__version__"]


_LAZY = {"LayerInfo", "ModelInfo", "ScanResult"}


def __getattr__(name: str) -> Any:
    """The result types import numpy; loading them on first use keeps ``import redaudit`` (and
    so the CLI's start, before its Ctrl-C handler is in place) light."""
    if name in _LAZY:
        from redaudit.core import result

        return getattr(result, name)
    raise AttributeError(f"module 'redaudit' has no attribute {name!r}")


def spec_from_options(spec: ScanSpec | None = None, inputs: Any = None, **options: Any) -> tuple[ScanSpec, Any]:
    """(spec, in-memory arrays or None): keyword options applied over ``spec`` (or the
    defaults); ``inputs`` may be an .npz path (kept in the spec) or arrays by input name."""
    arrays = None
    if inputs is not None and not isinstance(inputs, (str, os.PathLike)):
        arrays = inputs
    elif inputs is not None:
        options["inputs"] = os.fspath(inputs)
    base = spec or ScanSpec()
    return (base.with_options(**options) if options else base), arrays


def prepare(model: "str | os.PathLike[str] | onnx.ModelProto", *, max_model_bytes: int | None = None,
            device: str = "auto") -> "PreparedModel":
    """Load, check and index a model once, to scan it several times."""
    from redaudit.core.prepared import PreparedModel

    return PreparedModel.load(model, max_model_bytes=max_model_bytes, device=device)


def scan(model: "str | os.PathLike[str] | onnx.ModelProto | PreparedModel", spec: ScanSpec | None = None, *,
         inputs: "str | os.PathLike[str] | Mapping[str, np.ndarray] | None" = None,
         progress: "Callable[[ScanProgress], None] | None" = None,
         cancel: Callable[[], bool] | None = None, **options: Any) -> ScanResult:
    """Measure layer similarity (CKA) and MSRS of an ONNX model.

    ``spec`` (or keyword options naming its fields: level, taps, samples, cka_batch, epsilon,
    beta, device, ...) says how; defaults follow the RedTest reference code. ``progress``
    receives a :class:`~redaudit.core.progress.ScanProgress` per stage and batch; ``cancel`` is
    polled between batches. Raises :class:`RedauditError` subclasses for user errors.
    """
    from redaudit.core.engine import scan_prepared
    from redaudit.core.progress import notify

    spec, arrays = spec_from_options(spec, inputs, **options)
    import time

    notify(progress, "load")
    started = time.perf_counter()
    prepared = prepare(model, max_model_bytes=spec.max_model_bytes, device=spec.device)
    loaded = time.perf_counter() - started
    result = scan_prepared(prepared, spec, inputs=arrays, progress=progress, cancel=cancel)
    result.timings = {"load_s": loaded, **result.timings, "total_s": result.timings["total_s"] + loaded}
    return result
