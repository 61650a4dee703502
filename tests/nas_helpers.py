"""Shared pieces of the NAS tests: a tiny search space."""
from __future__ import annotations

from redaudit.nas.space import SearchSpace

TINY_SPACE = SearchSpace(families=("cnn", "mlp"), stages=2, depth=(1, 2), widths=(4, 8),
                         kernels=(1, 3), residual=(True, False))
