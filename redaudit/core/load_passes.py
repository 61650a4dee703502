"""The passes a loaded graph goes through before any stage reads it, written once so that every
reader sees the same graph: the scan and prune (through :class:`~redaudit.core.prepared.PreparedModel`)
and ``redaudit taps``, which lists what a scan would tap without starting onnxruntime.

1. :func:`~redaudit.core.branches.inline_known_branches`: a top-level If on a graph input of
   known value (optimum's merged decoder) becomes the branch redaudit drives.
2. :func:`~redaudit.core.fused.expose_residual_sums`: a fused skip-norm's sum the optimizer left
   unnamed gets a name, so a pre-norm model's last layer has an IR.

Both work on the weightless proto and copy it only when they change it.
"""
from __future__ import annotations

import onnx

from redaudit.core.branches import Inlined, inline_known_branches
from redaudit.core.fused import expose_residual_sums


def graph_as_scanned(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[Inlined, ...]]:
    """``proto`` as every stage reads it, and the Ifs replaced by a branch (their notes are the
    scan's first warnings)."""
    flat, inlined = inline_known_branches(proto)
    return expose_residual_sums(flat), inlined
