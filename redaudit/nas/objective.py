"""Score one candidate: train for the budget, export to ONNX, scan it, measure its cost.

The scan is the same ``redaudit.scan`` users run on their own models, on the exported file,
with the validation inputs as probe data (never the test split, which only reports). IRs are
the stem output plus every block output (explicit taps), for residual and plain candidates
alike, so MSRS counts the same kind of layer pair across the whole search space.

Probe batching: digits gives 359 validation samples. The paper's 256-sample batches would
leave one batch and drop 103 samples, so the default splits the validation set into
``scan_batches = 2`` equal batches (179 each, at most one sample dropped): every probe
sample counts and MSRS gets a spread from two batches.
"""
from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from redaudit.core.spec import DEFAULT_BETA, DEFAULT_EPSILON
from redaudit.errors import RedauditError
from redaudit.nas.data import Dataset
from redaudit.nas.export import INPUT_NAME, ExportedModel, export_candidate, max_output_difference
from redaudit.nas.metrics import cost_figures
from redaudit.nas.space import Architecture, TrainSettings
from redaudit.nas.train import Progress, accuracy, train_candidate


@dataclass(frozen=True)
class ScanSettings:
    """How candidates are scanned; ``epsilon``/``beta`` are the paper's MSRS defaults."""

    scan_batches: int = 2
    epsilon: float = DEFAULT_EPSILON
    beta: float = DEFAULT_BETA
    estimator: str = "unbiased"

    def cka_batch(self, samples: int) -> int:
        size = samples // self.scan_batches
        if size < 4:
            raise RedauditError(f"{samples} validation samples cannot make {self.scan_batches} CKA batches of "
                                "at least 4: use more data or fewer scan batches")
        return size


@dataclass(frozen=True)
class CandidateRecord:
    """What one trial measured; stored as the trial's user attributes (JSON-safe fields)."""

    architecture: Architecture
    seed: int
    epochs: int
    val_accuracy: float
    test_accuracy: float
    msrs: float
    msrs_std: float
    layers: int
    parameters: int
    flops: int
    latency_ms: float
    train_seconds: float
    scan_seconds: float
    onnx_sha256: str
    export_max_diff: float
    model_bytes: bytes = field(repr=False, compare=False, default=b"")

    def attrs(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("model_bytes")
        data["architecture"] = self.architecture.to_dict()
        return data


def scan_exported(exported: ExportedModel, x_probe: np.ndarray, settings: ScanSettings) -> Any:
    """Run redaudit's scan on the exported bytes with explicit block taps; returns ScanResult."""
    import redaudit

    with tempfile.TemporaryDirectory(prefix="redaudit-nas-") as folder:
        path = exported.save(Path(folder) / "candidate.onnx")
        return redaudit.scan(str(path), taps=exported.taps, inputs={INPUT_NAME: x_probe},
                             samples=int(x_probe.shape[0]), cka_batch=settings.cka_batch(x_probe.shape[0]),
                             estimator=settings.estimator, epsilon=settings.epsilon, beta=settings.beta)


def evaluate_candidate(arch: Architecture, data: Dataset, *, epochs: int, seed: int,
                       train_settings: TrainSettings = TrainSettings(),
                       scan_settings: ScanSettings = ScanSettings(),
                       progress: Progress | None = None) -> CandidateRecord:
    """Train, export, check the export, scan and cost one candidate."""
    trained = train_candidate(arch, data, epochs=epochs, seed=seed, settings=train_settings,
                              progress=progress)
    exported = export_candidate(trained)
    difference = max_output_difference(exported, trained, data.validation.x)
    if progress is not None:
        progress("scan", 0, 1)
    start = time.perf_counter()
    result = scan_exported(exported, data.validation.x, scan_settings)
    scan_seconds = time.perf_counter() - start
    if progress is not None:
        progress("scan", 1, 1)
    costs = cost_figures(exported.model_bytes, data.validation.x)
    return CandidateRecord(
        architecture=arch, seed=seed, epochs=epochs,
        val_accuracy=accuracy(trained, data.validation), test_accuracy=accuracy(trained, data.test),
        msrs=float(result.msrs), msrs_std=float(result.msrs_std), layers=len(result.layers),
        parameters=costs.parameters, flops=costs.flops, latency_ms=costs.latency_ms,
        train_seconds=trained.train_seconds, scan_seconds=scan_seconds,
        onnx_sha256=hashlib.sha256(exported.model_bytes).hexdigest(), export_max_diff=difference,
        model_bytes=exported.model_bytes)
