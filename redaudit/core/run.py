"""onnxruntime sessions and batched execution: the one place that chooses a device.

Scan, prune verification, healing calibration and nas latency all build sessions through a
:class:`SessionFactory`, so ``--device`` means the same everywhere, and all run batches through
:class:`BatchRunner`, which splits a batch into chunks the model accepts (a fixed batch axis of
3 runs a batch of 256 as 85 chunks of 3 and one of 1 — exactly, whatever the CKA batch is).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from redaudit.core.kv_layout import stacked_past
from redaudit.core.spec import DEVICES
from redaudit.errors import BackendUnavailableError, ConfigError, InferenceError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass(frozen=True)
class SessionFactory:
    """How sessions are made: device (``auto``/``cpu``/``cuda``), threads, and ``folder``, where
    the tensors a graph references as external data live (the model's folder). ``auto`` uses
    CUDA when onnxruntime has it and falls back to CPU; an explicit ``cuda`` that cannot run
    is an error, never a silent CPU run.

    A session is made from the serialised graph — weightless when the weights are external: a
    few hundred KB for a 2.5 GB decoder — and onnxruntime reads the external tensors itself from
    ``folder`` (its ``session.model_external_initializers_file_folder_path`` entry), so every
    augmented or pruned copy of a graph shares the one copy of the weights on disk."""

    device: str = "auto"
    threads: int | None = None
    folder: str | None = None

    def providers(self) -> list[str]:
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        available = ort.get_available_providers()
        if self.device == "cuda" and CUDA not in available:
            raise BackendUnavailableError(
                "--device cuda requested but onnxruntime has no CUDAExecutionProvider here; "
                "install the GPU build on a machine with a CUDA GPU (`make gpu`; README, Install) "
                "(check with `redaudit doctor`), or use --device cpu")
        if self.device in ("cuda", "auto") and CUDA in available:
            return [CUDA, CPU]
        return [CPU]

    def create(self, model: onnx.ModelProto | bytes, what: str = "the model") -> tuple[ort.InferenceSession, str]:
        """A session for ``model`` (a proto or its serialised bytes; external tensors resolve in
        ``folder``) and the provider it uses."""
        providers = self.providers()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 4  # fatal only: its warnings and error lines (a failed run is raised
        # as an exception too) would break the one-line contract
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: a scan runs the CKA math beside
        # onnxruntime (engine.py), and a spinning pool thread takes its core. Vs_peers CNN,
        # flattened, L = 45 on 2 shared cores: 15.3 s vs 21.6 s (issue 27; docs/performance.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.folder is not None:
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", self.folder)
        data = model if isinstance(model, bytes) else model.SerializeToString()
        try:
            session = ort.InferenceSession(data, options, providers=providers)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own pybind error types
            raise InferenceError(f"onnxruntime cannot load {what}: {first_line(error)}") from None
        used = session.get_providers()[0] if session.get_providers() else providers[0]
        if self.device == "cuda" and used != CUDA:
            raise BackendUnavailableError(_cuda_fallback_reason())
        return session, used


def _cuda_fallback_reason() -> str:
    """One line naming why onnxruntime fell back to the CPU, e.g. the CUDA library it lacks."""
    from redaudit.core.doctor import _cuda_provider_library, hint_for, missing_libraries

    library = _cuda_provider_library()
    missing = missing_libraries(library) if library else []
    if missing:
        return (f"--device cuda: onnxruntime's CUDA provider cannot load {missing[0]}; "
                f"{hint_for(missing[0])} (run `redaudit doctor` for the full list)")
    return "--device cuda: onnxruntime could not start its CUDA provider; run `redaudit doctor`, or use --device cpu"


def choose_providers(device: str) -> list[str]:
    """Providers for ``device`` (kept for callers that only need the list)."""
    return SessionFactory(device).providers()


def create_session(model: onnx.ModelProto, device: str = "auto",
                   threads: int | None = None) -> tuple[ort.InferenceSession, str]:
    return SessionFactory(device, threads).create(model)


_ORT_ELEM_TYPES = {"tensor(float)": onnx.TensorProto.FLOAT, "tensor(float16)": onnx.TensorProto.FLOAT16,
                   "tensor(bfloat16)": onnx.TensorProto.BFLOAT16}


def _batch_axis(arg: ort.NodeArg) -> int:
    """Where a session input holds the samples: axis 1 of a legacy stacked past (2, batch, …)."""
    return 1 if stacked_past(arg.name, _ORT_ELEM_TYPES.get(arg.type, 0), arg.shape or ()) else 0


def fixed_batch_of(session: ort.InferenceSession) -> int | None:
    """The smallest fixed batch size among the session's inputs, if any (None = dynamic)."""
    sizes = {shape[axis] for shape, axis in ((i.shape, _batch_axis(i)) for i in session.get_inputs())
             if shape and isinstance(shape[axis], int) and shape[axis] > 0}
    return min(sizes) if sizes else None


def session_feed(session: ort.InferenceSession, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of ``batch`` that ``session`` takes, in the layout its graph declares.

    A pruned decoder takes fewer cache inputs than the original's probe holds: only what the
    session takes is fed. redaudit holds every input samples-first (slicing, chunking, hashing
    and padding all cut axis 0); a legacy stacked past, (2, batch, heads, past, head_dim) in the
    graph, gets its samples moved back to axis 1 here, the one place arrays meet a session."""
    feed = {}
    for arg in session.get_inputs():
        if arg.name in batch:
            array = batch[arg.name]
            feed[arg.name] = np.ascontiguousarray(np.swapaxes(array, 0, 1)) if _batch_axis(arg) else array
    return feed


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def ortvalue_to_cupy(value: ort.OrtValue, cupy: Any) -> Any:
    """A CuPy array over an OrtValue's CUDA memory, without a copy (this onnxruntime build has
    no ``to_dlpack``). The array keeps the OrtValue alive through UnownedMemory's owner."""
    dtype = np.dtype(_ORT_DTYPES[value.data_type()])
    memory = cupy.cuda.UnownedMemory(value.data_ptr(), value.tensor_size_in_bytes(), value)
    return cupy.ndarray(tuple(value.shape()), dtype, cupy.cuda.MemoryPointer(memory, 0))


def _concatenate(pieces: list[Any], device_arrays: Any) -> Any:
    """Join chunks along the sample axis where they live: CuPy IRs on the GPU, host arrays
    (shape outputs, CPU runs) with NumPy."""
    if device_arrays is not None and not isinstance(pieces[0], np.ndarray):
        return device_arrays.concatenate(pieces)
    return np.concatenate(pieces)


@dataclass
class BatchRunner:
    """Runs batches (``fetch_names``; None = every output), split into chunks when the model's
    batch axis is fixed or when ``chunk`` caps the size of one onnxruntime call.

    With ``device_arrays`` (the CuPy module) on a CUDA session, inputs are bound once per
    batch and outputs are allocated on the GPU by onnxruntime (I/O binding) and handed to CuPy
    without a copy, so IRs never cross to the host.

    ``before_run`` is called before every onnxruntime call (each chunk): a scan's cancel poll,
    which raises to stop. A CKA batch of 256 on a large model is many chunks and minutes of work;
    polled only between batches, a cancel or an interrupt would wait for all of them.
    ``after_run`` is called after each call with its number of samples: the scan's progress.
    Both run on the thread that calls :meth:`run`.
    """

    session: ort.InferenceSession
    fetch_names: Sequence[str] | None = None
    chunk: int | None = None
    device_arrays: Any = None
    before_run: Callable[[], None] | None = None
    after_run: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        fixed = fixed_batch_of(self.session)
        if fixed is not None:
            self.chunk = fixed if self.chunk is None else min(self.chunk, fixed)

    def run(self, batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        count = next(iter(batch.values())).shape[0]
        if not self.chunk or self.chunk >= count:
            return self._run_once(batch)
        parts = [self._run_once({k: v[start:start + self.chunk] for k, v in batch.items()})
                 for start in range(0, count, self.chunk)]
        return [_concatenate([part[i] for part in parts], self.device_arrays) for i in range(len(parts[0]))]

    def _run_once(self, batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if self.before_run is not None:
            self.before_run()
        count = next(iter(batch.values())).shape[0]
        fixed = fixed_batch_of(self.session)
        if fixed is not None and count < fixed:  # the last partial chunk: pad, run, cut
            padded = {k: np.concatenate([v, np.repeat(v[-1:], fixed - count, axis=0)]) for k, v in batch.items()}
            outputs = [out[:count] for out in self._call(padded)]
        else:
            outputs = self._call(batch)
        if self.after_run is not None:
            self.after_run(count)
        return outputs

    def _call(self, batch: Mapping[str, np.ndarray]) -> list[Any]:
        batch = session_feed(self.session, batch)
        try:
            if self.device_arrays is not None:
                return self._call_bound(batch)
            return self.session.run(list(self.fetch_names) if self.fetch_names is not None else None, dict(batch))
        except Exception as error:  # noqa: BLE001
            raise InferenceError(f"onnxruntime failed while running the model: {first_line(error)}") from None

    def _call_bound(self, batch: Mapping[str, np.ndarray]) -> list[Any]:
        binding = self.session.io_binding()
        for name, array in batch.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        types = {output.name: output.type for output in self.session.get_outputs()}
        names = self.fetch_names if self.fetch_names is not None else list(types)
        on_device = [types.get(name) in _ORT_DTYPES for name in names]  # float IRs; shapes stay on the host
        for name, device in zip(names, on_device):
            binding.bind_output(name, "cuda" if device else "cpu", 0)
        self.session.run_with_iobinding(binding)
        return [ortvalue_to_cupy(value, self.device_arrays) if device else value.numpy()
                for value, device in zip(binding.get_outputs(), on_device)]

    def run_all(self, arrays: Mapping[str, np.ndarray], chunk: int = 256) -> list[np.ndarray]:
        """Every output for every sample of ``arrays``, in chunks of at most ``chunk``."""
        count = next(iter(arrays.values())).shape[0]
        parts = [self.run({k: v[start:start + chunk] for k, v in arrays.items()}) for start in range(0, count, chunk)]
        return [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))]
