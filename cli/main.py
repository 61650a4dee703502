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

from redaudit.core.version import __version__

#: Command name → (module, attribute, short help); the module is imported on first use. The
#: short help is what ``redaudit --help`` lists, so that listing the commands imports none of them
#: (their dependencies — numpy, onnxruntime, SQLAlchemy — cost about a second); a test keeps it
#: equal to each command's own.
_COMMANDS = {
    "scan": ("redaudit.cli.scan", "scan_command", "Measure layer similarity (CKA) and MSRS of an ONNX MODEL."),
    "taps": ("redaudit.cli.scan", "taps_command",
             "List the IR tensors a scan of MODEL would tap at --level (name, op, shape)."),
    "prune": ("redaudit.cli.prune", "prune_command",
              ("Remove the blocks of MODEL whose output repeats their input (RedTest similarity-guided pruning), "
               "verify the result against the original and save it with -o.")),
    "history": ("redaudit.cli.history", "history_command",
                "Versions and scans of model NAME over time, with MSRS and its trend."),
    "diff": ("redaudit.cli.history", "diff_command",
             "Compare two scans of NAME (each a version label or alias, sha256 prefix or scan id)."),
    "check": ("redaudit.cli.check", "check_command",
              "Scan MODEL; exit 0 if its MSRS is within bounds, 1 with a one-line reason if not."),
    "db": ("redaudit.cli.history", "db_group", "Manage the history database schema (Alembic migrations)."),
    "nas": ("redaudit.cli.nas", "nas",
            "Redundancy-aware neural architecture search (needs: pip install 'redaudit[nas]')."),
    "doctor": ("redaudit.cli.doctor", "doctor_command",
               ("Check which onnxruntime distribution is installed (exactly one should be), its CUDA provider's "
                "libraries and CuPy; name what is missing and how to install it.")),
    "serve": ("redaudit.cli.serve", "serve_command",
              "Run the auditing service: HTTP API under /api/v1 (OpenAPI at /api/v1/openapi.json)."),
    "worker": ("redaudit.cli.serve", "worker_command", "Run a Celery worker that executes queued scan/check/prune jobs."),
    "token": ("redaudit.cli.token", "token_group", "Create, list and revoke API tokens (scopes: read < write < admin)."),
    "push": ("redaudit.cli.push", "push_command",
             ("Upload MODEL (.onnx, or a .zip/.tar bundle with external data) to a redaudit service and scan it "
              "there; with --max-increase/--max-msrs, gate it like `redaudit check`.")),
    "export": ("redaudit.cli.export", "export_group", "Write a scan's numbers in other tools' formats."),
}

from redaudit.cli import signals
from redaudit.cli.guard import guard_command
from redaudit.cli.signals import INTERRUPTED_EXIT, Interrupted

#: Commands that need an optional extra: command → (extra, the modules it must find). Checked before
#: the command runs (``importlib.util.find_spec``: nothing is imported), so a plain ``pip install .``
#: gets one line naming the extra instead of a ModuleNotFoundError traceback. (``nas`` says the same
#: from inside the library, where it needs PyTorch.)
_EXTRAS = {
    "serve": ("service", ("fastapi", "fastapi_offline", "uvicorn", "multipart", "jinja2", "threadpoolctl")),
    "worker": ("service", ("celery", "httpx", "threadpoolctl")),
    "push": ("service", ("httpx",)),
}
MISSING_EXTRA_EXIT = 2


def missing_module(modules: tuple[str, ...]) -> str | None:
    """The first of ``modules`` that cannot be imported here (None: all can)."""
    import importlib.util

    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def _needs_extra(name: str, extra: str, module: str) -> click.Command:
    """A stand-in for ``name`` when ``module`` is missing: any arguments, one line, exit 2."""
    message = (f"redaudit {name} needs the {extra} extra ({module} is not installed): "
               f"pip install 'redaudit[{extra}]'")

    def refuse(args: tuple[str, ...]) -> None:
        click.echo(f"error: {message}", err=True)
        sys.exit(MISSING_EXTRA_EXIT)
    return click.Command(name, callback=refuse, help=message, add_help_option=False,
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


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
        if command is None and cmd_name in _EXTRAS:
            extra, modules = _EXTRAS[cmd_name]
            missing = missing_module(modules)
            if missing is not None:
                return _needs_extra(cmd_name, extra, missing)
        if command is None and cmd_name in _COMMANDS:
            module, attribute, _ = _COMMANDS[cmd_name]
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
            signals.import_native(signals.native_imports(name, rest))
        return name, command, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's command list, but a command not loaded yet is listed from its short help in
        :data:`_COMMANDS` instead of being imported (click's own calls :meth:`get_command` on each)."""
        listed = []
        for name in self.list_commands(ctx):
            command = super().get_command(ctx, name)
            if command is None and name in _EXTRAS and missing_module(_EXTRAS[name][1]) is not None:
                command = self.get_command(ctx, name)  # its stand-in, which names the extra (nothing imported)
            elif command is None and name in _COMMANDS:
                command = click.Command(name, help=_COMMANDS[name][2])
            if command is not None and not command.hidden:
                listed.append((name, command))
        if listed:
            limit = formatter.width - 6 - max(len(name) for name, _ in listed)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in listed])


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
