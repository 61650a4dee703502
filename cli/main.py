"""The `redaudit` command: a thin click layer over the library.

Process-wide policy lives here and only here (the library sets no global state), and it is in
place before any heavy import: the commands are imported lazily, when click asks for one, so
that Ctrl-C during the second or so of numpy/onnx/onnxruntime/SQLAlchemy imports is handled
like Ctrl-C anywhere else: one line, exit 130, no traceback. SIGXFSZ is ignored so that
exceeding ``ulimit -f`` makes the write fail with an OSError (EFBIG) that the atomic writers
clean up, instead of killing the process with a half-written file.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any

import click

from redaudit import __version__

#: Command name → (module, attribute); imported on first use.
_COMMANDS = {
    "scan": ("redaudit.cli.scan", "scan_command"),
    "taps": ("redaudit.cli.scan", "taps_command"),
    "prune": ("redaudit.cli.prune", "prune_command"),
    "history": ("redaudit.cli.history", "history_command"),
    "diff": ("redaudit.cli.history", "diff_command"),
    "check": ("redaudit.cli.history", "check_command"),
    "db": ("redaudit.cli.history", "db_group"),
    "nas": ("redaudit.cli.nas", "nas"),
    "doctor": ("redaudit.cli.doctor", "doctor_command"),
    "serve": ("redaudit.cli.serve", "serve_command"),
    "worker": ("redaudit.cli.serve", "worker_command"),
    "token": ("redaudit.cli.token", "token_group"),
    "push": ("redaudit.cli.push", "push_command"),
    "export": ("redaudit.cli.export", "export_group"),
}

INTERRUPTED_EXIT = 130


class Interrupted(BaseException):
    """Raised by the SIGINT handler. Not a KeyboardInterrupt, so that neither click (which turns
    one into "Aborted!" and exit 1) nor a library ``except KeyboardInterrupt`` swallows it;
    ``finally`` blocks and context managers still run (temporary files removed, transactions
    rolled back) on the way up to :func:`main`."""


class LazyGroup(click.Group):
    """A group whose built-in commands are imported when first looked up, and whose usage errors
    are one line like every other error (click's own are three: usage, hint, message)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as error:
            error.show()
            sys.exit(error.exit_code)
        except click.ClickException as error:
            click.echo(f"error: {_usage_line(error)}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(INTERRUPTED_EXIT)
        sys.exit(result if isinstance(result, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*_COMMANDS, *(name for name in super().list_commands(ctx) if name not in _COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _COMMANDS:
            module, attribute = _COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="redaudit")
def cli() -> None:
    """Measure and remove structural redundancy in neural networks (RedTest / MSRS) on ONNX models."""


def _usage_line(error: click.ClickException) -> str:
    message = " ".join(error.format_message().split())
    context = getattr(error, "ctx", None)
    if isinstance(error, click.UsageError) and context is not None:
        message += f" (see '{context.command_path} --help')"
    return message


#: Set once SIGINT arrived: an interrupt that lands inside a C extension's import (onnxruntime's
#: pybind init) comes back as an ImportError, not as :class:`Interrupted`.
_INTERRUPTED: list[bool] = []


def _on_sigint(signum: int, frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
    _INTERRUPTED.append(True)
    raise Interrupted


#: OpenBLAS threads when the user has not chosen (``OPENBLAS_NUM_THREADS`` wins). The CKA
#: products are small (one batch's Gram matrices) and run beside onnxruntime, which already holds
#: the cores: a second OpenBLAS thread only spins. Measured on 2 cores: a 65,536-sample scan of a
#: small CNN 1.30 s → 0.91 s wall and 2.50 → 1.23 CPU-s; the MiniLM demo scan 8.5 → 7.8 s.
#: Set here, by the application and before numpy loads, because the library leaves process-wide
#: state alone.
DEFAULT_BLAS_THREADS = "1"


def main() -> None:
    """Console entry point: signal policy first, then the BLAS thread default, then click."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", DEFAULT_BLAS_THREADS)
    signal.signal(signal.SIGINT, _on_sigint)
    sys.unraisablehook = _on_unraisable
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        cli(prog_name="redaudit")
    except (Interrupted, KeyboardInterrupt):
        _exit_interrupted()
    except BaseException:
        if _INTERRUPTED:  # the interrupt surfaced as another error (e.g. ImportError: initialization failed)
            _exit_interrupted()
        raise


def _on_unraisable(unraisable: Any) -> None:
    """An interrupt raised where Python cannot propagate it (a ``__del__``, a weakref callback of
    the import machinery) would be printed as "Exception ignored" and the command would go on:
    end it like any other interrupt. Other unraisable errors keep Python's default report."""
    if isinstance(unraisable.exc_value, (Interrupted, KeyboardInterrupt)):
        _exit_interrupted()
    sys.__unraisablehook__(unraisable)


def _exit_interrupted() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sys.stdout.flush()
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(INTERRUPTED_EXIT)  # no interpreter teardown: nothing left to print a traceback


if __name__ == "__main__":
    main()
