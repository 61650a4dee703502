"""The residual CNN family and data of the validation study (benchmarks/validate_paper.py).

Data: scikit-learn's digits (1,797 greyscale 8×8 images, 10 classes), the only image set that
ships inside a package we already depend on. A fixed stratified split keeps 500 images for test.
Images stay 8×8 (upsampling would cost 4× the compute and the study has to run on two shared CPU
cores); training is augmented with ±1 px shifts, and probe sets larger than the 500 test images
are made, honestly labelled, from the same test images shifted by up to ±2 px (:func:`probe_set`).

Model: the CIFAR ResNet of He et al. (2016) scaled down — a 3×3 stem, three stages of ``n`` basic
blocks (8, 16, 32 channels — a quarter of CIFAR's 16, 32, 64, for the same reason; the first block of stages 2 and 3 halves the map and uses a 1×1
projection shortcut), global average pooling, a linear classifier: ResNet-(6n+2) in weighted
layers, 3n residual blocks. Plain torch (no torchvision; see benchmarks/resnet.py for why).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 8
TEST_IMAGES = 500
WIDTHS = (8, 16, 32)


@dataclass(frozen=True)
class Digits:
    """float32 images (N, 1, 8, 8), standardised with the training mean/std; int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def load_digits_8() -> Digits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = data.images.astype(np.float32)[:, None] / 16.0
    train_x, test_x, train_y, test_y = train_test_split(images, data.target.astype(np.int64), test_size=TEST_IMAGES,
                                                        stratify=data.target, random_state=0)
    mean, std = float(train_x.mean()), float(train_x.std())
    return Digits((train_x - mean) / std, train_y, (test_x - mean) / std, test_y)


def shift(images: np.ndarray, dx: int, dy: int, fill: float) -> np.ndarray:
    """Move images by (dx, dy) pixels, filling the uncovered border with ``fill`` (no wrap-around)."""
    out = np.full_like(images, fill)
    height, width = images.shape[-2:]
    src_y, dst_y = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
    out[..., dst_y, dst_x] = images[..., src_y, src_x]
    return out


#: Training augmentation and the first probe tier: no shift and the eight ±1 px shifts.
SHIFTS = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
#: The second probe tier: the sixteen shifts by 2 px along at least one axis.
FAR_SHIFTS = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3) if max(abs(dx), abs(dy)) == 2]


def probe_set(digits: Digits, samples: int) -> np.ndarray:
    """The first ``samples`` of a fixed order of test-split images: the 500 originals and their
    ±1 px shifts (4,500 images) shuffled together, then their 2 px shifts (8,000) shuffled —
    so probes up to 4,500 never see a 2 px shift, and 5,120 or 10,240 do (at most 12,500)."""
    fill = float(digits.test_x.min())
    rng = np.random.default_rng(0)
    tiers = []
    for shifts in (SHIFTS, FAR_SHIFTS):
        tier = np.concatenate([shift(digits.test_x, dx, dy, fill) for dx, dy in shifts])
        tiers.append(tier[rng.permutation(len(tier))])
    variants = np.concatenate(tiers)
    if samples > len(variants):
        raise ValueError(f"at most {len(variants)} probe images, asked for {samples}")
    return np.ascontiguousarray(variants[:samples])


def build_resnet(n: int, seed: int):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.removable = stride == 1 and cin == cout
            self.shortcut = nn.Identity() if self.removable else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(WIDTHS[0]), nn.ReLU())
            blocks, cin = [], WIDTHS[0]
            for stage, cout in enumerate(WIDTHS):
                for i in range(n):
                    blocks.append(Block(cin, cout, 2 if stage > 0 and i == 0 else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Linear(cin, 10)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    torch.manual_seed(seed)
    return ResNet()


def without_blocks(model, indices: list[int]):
    """A copy of ``model`` with the residual blocks at ``indices`` (identity shortcuts only) removed."""
    from torch import nn

    pruned = copy.deepcopy(model)
    assert all(pruned.blocks[i].removable for i in indices), "only identity-shortcut blocks can go"
    pruned.blocks = nn.Sequential(*[b for i, b in enumerate(pruned.blocks) if i not in set(indices)])
    return pruned


def train(model, digits: Digits, epochs: int, lr: float, seed: int, batch: int = 128) -> None:
    """AdamW (weight decay 5e-4) with a cosine schedule and random ±1 px shifts per batch; CPU.
    Adam rather than the paper's SGD because it trains a 56-layer net in a few epochs here."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    fill = float(digits.train_x.min())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * int(np.ceil(len(digits.train_x) / batch))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(digits.train_x))
        for start in range(0, len(order), batch):
            take = order[start:start + batch]
            dx, dy = SHIFTS[rng.integers(len(SHIFTS))]
            x = torch.from_numpy(shift(digits.train_x[take], dx, dy, fill))
            loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(digits.train_y[take]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


def export(model, path: Path) -> Path:
    import torch

    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(1, 1, SIZE, SIZE), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          opset_version=17, dynamo=False)
    return path


def onnx_accuracy(path: Path, digits: Digits) -> float:
    """Top-1 test accuracy of the exported model, run by onnxruntime (what the scan sees)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": digits.test_x})
    return float((logits.argmax(1) == digits.test_y).mean())
