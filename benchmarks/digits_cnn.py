"""A residual CNN trained here on scikit-learn's digits (8×8, 10 classes), exported to ONNX.

Used by the pruning benchmarks as a model with a real accuracy that needs no download: a conv
stem, ``blocks`` residual blocks ``relu(x + bn(conv(relu(bn(conv(x))))))`` at constant width
(all removable), global average pooling and a linear classifier. Plain torch, seeded, CPU, well
under a minute. The data is split three ways — train, calibration, test — so that healing is
fitted on samples neither seen in training nor used to measure accuracy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DigitsSplits:
    """Images (N, 1, 8, 8) float32 scaled to [0, 1], labels (N,) int64."""

    train_x: np.ndarray
    train_y: np.ndarray
    calib_x: np.ndarray
    calib_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def digits_splits(seed: int = 0, calib: float = 0.15, test: float = 0.3) -> DigitsSplits:
    """Stratified train / calibration / test split of the 1,797 digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]
    labels = data.target.astype(np.int64)
    rest_x, test_x, rest_y, test_y = train_test_split(images, labels, test_size=test, random_state=seed,
                                                      stratify=labels)
    train_x, calib_x, train_y, calib_y = train_test_split(rest_x, rest_y, test_size=calib / (1 - test),
                                                          random_state=seed, stratify=rest_y)
    return DigitsSplits(train_x, train_y, calib_x, calib_y, test_x, test_y)


def _network(blocks: int, channels: int):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                      nn.ReLU())
            self.blocks = nn.Sequential(*[Block() for _ in range(blocks)])
            self.head = nn.Linear(channels, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    return Net()


def train_digits_cnn(path: str | os.PathLike[str], splits: DigitsSplits, blocks: int = 8, channels: int = 32,
                     epochs: int = 30, seed: int = 0, threads: int = 1) -> float:
    """Train, export to ``path`` (input ``image`` [N, 1, 8, 8], output ``logits`` [N, 10], opset
    17, BatchNorm folded into the convolutions) and return the test accuracy in torch.

    ``threads``: torch's intra-op threads while training (restored afterwards). One is the
    default because these convolutions are tiny: on a shared 2-core machine two threads ran
    25× slower than one (oversubscription), and one thread makes the run reproducible.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(path, splits, blocks, channels, epochs, seed)
    finally:
        torch.set_num_threads(previous)


def _train(path: str | os.PathLike[str], splits: DigitsSplits, blocks: int, channels: int, epochs: int,
           seed: int) -> float:
    import torch

    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    net = _network(blocks, channels)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * (
        (len(splits.train_x) + 63) // 64))
    x, y = torch.from_numpy(splits.train_x), torch.from_numpy(splits.train_y)
    for _ in range(epochs):
        net.train()
        order = torch.from_numpy(generator.permutation(len(x)))
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            shifted = torch.roll(x[batch], shifts=tuple(int(s) for s in generator.integers(-1, 2, 2)), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(net(shifted), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(torch.from_numpy(splits.test_x)).argmax(1).numpy() == splits.test_y).mean())
        torch.onnx.export(net, (torch.from_numpy(splits.test_x[:2]),), str(Path(path)), dynamo=False,
                          opset_version=17, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return accuracy


def accuracy(session, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of an onnxruntime session on ``images``."""
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    return float((logits.argmax(1) == labels).mean())
