"""The `redaudit` command: a thin click layer over the library.

Process-wide policy lives here and only here (the library sets no global state), and it is in
place before any heavy import: the commands are imported lazily, when click asks for one, so
that Ctrl-C during the second or so of numpy/onnx/onnxruntime/SQLAlchemy imports is handled
like Ctrl-C anywhere else: one line, exit 130, no traceback (SIGTERM: exit 143; see signals.py). SIGXFSZ is ignored so that
exceeding ``ulimit -f`` makes the write fail with an OSError (EFBIG) that the atomic writers
clean up, instead of killing the process with a half-written file.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import warnings
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

from redaudit.cli import signals
from redaudit.cli.guard import guard_command
from redaudit.cli.signals import INTERRUPTED_EXIT, Interrupted


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
            with signals.signals_deferred():
                command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return guard_command(command) if command is not None else None

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        """The command to run, with the native packages it uses imported first, signals deferred
        (:mod:`redaudit.cli.signals`): only on the way to running it, not for ``--help``."""
        name, command, rest = super().resolve_command(ctx, args)
        asks_help = any(word in ("--help", "-h") for word in rest)
        if not ctx.resilient_parsing and not asks_help and name in signals.NATIVE_IMPORTS:
            signals.import_native(signals.NATIVE_IMPORTS[name])
        return name, command, rest


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
    signals.install()
    # numpy's "divide by zero / invalid value encountered" RuntimeWarnings: every number the
    # tool cannot compute is reported in its own words (n/a, a degenerate-layer warning), so the
    # raw lines are only noise on stderr. The application's choice; the library sets no filter.
    warnings.simplefilter("ignore", RuntimeWarning)
    sys.unraisablehook = _on_unraisable
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        signals.release()
        cli(prog_name="redaudit")
    except Interrupted as interrupt:
        signals.exit_now(interrupt.signum)
    except KeyboardInterrupt:
        signals.exit_now(signal.SIGINT)
    except BaseException:
        if signals.RECEIVED:  # the interrupt surfaced as another error (e.g. ImportError: initialization failed)
            signals.exit_now()
        raise


def _on_unraisable(unraisable: Any) -> None:
    """An interrupt raised where Python cannot propagate it (a ``__del__``, a weakref callback of
    the import machinery) would be printed as "Exception ignored" and the command would go on:
    end it like any other interrupt. Other unraisable errors keep Python's default report."""
    if isinstance(unraisable.exc_value, (Interrupted, KeyboardInterrupt)):
        signals.exit_now(getattr(unraisable.exc_value, "signum", signal.SIGINT))
    sys.__unraisablehook__(unraisable)


if __name__ == "__main__":
    main()
