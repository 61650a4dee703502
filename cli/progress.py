"""Showing the library's progress events: a live display on a terminal, log lines elsewhere.

The library reports stages through one callback (``ScanProgress(stage, done, total)``); a stage
name may carry a prefix saying which part of a longer command it belongs to
(``"msrs before/batches"`` while prune measures MSRS). On a terminal the events drive a rich
bar, and each finished stage leaves one line with its duration. When stderr is not a terminal
(CI logs, pipes, ``CliRunner``) a bar would print nothing useful, so each stage becomes one
timestamped line, and batches one line per ~10 % of the samples.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

STAGE_TEXT = {
    "load": "loading and checking the model", "taps": "choosing taps", "augment": "augmenting the graph",
    "session": "creating the onnxruntime session", "probe": "preparing probe inputs",
    "batches": "running batches", "similarity": "computing similarity",
    # prune
    "candidates": "finding removable blocks", "probe arrays": "building probe inputs",
    "similarity scan": "scoring blocks (policy)", "surgery": "removing blocks",
    "verification": "verifying the pruned model", "latency": "measuring latency",
    "msrs before": "MSRS before pruning", "msrs after": "MSRS after pruning", "save": "saving the model",
}
#: Batch progress is logged when it crosses each of these shares of the total.
LOG_STEP = 0.1


def stage_text(stage: str) -> str:
    """``"msrs before/batches"`` → ``"MSRS before pruning: running batches"``."""
    return ": ".join(STAGE_TEXT.get(part, part) for part in stage.split("/"))


class LineReporter:
    """One timestamped line per stage and per ~10 % of a stage's items, for non-terminals.

    Lines of the first ``hold_s`` seconds are held back until an event with a count (batches)
    or a later event arrives, then written with their own timestamps: a command that fails
    while validating its input (a wrong ``--dim``, a scan too big for memory) prints only its
    one error line, and a slow start still shows up in the log.
    """

    def __init__(self, description: str, console: Console, clock: Callable[[], datetime] = datetime.now,
                 hold_s: float = 5.0):
        self.description = description
        self.console = console
        self.clock = clock
        self.hold_s = hold_s
        self.stage: str | None = None
        self.logged_step = -1
        self.held: list[tuple[datetime, str]] = []
        self.first_event = time.monotonic()

    def __call__(self, event: Any) -> None:
        lines = []
        if event.stage != self.stage:
            self.stage, self.logged_step = event.stage, -1
            if not event.total:
                lines.append(stage_text(event.stage))
        if event.total:
            step = int(event.done / event.total / LOG_STEP + 1e-9)
            if step > self.logged_step:
                self.logged_step = step
                share = 100 * event.done // event.total
                lines.append(f"{stage_text(event.stage)} {event.done:,}/{event.total:,} ({share}%)")
        self.held.extend((self.clock(), line) for line in lines)
        if event.total or time.monotonic() - self.first_event >= self.hold_s:
            self.flush()

    def flush(self) -> None:
        for stamp, text in self.held:
            self.console.print(f"{stamp:%H:%M:%S} {self.description}: {text}", highlight=False,
                               markup=False, soft_wrap=True)
        self.held.clear()


class LiveReporter:
    """A rich bar showing the current stage; each finished stage leaves a line with its time."""

    def __init__(self, description: str, console: Console):
        self.description = description
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
        self.task = self.progress.add_task(description, total=None)
        self.started = False
        self.stage: str | None = None
        self.stage_began = 0.0

    def __call__(self, event: Any) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        if event.stage != self.stage:
            self._finish_stage()
            self.stage, self.stage_began = event.stage, time.perf_counter()
        self.progress.update(self.task, description=f"{self.description}: {stage_text(event.stage)}",
                             completed=event.done, total=event.total)

    def _finish_stage(self) -> None:
        if self.stage is not None:
            seconds = time.perf_counter() - self.stage_began
            self.progress.console.print(f"[dim]✓ {stage_text(self.stage)} ({seconds:.1f} s)[/dim]",
                                        highlight=False)

    def stop(self) -> None:
        if self.started:
            self._finish_stage()
            self.progress.stop()


@contextmanager
def stage_progress(description: str, console: Console, enabled: bool = True) -> Iterator[Callable[[Any], None]]:
    """The progress callback for one command: silent when not ``enabled`` (``--quiet``), a live
    display when ``console`` is a terminal, timestamped lines otherwise. Nothing is shown before
    the first event, so a command that fails validating its input prints only its error line."""
    if not enabled:
        yield lambda event: None
        return
    if not console.is_terminal:
        lines = LineReporter(description, console)
        yield lines
        lines.flush()  # not after an error: held lines would bury its one line
        return
    reporter = LiveReporter(description, console)
    try:
        yield reporter
    finally:
        reporter.stop()
