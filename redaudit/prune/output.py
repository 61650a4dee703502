"""Where a pruned model goes: never onto its inputs, and whole or not at all.

A model whose weights live in external data (or too big for one protobuf) is written as
``out.onnx`` plus one ``out.onnx.data`` beside it, each kept tensor's bytes copied from the source
model's data files by offset and the new tensors (healing maps) appended
(:func:`redaudit.core.weights.write_model`); any other model as one file, as always. Either way
the files appear only when complete (:mod:`redaudit.atomic`), and a written data file is checked
with the model by path (the ONNX checker reads the small .onnx and the data files' sizes).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

import onnx

from redaudit.core.model import external_data_files
from redaudit.core.weights import (
    EXTERNAL_DATA_THRESHOLD,
    WeightsError,
    data_file_path,
    write_model,
)
from redaudit.prune.errors import PruneError

__all__ = ["EXTERNAL_DATA_THRESHOLD", "data_file_path", "output_paths", "refuse_overwriting_input", "save_model"]


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None) -> int:
    """Write ``model`` atomically (external tensors copied from ``folder``, the source model's
    folder); returns the bytes written (model plus data file). A full disk, a failed copy or a
    written model the checker rejects leaves neither file."""
    target = Path(path)
    try:
        written = write_model(model, target, folder)
    except WeightsError as error:
        raise PruneError(str(error)) from None
    except OSError as error:
        raise PruneError(f"cannot write the pruned model to {target}: {error.strerror or error}; "
                         "free space or choose another -o") from None
    data = data_file_path(target)
    if written > target.stat().st_size and data.is_file():
        try:
            onnx.checker.check_model(str(target))
        except (onnx.checker.ValidationError, ValueError) as error:
            for name in (target, data):
                with suppress(OSError):
                    name.unlink()
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PruneError(f"the written pruned model fails the ONNX checker ({first}); nothing kept") from None
    return written


def output_paths(output: str | os.PathLike[str]) -> list[Path]:
    """Every file writing a model to ``output`` may create: the model and its data file."""
    return [Path(output), data_file_path(output)]


def _same_file(first: Path, second: Path) -> bool:
    if first.resolve() == second.resolve():
        return True
    try:
        return first.exists() and second.exists() and os.path.samefile(first, second)
    except OSError:
        return False


def refuse_overwriting_input(source: str, output: str | os.PathLike[str] | None,
                             inputs: Iterable[object] = ()) -> None:
    """Neither ``-o`` nor the data file written beside it may be (or hard-link) the input model,
    one of its external-data files, or a file of ``inputs`` (``--inputs``, ``--calibrate``):
    it would be destroyed before it is read, or leave the source pointing at other bytes."""
    if output is None or source == "<in-memory>":
        return
    target, data = output_paths(output)
    if _same_file(target, Path(source)):
        raise PruneError(f"-o {output} is the input model itself; write the pruned model to another path")
    readers = [(Path(source), "the input model")]
    if Path(source).is_file():
        with suppress(Exception):  # an unreadable list is refused by loading, not here
            folder = Path(source).parent
            readers += [(folder / name, "a data file of the input model")
                        for name in external_data_files(source, max_bytes=2**62)]
    readers += [(Path(os.fspath(item)), "an input file") for item in inputs if isinstance(item, (str, os.PathLike))]
    for written in (target, data):
        for path, what in readers:
            if _same_file(written, path):
                raise PruneError(f"-o {output} would write {written.name} over {path} ({what}); "
                                 "write the pruned model to another name or folder")
