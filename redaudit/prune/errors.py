"""The prune package's one error (as ``history/errors.py`` is history's): every step — candidate
selection, surgery, the KV-cache renumbering, healing, verification, writing — raises it, so it
sits below them all."""
from __future__ import annotations

from redaudit.errors import RedauditError


class PruneError(RedauditError):
    """A pruning request cannot be carried out (unknown block, nothing left, invalid result)."""
