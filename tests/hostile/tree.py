"""The CLI's command tree, walked: every command, every parameter, and the least arguments that
make a command line parse. The class tests build their cases from this, so a command or option
added later is covered without touching the tests."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import click

from redaudit.cli.main import cli
from redaudit.cli.params import DatabaseUrl, InputPath, OutputPath

#: A file every command line may name as its input (created by the tests).
DUMMY_INPUT = "in.onnx"


@dataclass(frozen=True)
class Leaf:
    """A runnable command: its words (``["nas", "report"]``) and the click command."""

    words: tuple[str, ...]
    command: click.Command

    @property
    def id(self) -> str:
        return " ".join(self.words)


def leaves(group: click.Group = cli, words: tuple[str, ...] = ()) -> Iterator[Leaf]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from leaves(command, (*words, name))
        elif command is not None:
            yield Leaf((*words, name), command)


def option_name(param: click.Parameter) -> str:
    return max(param.opts, key=len)


def filler(param: click.Parameter) -> str:
    """A value that parses for ``param`` (the tests override the one they exercise)."""
    if isinstance(param.type, InputPath):
        return DUMMY_INPUT
    if isinstance(param.type, OutputPath):
        return "filler.out"
    if isinstance(param.type, click.Choice):
        return str(param.type.choices[0])
    if isinstance(param.type, click.types._NumberParamTypeBase) or getattr(param.type, "name", "") == "integer":
        return "1"
    return "x"


def command_line(leaf: Leaf, overrides: dict[str, list[str]] | None = None) -> list[str]:
    """``leaf``'s words, its required parameters filled, then ``overrides`` (parameter name →
    the value words to give it; an argument's words replace its filler in place)."""
    overrides = overrides or {}
    arguments: list[str] = []
    options: list[str] = []
    for param in leaf.command.params:
        given = overrides.get(param.name)
        if isinstance(param, click.Argument):
            arguments += given if given is not None else [filler(param)] * max(1, param.nargs)
        elif given is not None:
            options += [option_name(param), *given]  # click takes the next words as values, dashes or not
        elif param.required:
            options += [option_name(param), *[filler(param)] * max(1, param.nargs)]
    return [*leaf.words, *options, "--", *arguments] if arguments else [*leaf.words, *options]


def is_numeric(param: click.Parameter) -> bool:
    return isinstance(param.type, click.types._NumberParamTypeBase) or \
        type(param.type).__name__ == "Number"


def is_text(param: click.Parameter) -> bool:
    """Parameters whose value is text the user typed: names, paths, URLs, free strings."""
    return isinstance(param.type, (click.types.StringParamType, click.Path, DatabaseUrl)) and not param.is_flag \
        if isinstance(param, click.Option) else isinstance(param.type, (click.types.StringParamType, click.Path))
