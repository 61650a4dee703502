"""The CLI's signal policy: SIGINT and SIGTERM end a command the same way, and never while a
native extension is importing; plus the pause points that let tests send a signal at a known
stage instead of after a guessed delay.

Why defer during imports: a Python signal handler that raises inside the import of a C
extension (onnx's nanobind module, onnxruntime's pybind module, torch) interrupts its module
initialisation half-way. Measured (issue 22): Ctrl-C while ``import onnx`` ran gave segfaults,
``terminate called after throwing an instance of 'nanobind::python_error'`` aborts and hangs.
So the heavy imports run with SIGINT and SIGTERM *blocked* (``pthread_sigmask``): a signal that
arrives meanwhile stays pending and is delivered, as the usual exception, on the first Python
line after the import.

SIGTERM is handled like SIGINT (``finally`` blocks run: temporary files removed, transactions
rolled back) and exits 143 (128 + 15, what a shell reports for a process killed by SIGTERM)
with the one line ``terminated``; SIGINT exits 130 with ``interrupted``.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

INTERRUPTED_EXIT = 130
TERMINATED_EXIT = 143
#: The signals the CLI turns into :class:`Interrupted`.
HANDLED = (signal.SIGINT, signal.SIGTERM)

#: Test hook: ``REDAUDIT_TEST_PAUSE=STAGE`` makes the command print ``paused at STAGE`` on stderr
#: when it reaches STAGE and wait for a line on stdin. Stages: ``imports`` (inside the deferred
#: native imports), ``work`` (the first progress event of a scan, prune, check or nas trial),
#: ``record`` (before a scan is written to the history, while its reports are staged).
PAUSE_ENV = "REDAUDIT_TEST_PAUSE"

#: Native packages imported up front, signals deferred, by the commands that use them. A command
#: not listed imports nothing native at start-up beyond what its module needs.
NATIVE_IMPORTS: dict[str, tuple[str, ...]] = {
    "scan": ("numpy", "onnx", "onnxruntime"),  # + sqlalchemy with --record (RECORD_IMPORTS)
    "taps": ("numpy", "onnx"),
    "prune": ("numpy", "onnx", "onnxruntime", "sqlalchemy"),
    "check": ("numpy", "onnx", "onnxruntime", "sqlalchemy"),
    "history": ("numpy", "sqlalchemy"),
    "diff": ("numpy", "sqlalchemy"),
    "db": ("sqlalchemy",),
    "nas": ("numpy", "onnx", "onnxruntime", "sqlalchemy", "optuna", "torch"),
    "push": ("numpy", "onnx"),
}

#: Options that make a command open the history: SQLAlchemy (about 0.2 s) is imported up front
#: only then, not for every scan (issue 27).
RECORD_IMPORTS: dict[str, tuple[str, tuple[str, ...]]] = {"scan": ("--record", ("sqlalchemy",))}


def native_imports(command: str, args: Iterable[str]) -> tuple[str, ...]:
    """The native packages ``command`` imports up front, given its arguments ``args``."""
    names = NATIVE_IMPORTS.get(command, ())
    if command in RECORD_IMPORTS:
        option, extra = RECORD_IMPORTS[command]
        if any(arg == option or arg.startswith(option + "=") for arg in args):
            names = (*names, *extra)
    return names


class Interrupted(BaseException):
    """Raised by the handler of SIGINT and SIGTERM. Not a KeyboardInterrupt, so that neither
    click (which turns one into "Aborted!" and exit 1) nor a library ``except KeyboardInterrupt``
    swallows it; ``finally`` blocks and context managers still run on the way up."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = signum


#: The signals received so far: an interrupt that lands inside a C extension's import can come
#: back as an ImportError rather than as :class:`Interrupted`.
RECEIVED: list[int] = []


def on_signal(signum: int, frame: object) -> None:
    for handled in HANDLED:  # a second signal must not interrupt the cleanup
        signal.signal(handled, signal.SIG_IGN)
    RECEIVED.append(signum)
    raise Interrupted(signum)


def install() -> None:
    for handled in HANDLED:
        signal.signal(handled, on_signal)


def release() -> None:
    """Unblock the signals ``redaudit/__init__`` held during start-up (after :func:`install`):
    one that came during the start-up imports is delivered here, as :class:`Interrupted`."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)


class SignalKeyboardInterrupt(KeyboardInterrupt):
    """What :func:`as_keyboard_interrupt` raises: a KeyboardInterrupt that knows its signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def as_keyboard_interrupt() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise a KeyboardInterrupt: for third-party code that
    cleans up only for that (Optuna records the running trial FAILED); the caller catches it."""
    def handler(signum: int, frame: object) -> None:
        for handled in HANDLED:
            signal.signal(handled, signal.SIG_IGN)
        RECEIVED.append(signum)
        raise SignalKeyboardInterrupt(signum)

    previous = {handled: signal.getsignal(handled) for handled in HANDLED}
    for handled in HANDLED:
        signal.signal(handled, handler)
    try:
        yield
    finally:
        if not RECEIVED:
            for handled, before in previous.items():
                signal.signal(handled, before)


@contextmanager
def signals_deferred(stage: str | None = None) -> Iterator[None]:
    """Hold SIGINT/SIGTERM pending for the block (native imports); delivered right after it.
    ``stage``: the pause point at the start of the block (tests send their signal there)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        if stage is not None:
            pause_at(stage)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def import_native(names: Iterable[str]) -> None:
    """Import ``names`` with signals deferred; a package that is not installed is skipped (the
    command that needs it says so when it gets there)."""
    with signals_deferred("imports"):
        for name in names:
            with suppress(ImportError):
                importlib.import_module(name)


def exit_code(signum: int | None) -> int:
    return TERMINATED_EXIT if signum == signal.SIGTERM else INTERRUPTED_EXIT


def exit_now(signum: int | None = None) -> None:
    """One line, the exit code of ``signum``, no interpreter teardown (nothing left to print a
    traceback from a half-finished import)."""
    signum = signum if signum is not None else (RECEIVED[0] if RECEIVED else signal.SIGINT)
    for handled in HANDLED:
        signal.signal(handled, signal.SIG_IGN)
    try:
        sys.stdout.flush()
        sys.stderr.write("terminated\n" if signum == signal.SIGTERM else "interrupted\n")
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(exit_code(signum))


_PAUSED: set[str] = set()


def pause_at(stage: str) -> None:
    """The test hook of :data:`PAUSE_ENV` (a no-op unless it names ``stage``; once per stage)."""
    if os.environ.get(PAUSE_ENV) != stage or stage in _PAUSED:
        return
    _PAUSED.add(stage)
    sys.stderr.write(f"paused at {stage}\n")
    sys.stderr.flush()
    sys.stdin.readline()
