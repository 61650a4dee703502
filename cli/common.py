"""Shared CLI plumbing: error mapping, option parsing helpers, progress display."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console

from redaudit.errors import RedauditError

console = Console()
err_console = Console(stderr=True)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn RedauditError into one line on stderr and its exit code; no traceback."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RedauditError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as error:  # a file the command reads or writes: full disk, read-only folder, /dev/full
            if error.filename is None and not error.strerror:
                raise
            where = f"{error.filename}: " if error.filename is not None else ""
            click.echo(f"error: {where}{error.strerror or error}", err=True)
            sys.exit(2)
        except MemoryError:  # a last resort: work is sized before it starts, this names the knobs
            click.echo("error: out of memory; lower --samples, --cka-batch or the --dim values", err=True)
            sys.exit(2)
    return wrapper


class OutputError(RedauditError):
    """A report file cannot be written."""


def prepare_output_paths(*paths: str | None, inputs: tuple[str | None, ...] = ()) -> None:
    """Check that the requested output files can be created (their nearest existing folder is
    writable; missing folders are made only when the file is written);
    refuse an output that is one of ``inputs`` (same path, hard or symbolic link) or that is
    requested twice: writing it would destroy the input or the other output."""
    import os

    from redaudit.cli.guard import unwritable_reason

    seen: dict[str, str] = {}
    for path in paths:
        if not path:
            continue
        for source in inputs:
            if source and _same_file(source, path):
                raise OutputError(f"output {path} is the input {source}; choose another output path")
        key = os.path.realpath(path)
        if key in seen:
            raise OutputError(f"{seen[key]} and {path} are the same file; give each output its own path")
        seen[key] = path
    for path in paths:
        if not path:
            continue
        problem = unwritable_reason(path)
        if problem is not None:
            raise OutputError(problem)


def parse_pairs(values: tuple[str, ...], option: str, form: str = "NAME=VALUE") -> dict[str, str]:
    """Repeated ``NAME=VALUE`` options as a mapping; the library validates the values."""
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, raw = value.rpartition("=")
        if not sep or not name:
            raise click.BadParameter(f"{value!r} is not {form}", param_hint=option)
        if pairs.get(name, raw) != raw:  # contradictory: the last one would win silently
            raise click.BadParameter(f"{name} is given twice ({pairs[name]!r} and {raw!r}); give it once",
                                     param_hint=option)
        pairs[name] = raw
    return pairs


def _same_file(first: str, second: str) -> bool:
    import os

    try:
        return os.path.realpath(first) == os.path.realpath(second) or os.path.samefile(first, second)
    except OSError:  # the output does not exist yet
        return False


def parse_dims(values: tuple[str, ...]) -> dict[str, int]:
    dims: dict[str, int] = {}
    for name, number in parse_pairs(values, "--dim").items():
        try:
            dims[name] = int(number)
        except ValueError:
            raise click.BadParameter(f"{name}={number!r}: VALUE must be an integer", param_hint="--dim") from None
    return dims


def parse_size(value: str, option: str = "--max-model-size") -> int:
    """'500M', '2G', '1048576' → bytes (an int passes: the option type converted it already;
    ``option`` names the option in the error)."""
    if isinstance(value, int):
        return value
    text = value.strip().upper().removesuffix("B")
    factor = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in "KMGT" else text
    try:
        size = float(number) * factor
        if not (size >= 1 and size < 2**62):  # also refuses nan and inf
            raise ValueError(number)
        return int(size)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size like 500M or 4G", param_hint=option) from None


#: ``--max-model-size``'s default: no fixed bound (see core.spec.DEFAULT_MAX_MODEL_BYTES).
MAX_MODEL_SIZE_AUTO = "auto"
MAX_MODEL_SIZE_HELP = ("Refuse models (with their external data) larger than this; auto: only a model whose "
                       "weights cannot fit in the memory available.")


def parse_model_size(value: str) -> int | None:
    """``--max-model-size``: a size, or ``auto`` (None: what fits in the memory available)."""
    return None if value.strip().lower() == MAX_MODEL_SIZE_AUTO else parse_size(value)


def parse_cka_batch(value: str) -> int | None:
    if value.lower() == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an integer or 'all'", param_hint="--cka-batch") from None


@contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[[Any], None]]:
    """The library's progress callback for a command, shown on stderr: a live display on a
    terminal, one timestamped line per stage (and per ~10 % of batches) otherwise; nothing when
    not ``enabled``. See :mod:`redaudit.cli.progress`."""
    from redaudit.cli.progress import stage_progress
    from redaudit.cli.signals import pause_at

    with stage_progress(description, err_console, enabled) as update:
        def paced(event: Any) -> None:
            pause_at("work")  # the tests' signal lands here, in the work, never after it
            update(event)
        yield paced
