"""onnxruntime session for the augmented model: provider choice and batched execution."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from redaudit.errors import BackendUnavailableError, ConfigError, InferenceError

DEVICES = ("auto", "cpu", "cuda")


def choose_providers(device: str) -> list[str]:
    """CUDA first when asked for (or available under ``auto``), CPU always as the fallback."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise BackendUnavailableError(
            "--device cuda requested but onnxruntime has no CUDAExecutionProvider here; "
            "install redaudit[gpu] (onnxruntime-gpu) on a machine with a CUDA GPU, or use --device cpu")
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def create_session(model: onnx.ModelProto, device: str = "auto",
                   threads: int | None = None) -> tuple[ort.InferenceSession, str]:
    """Build a session from an in-memory model; returns it and the provider actually used."""
    providers = choose_providers(device)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own pybind error types
        raise InferenceError(f"onnxruntime cannot load the model: {_first_line(error)}") from None
    used = session.get_providers()[0] if session.get_providers() else providers[0]
    return session, used


@dataclass
class BatchRunner:
    """Runs batches, splitting them into chunks when the model's batch axis is fixed."""

    session: ort.InferenceSession
    fetch_names: list[str]
    chunk: int | None = None  # the model's fixed batch size, if any

    def run(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        count = next(iter(batch.values())).shape[0]
        if not self.chunk or self.chunk >= count:
            return self._run_once(batch)
        parts: list[list[np.ndarray]] = []
        for start in range(0, count, self.chunk):
            parts.append(self._run_once({k: v[start:start + self.chunk] for k, v in batch.items()}))
        return [np.concatenate([part[i] for part in parts]) for i in range(len(self.fetch_names))]

    def _run_once(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(self.fetch_names, batch)
        except Exception as error:  # noqa: BLE001
            raise InferenceError(f"onnxruntime failed while running the model: {_first_line(error)}") from None
