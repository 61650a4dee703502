"""Option types that validate a value once, where the option is declared.

Why: a number option checked in the command body is checked in one command and forgotten in the
next (``--min-cosine nan`` switched the prune safety gate off; ``--tolerance nan`` turned the
redundancy-aware pick into the accuracy pick). click's own ``FloatRange`` lets ``nan`` through
(every comparison with nan is false). Declaring an option with :class:`Number` makes it finite
and in range before any command code runs, with click's one-line usage error (exit 2).
``tests/hostile/test_classes.py`` walks the command tree and fails on any numeric option not
declared this way, so a new option is covered by declaring it.

The path types only *label* a path (what the command does with it) for the central check in
:mod:`redaudit.cli.guard`: an output may not be a file the same command reads or writes.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import click

#: Largest value an integer option may take unless it says otherwise: a signed 32-bit count
#: (what the history stores for counts; beyond it every count is a mistake).
MAX_COUNT = 2**31 - 1


class Number(click.ParamType):
    """A finite int or float in ``[low, high]`` (both bounds always finite: an option without a
    sensible upper bound still gets one, so ``1e308`` never reaches the arithmetic)."""

    def __init__(self, kind: type = float, low: float = 0.0, high: float = float(MAX_COUNT),
                 low_open: bool = False) -> None:
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"Number needs finite bounds, got [{low}, {high}]")
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.name = "integer" if kind is int else "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool) and self._inside(value):
            return value
        text = str(value).strip()
        try:
            number = int(text) if self.kind is int else float(text)
        except ValueError:
            self.fail(f"must be {self.describe()}, got {value!r}", param, ctx)
        if not self._inside(number):
            self.fail(f"must be {self.describe()}, got {text}", param, ctx)
        return number

    def _inside(self, number: float) -> bool:
        if not math.isfinite(number):
            return False
        above = number > self.low if self.low_open else number >= self.low
        return above and number <= self.high

    def describe(self) -> str:
        low = f"{self.low:g}" if self.kind is float else str(int(self.low))
        high = f"{self.high:g}" if self.kind is float else str(int(self.high))
        kind = "an integer" if self.kind is int else "a finite number"
        return f"{kind} in {'(' if self.low_open else '['}{low}, {high}]"

    def get_metavar(self, param: click.Parameter, *args: Any, **kwargs: Any) -> str:  # click 8.1 and 8.2
        return "N" if self.kind is int else "X"

    def __repr__(self) -> str:
        return f"Number({self.describe()})"


def count(low: int = 1, high: int = MAX_COUNT) -> Number:
    """An integer count in ``[low, high]``."""
    return Number(int, low, high)


def number(low: float, high: float, low_open: bool = False) -> Number:
    """A finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    return Number(float, low, high, low_open)


class CountOrAll(click.ParamType):
    """An integer count, or ``all`` (returned as None)."""

    name = "N|all"

    def __init__(self, low: int = 1, high: int = MAX_COUNT) -> None:
        self.inner = count(low, high)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
            return None
        try:
            return self.inner.convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is not an integer in [{self.inner.low:g}, {self.inner.high:g}] or 'all'",
                      param, ctx)


# ----------------------------------------------------------------------------- paths


class InputPath(click.Path):
    """A file the command reads. ``companions(path)`` names the files it also reads through
    this one (a model's external data), for :mod:`redaudit.cli.guard`."""

    def __init__(self, *args: Any, companions: Callable[[str], Sequence[str]] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("dir_okay", False)
        super().__init__(*args, **kwargs)
        self.companions = companions


class OutputPath(click.Path):
    """A file the command writes. ``companions(path)`` names the other files written with it
    (a large model's external-data file ``<out>.data``); the guard checks them all."""

    def __init__(self, *args: Any, companions: Callable[[str], Sequence[str]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # a folder given as output: the guard says "cannot write"
        self.companions = companions


class DatabaseUrl(click.ParamType):
    """``--db``: a URL or SQLite path (default ``$REDAUDIT_DB``, then the user data folder).

    ``used_with`` names the parameter that makes the command open the database (``record`` for
    ``scan --record``); None means the command always uses it. The guard resolves the default
    itself, so an output onto the database named only by ``$REDAUDIT_DB`` is caught too.
    ``must_exist``: the command only reads the history, so a SQLite file that is not there is
    refused (opening it would create an empty one)."""

    name = "url"

    def __init__(self, used_with: str | None = None, must_exist: bool = False) -> None:
        self.used_with = used_with
        self.must_exist = must_exist  # a command that only reads: a missing SQLite file is an error, not created

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value


def data_file_of(output: str) -> list[str]:
    """The external-data file a pruned or healed model written to ``output`` may get (the
    writer's own rule, :func:`redaudit.core.weights.data_file_path`; imported here, not at the
    top, so that ``--help`` stays free of numpy and onnx)."""
    from redaudit.core.weights import data_file_path

    return [str(data_file_path(output))]
