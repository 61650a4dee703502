"""Train one candidate for a fixed epoch budget, seeded and single-threaded by default.

torch is an optional extra: it is imported here lazily, and a missing install is a user
error that says what to install. Training is deterministic for a given seed, thread count
and torch build, which is what lets ``nas export`` re-create a trial's model when its ONNX
artifact is not at hand (the re-created file's hash is then checked against the record).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from redaudit.errors import RedauditError
from redaudit.nas.data import Dataset, Split
from redaudit.nas.space import Architecture, TrainSettings

Progress = Callable[[str, int, int], None]


class NasDependencyError(RedauditError):
    """An optional dependency of ``redaudit nas`` (torch, optuna, scikit-learn) is missing."""


def require_torch() -> Any:
    """Import torch or raise a one-line error naming the extra to install."""
    try:
        import torch
    except ImportError:
        raise NasDependencyError("redaudit nas needs PyTorch: pip install 'redaudit[nas]'") from None
    return torch


@dataclass
class TrainedModel:
    """A trained torch module (eval mode) and what training measured."""

    module: Any
    architecture: Architecture
    sample_shape: tuple[int, ...]
    epochs: int
    seed: int
    train_seconds: float
    final_loss: float

    @property
    def parameter_count(self) -> int:
        return int(sum(p.numel() for p in self.module.parameters()))


def build_model(arch: Architecture, sample_shape: tuple[int, ...], classes: int, seed: int) -> Any:
    """A freshly initialised :class:`CandidateNet`; weights depend only on ``seed``."""
    torch = require_torch()
    from redaudit.nas.models import CandidateNet

    if arch.family == "cnn" and len(sample_shape) != 3:
        raise RedauditError(f"the cnn family needs image data (N, C, H, W); this data has samples of shape "
                            f"{sample_shape}: use families = [\"mlp\"] in the search space")
    torch.manual_seed(seed)
    return CandidateNet(arch, sample_shape, classes)


def train_candidate(arch: Architecture, data: Dataset, *, epochs: int, seed: int,
                    settings: TrainSettings = TrainSettings(), threads: int | None = 1,
                    progress: Progress | None = None) -> TrainedModel:
    """Adam + cross-entropy on ``data.train`` for ``epochs`` passes; returns the model in eval mode."""
    torch = require_torch()
    if epochs < 1:
        raise RedauditError(f"the training budget must be at least 1 epoch, got {epochs}")
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    model = build_model(arch, data.sample_shape, data.classes, seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate,
                                 weight_decay=settings.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.from_numpy(data.train.x)
    y = torch.from_numpy(data.train.y)
    generator = torch.Generator().manual_seed(seed)
    loss_value = float("nan")
    model.train()
    # oneDNN's convolution backward (torch 2.13 CPU, oneDNN 3.12) corrupts the heap on some AMD
    # EPYC machines ("free(): invalid next size" → abort, within a few trials of `nas run`); the
    # native kernels are as fast for these small networks. Scoped: the caller's setting is restored.
    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        for epoch in range(epochs):
            order = torch.randperm(len(y), generator=generator)
            for begin in range(0, len(y), settings.batch_size):
                index = order[begin:begin + settings.batch_size]
                if index.numel() < 2:  # BatchNorm needs two samples in training mode
                    continue
                optimiser.zero_grad()
                loss = loss_fn(model(x[index]), y[index])
                loss.backward()
                optimiser.step()
                loss_value = float(loss.detach())
            if progress is not None:
                progress("train", epoch + 1, epochs)
    finally:
        torch.backends.mkldnn.enabled = onednn
    model.eval()
    return TrainedModel(module=model, architecture=arch, sample_shape=data.sample_shape,
                        epochs=epochs, seed=seed, train_seconds=time.perf_counter() - start,
                        final_loss=loss_value)


def predict_logits(trained: TrainedModel, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Logits of the eval-mode torch model, float32 (N, classes)."""
    torch = require_torch()
    outputs = []
    with torch.no_grad():
        for begin in range(0, x.shape[0], batch):
            outputs.append(trained.module(torch.from_numpy(x[begin:begin + batch])).numpy())
    return np.concatenate(outputs, axis=0)


def accuracy(trained: TrainedModel, split: Split) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float((predict_logits(trained, split.x).argmax(axis=1) == split.y).mean())
