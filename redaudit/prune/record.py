"""A prune in the history: the pruned model's scan recorded as a version of the original.

``prune --record NAME`` stores the scan after pruning with the original as its parent, and
beside it a ``PruneVerification`` row saying what was removed and how the pruned model
compared (drift, next-token agreement, perplexity). That mapping from a :class:`PruneResult`
to history columns, and the call that writes them in one transaction, are this module's job;
:mod:`redaudit.prune.api` only sequences the stages and need not know the history's columns.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from redaudit.core.result import ScanResult
from redaudit.prune.result import PruneResult
from redaudit.prune.errors import PruneError


def verification_columns(result: PruneResult, heal: str) -> dict[str, Any]:
    """The ``PruneVerification`` columns of a result (history rows beside the pruned scan)."""
    finite = lambda value: value if value is not None and np.isfinite(value) else None  # noqa: E731
    lm = result.next_token
    tops = [item.top1_agreement for item in result.agreement if item.top1_agreement is not None]
    top1 = lm.top1_agreement if lm is not None else (min(tops) if tops else None)
    return {"policy": result.policy, "heal": heal, "removed": list(result.removed), "probe_real": result.probe_real,
            "drift": finite(result.drift), "top1_agreement": top1, "kl_mean": None if lm is None else lm.kl_mean,
            "perplexity_original": None if lm is None else lm.perplexity_original,
            "perplexity_pruned": None if lm is None else lm.perplexity_pruned}


def record_prune(db: Any, name: str, label: str | None, before: ScanResult | None, after: ScanResult | None,
                 parent_sha256: str, verification: dict[str, Any] | None = None) -> int:
    """Store the pruned model's scan as a version whose parent is the original (the original
    recorded too if the history does not know its bytes), in one transaction."""
    try:
        from redaudit.history import record_pruned
    except ImportError as error:
        raise PruneError(f"--record needs the history module, which is not available here ({error})") from None
    if before is None or after is None:
        raise PruneError("--record needs MSRS scans of both models, which could not be made (see warnings)")
    return record_pruned(db, before, after, name, label=label, parent_sha256=parent_sha256,
                         verification=verification).scan_id
