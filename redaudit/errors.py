"""One exception family for everything a user can fix.

The CLI catches :class:`RedauditError`, prints ``str(error)`` as one line and exits with
``error.exit_code``. Anything else is a programming error and keeps its traceback.
"""
from __future__ import annotations


class RedauditError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""

    exit_code = 2


class ModelLoadError(RedauditError):
    """The model file is missing, corrupt, unsafe or rejected by the ONNX checker."""


class UnsafeModelError(ModelLoadError):
    """The model points outside its own folder or is larger than the configured limit."""


class TapError(RedauditError):
    """No usable intermediate representation could be tapped (or a requested one is invalid)."""


class ProbeInputError(RedauditError):
    """Probe inputs cannot be read or do not match the model's inputs."""


class ConfigError(RedauditError):
    """An option value is out of range or inconsistent with the others."""


class BackendUnavailableError(RedauditError):
    """A device or array backend was requested explicitly but cannot be used here."""


class InferenceError(RedauditError):
    """onnxruntime could not build a session for, or run, the (augmented) model."""


class ScanCancelled(RedauditError):
    """The caller's cancel hook asked a running scan to stop (a service job was cancelled)."""

    exit_code = 130
