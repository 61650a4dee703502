"""The candidate model family in plain PyTorch (imported only once torch is known to exist).

Every block ends in its own ``act`` ReLU module, and the stem in ``stem.act``: those are the
IRs the scan compares (the stem output plus every block output, the RedTest reference code's
choice for residual networks), for residual and plain candidates alike, so MSRS is measured
at the same granularity across the whole search space.
"""
from __future__ import annotations

import torch
from torch import nn

from redaudit.nas.space import Architecture


class ConvBlock(nn.Module):
    """conv-bn-relu-conv-bn (+ shortcut) -relu; ``stride`` 2 halves the map on stage entry."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, residual: bool) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.residual = residual
        if residual and (stride != 1 or c_in != c_out):
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.residual:
            out = out + self.shortcut(x)
        return self.act(out)


class DenseBlock(nn.Module):
    """The MLP analogue: linear-bn-relu-linear-bn (+ shortcut) -relu."""

    def __init__(self, d_in: int, d_out: int, residual: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_out, bias=False)
        self.bn1 = nn.BatchNorm1d(d_out)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(d_out, d_out, bias=False)
        self.bn2 = nn.BatchNorm1d(d_out)
        self.residual = residual
        if residual and d_in != d_out:
            self.shortcut = nn.Sequential(nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.fc2(self.relu1(self.bn1(self.fc1(x)))))
        if self.residual:
            out = out + self.shortcut(x)
        return self.act(out)


class CandidateNet(nn.Module):
    """Stem, ``len(depths)`` stages of blocks (width doubles per stage), pooled linear head."""

    def __init__(self, arch: Architecture, sample_shape: tuple[int, ...], classes: int) -> None:
        super().__init__()
        self.family = arch.family
        self.stem = nn.Sequential()
        widths = [arch.width * 2**s for s in range(len(arch.depths))]
        if arch.family == "cnn":
            if len(sample_shape) != 3:
                raise ValueError("the cnn family needs image inputs (C, H, W)")
            channels = sample_shape[0]
            self.stem.add_module("conv", nn.Conv2d(channels, widths[0], arch.kernel,
                                                   padding=arch.kernel // 2, bias=False))
            self.stem.add_module("bn", nn.BatchNorm2d(widths[0]))
        else:
            features = 1
            for size in sample_shape:
                features *= size
            self.stem.add_module("flatten", nn.Flatten())
            self.stem.add_module("fc", nn.Linear(features, widths[0], bias=False))
            self.stem.add_module("bn", nn.BatchNorm1d(widths[0]))
        self.stem.add_module("act", nn.ReLU())
        stages = []
        previous = widths[0]
        for index, (depth, width) in enumerate(zip(arch.depths, widths)):
            blocks = []
            for block in range(depth):
                if arch.family == "cnn":
                    stride = 2 if index > 0 and block == 0 else 1
                    blocks.append(ConvBlock(previous, width, arch.kernel, stride, arch.residual))
                else:
                    blocks.append(DenseBlock(previous, width, arch.residual))
                previous = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1) if arch.family == "cnn" else nn.Identity()
        self.flatten = nn.Flatten()
        self.head = nn.Linear(previous, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.stages(self.stem(x)))))

    def tap_modules(self) -> list[str]:
        """Qualified names of the ReLU modules whose outputs are the scanned IRs, in order."""
        names = ["stem.act"]
        for s, stage in enumerate(self.stages):
            names.extend(f"stages.{s}.{b}.act" for b in range(len(stage)))
        return names
