"""Similarity-guided layer pruning as verified ONNX graph surgery (RedTest application 1)."""
from __future__ import annotations

from redaudit.prune.candidates import Block, find_candidates

__all__ = ["Block", "find_candidates"]
