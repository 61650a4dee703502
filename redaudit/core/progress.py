"""How a scan (and a prune, which runs scans) tells its caller where it is: the stages in order
and one event type, delivered through a callback because the library never prints.

The CLI renders the events (a bar on a terminal, timestamped lines elsewhere: cli/progress.py);
the service stores the latest one on the job row. A stage name may carry a prefix saying which
part of a longer command it belongs to (``"msrs before/batches"`` while prune measures MSRS).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Stages in the order a scan reports them.
STAGES = ("load", "taps", "probe", "augment", "session", "batches", "similarity")


@dataclass(frozen=True)
class ScanProgress:
    """One progress report: ``stage`` (see :data:`STAGES`), and for ``batches`` the samples
    done out of ``total`` (through onnxruntime, reported after every micro-batch; never
    decreasing); other stages report done=0 when they start, total None."""

    stage: str
    done: int = 0
    total: int | None = None


ProgressCallback = Callable[[ScanProgress], None]


def notify(progress: ProgressCallback | None, stage: str, done: int = 0, total: int | None = None) -> None:
    """Send one event to ``progress``, if the caller gave one."""
    if progress is not None:
        progress(ScanProgress(stage, done, total))
