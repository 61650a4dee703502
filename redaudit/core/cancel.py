"""The caller's cancel hook, shared by scan and prune: polled, never signalled.

A service job is cancelled through the database; its worker's ``cancelled()`` turns true, and the
running work must notice without being killed. Scan and prune both poll the same callable before
every onnxruntime run (BatchRunner's ``before_run``, or a check before each raw ``session.run``)
and between stages, and both stop with :class:`~redaudit.errors.ScanCancelled` — one mechanism,
one exception the service and the CLI already handle. Polling before each run, not each stage,
is what makes a cancel prompt: one stage of a 2.5 GB decoder's prune is minutes of runs.
"""
from __future__ import annotations

from collections.abc import Callable

from redaudit.errors import ScanCancelled

CancelCheck = Callable[[], bool]


def check_cancel(cancel: CancelCheck | None, what: str = "scan") -> None:
    """Raise ScanCancelled ("``what`` cancelled") when ``cancel()`` says stop; None never stops."""
    if cancel is not None and cancel():
        raise ScanCancelled(f"{what} cancelled")


def before_each_run(cancel: CancelCheck | None, what: str = "scan") -> Callable[[], None] | None:
    """``cancel`` as a :class:`~redaudit.core.run.BatchRunner` ``before_run`` hook (None for None,
    so an uncancellable run pays nothing)."""
    if cancel is None:
        return None
    return lambda: check_cancel(cancel, what)
