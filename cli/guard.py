"""One check of every command's arguments, before the command runs.

Why here and once: each command used to check its own outputs against its own inputs, and
every command or option that forgot lost data (``--heatmap h.db`` over the history database
being recorded into, ``nas export -o nas.db --db nas.db``, ``prune -o c.npz --calibrate
c.npz``). The rule is now enforced for every command the CLI registers
(:func:`guard_command` wraps each callback), from what the options *are*
(:mod:`redaudit.cli.params`):

1. Text arguments are valid UTF-8. A byte that is not (the shell passes ``$'\\xff'`` through
   as a lone surrogate) cannot be stored, printed or written to JSON: refused naming the option.
2. No output path (``OutputPath`` options and the files written with them) may resolve to, or
   be a hard link of, any file the command reads or writes: the ``InputPath`` files (and the
   files they reference), the history database (``DatabaseUrl``, including the default from
   ``$REDAUDIT_DB``, and its ``-wal``/``-shm``/``-journal`` files) or another output.
3. Each output's folder exists (or can be created) and is writable.

A command with paths no option declares attaches ``extra_paths(params) -> (inputs, outputs)``
as ``command.redaudit_paths`` (``nas report``'s default plot file, for instance).
"""
from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from redaudit.cli.params import DatabaseUrl, InputPath, OutputPath

DB_ENV = "REDAUDIT_DB"
#: Model files above this are self-contained in practice (external data keeps the .onnx small),
#: so the guard does not parse them to list their data files.
_PARSE_MODEL_BELOW = 64 * 1024 * 1024


class ArgumentError(click.ClickException):
    """One line, exit 2: the arguments contradict each other or cannot be used."""

    exit_code = 2

    def show(self, file: Any = None) -> None:  # the CLI's one-line form, also when a command runs alone
        click.echo(f"error: {self.format_message()}", err=True)


@dataclass(frozen=True)
class UsedFile:
    """A path the command uses, and what the user calls it (an option, or what it holds)."""

    path: str
    what: str


def guard_command(command: click.Command) -> click.Command:
    """Install the argument check on ``command`` (and every subcommand of a group); idempotent."""
    if getattr(command, "_redaudit_guarded", False):
        return command
    command._redaudit_guarded = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            guard_command(sub)
        return command
    callback = command.callback
    if callback is None:
        return command

    @functools.wraps(callback)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check_arguments(click.get_current_context())
        return callback(*args, **kwargs)

    command.callback = checked
    return command


def check_arguments(ctx: click.Context) -> None:
    """Rules 1-3 of the module docstring for the parsed ``ctx``; raises :class:`ArgumentError`."""
    for param in ctx.command.params:
        _check_text(_label(param), ctx.params.get(param.name))
    raw_db = os.environ.get(DB_ENV)
    if raw_db:
        _check_text(f"${DB_ENV}", raw_db)
    inputs, outputs = files_of(ctx)
    _check_collisions(inputs, outputs)
    for output in outputs:
        _check_writable(output)


def files_of(ctx: click.Context) -> tuple[list[UsedFile], list[UsedFile]]:
    """(files read or written other than outputs, outputs) of the parsed command ``ctx``."""
    inputs: list[UsedFile] = []
    outputs: list[UsedFile] = []
    params = ctx.params
    for param in ctx.command.params:
        value = params.get(param.name)
        label = _label(param)
        if isinstance(param.type, DatabaseUrl):
            if param.type.used_with is None or params.get(param.type.used_with):
                inputs.extend(_database_files(value, label, param.type.must_exist))
            continue
        if value is None or isinstance(param.type, (InputPath, OutputPath)) is False:
            continue
        values = value if isinstance(value, (tuple, list)) else (value,)
        for item in values:
            path = os.fspath(item)
            target = outputs if isinstance(param.type, OutputPath) else inputs
            target.append(UsedFile(path, f"{label} {path}"))
            companions = param.type.companions(path) if param.type.companions else ()
            target.extend(UsedFile(other, f"{other} (written with {label})" if target is outputs
                                   else f"{other} (read through {label})") for other in companions)
    extra = getattr(ctx.command, "redaudit_paths", None)
    if extra is not None:
        more_inputs, more_outputs = extra(params)
        inputs.extend(more_inputs)
        outputs.extend(more_outputs)
    return inputs, outputs


def model_data_files(path: str) -> list[str]:
    """The external-data files of the model at ``path`` (companions of a model argument); empty
    when there are none or the model cannot be read (loading it later says why)."""
    model = Path(path)
    try:
        if not model.is_file() or model.stat().st_size > _PARSE_MODEL_BELOW:
            return []
        from redaudit.core.model import external_data_files
        from redaudit.errors import RedauditError

        try:
            return [str(model.parent / name) for name in external_data_files(model, max_bytes=2**62)]
        except RedauditError:
            return []
    except OSError:
        return []


def database_file(value: str | None) -> str | None:
    """The SQLite file ``--db value`` (or ``$REDAUDIT_DB``, or the default) names; None for a
    server database. Resolved without creating anything."""
    raw = value or os.environ.get(DB_ENV) or ""
    if not raw:
        from redaudit.history.db import default_sqlite_path

        return str(default_sqlite_path())
    if "://" not in raw:
        return os.path.expanduser(raw)
    if not raw.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError as UrlError

    try:
        database = make_url(raw).database
    except (UrlError, ValueError):
        return None  # the command's own URL check says what is wrong
    return database if database and database != ":memory:" else None


def _database_files(value: str | None, label: str, must_exist: bool = False) -> list[UsedFile]:
    path = database_file(value)
    if path is None:
        return []
    if must_exist and not os.path.exists(path):
        raise ArgumentError(f"no history database at {path} (the file does not exist): record a scan "
                            f"first with `redaudit scan MODEL --record NAME`, or pass --db")
    what = f"the history database {path}" + ("" if value else f" (from ${DB_ENV} or the default)")
    return [UsedFile(path, what)] + [UsedFile(path + suffix, f"{what}'s {suffix[1:]} file")
                                     for suffix in ("-wal", "-shm", "-journal")]


def _check_collisions(inputs: list[UsedFile], outputs: list[UsedFile]) -> None:
    for index, output in enumerate(outputs):
        if _is_device(output.path):
            continue  # /dev/null, /dev/full, a FIFO: written in place, nothing to destroy
        for other in [*inputs, *outputs[:index]]:
            if _same_file(output.path, other.path):
                raise ArgumentError(f"output {output.what} is {other.what}: writing it would destroy "
                                    f"that file; choose another output path")


def unwritable_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be written (one line), or None: a folder, or a parent that is not a
    writable folder. Missing folders are fine: they are created when the file is written, so a
    command that fails first leaves none behind. The guard below and
    :func:`redaudit.cli.common.prepare_output_paths` both ask here."""
    target = Path(path).expanduser()
    if target.is_dir():
        return f"cannot write {path}: it is a folder"
    existing = target.resolve().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot write {path}: {existing} is not a folder"
    if not os.access(existing, os.W_OK):
        return f"cannot write {path}: folder {existing} is not writable"
    return None


def _check_writable(output: UsedFile) -> None:
    path = output.path
    if _is_device(path):
        return
    problem = unwritable_reason(path)
    if problem is not None:
        raise ArgumentError(problem)


def _same_file(first: str, second: str) -> bool:
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        a, b = os.stat(first), os.stat(second)
    except OSError:  # one does not exist yet
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _is_device(path: str) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode) and not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _label(param: click.Parameter) -> str:
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return (param.name or "argument").upper()


def _check_text(label: str, value: Any) -> None:
    for item in _texts(value):
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            shown = item.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            raise ArgumentError(f"{label} {shown!s}: not valid UTF-8 (the shell passed bytes "
                                f"that are no text); use a UTF-8 name or path") from None


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, os.PathLike):
        yield os.fspath(value)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _texts(item)
