"""Similarity-guided layer pruning as verified ONNX graph surgery (RedTest application 1).

``prune_model(path, remove=2)`` finds the removable blocks (residual blocks, transformer layers,
shape-preserving chains), ranks them by CKA between each block's input and output (measured by
the scan engine), removes the most redundant ones by graph surgery, checks the result with the
ONNX checker and onnxruntime, and reports how closely it reproduces the original.
"""
from __future__ import annotations

from redaudit.prune.api import prune_model
from redaudit.prune.output import save_model
from redaudit.prune.candidates import Block, find_candidates
from redaudit.prune.result import Candidate, PruneResult
from redaudit.prune.errors import PruneError
from redaudit.prune.surgery import remove_blocks

__all__ = ["prune_model", "save_model", "PruneResult", "Candidate", "Block", "find_candidates",
           "remove_blocks", "PruneError"]
