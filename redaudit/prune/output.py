"""Where a pruned model goes: never onto its own input, and whole or not at all.

Big models (above the protobuf limit) are saved with their tensors in one external ``.data``
file next to them; either way the files appear only when complete (:mod:`redaudit.atomic`).
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx

from redaudit import atomic
from redaudit.prune.surgery import PruneError

#: Above this a model is saved with its tensors in one external ``.data`` file (protobuf limit).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> int:
    """Write atomically (temporary file in the target folder, fsync, rename; removed on any
    failure, so a full disk leaves neither a partial model nor a stray ``.tmp``); big models
    get one external data file next to it. Returns the bytes written (model plus data file)."""
    target = Path(path)
    try:
        if model.ByteSize() > EXTERNAL_DATA_THRESHOLD:
            return _save_with_external_data(model, target)
        atomic.write_bytes(target, model.SerializeToString())
        return target.stat().st_size
    except OSError as error:
        raise PruneError(f"cannot write the pruned model to {target}: {error.strerror or error}; "
                         "free space or choose another -o") from None


def _save_with_external_data(model: onnx.ModelProto, target: Path) -> int:
    """Both files are written in a temporary folder beside the target, the data file renamed
    into place first so that the model file, renamed last, never points at missing data."""
    data_name = target.name + ".data"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic.temporary_folder(target.parent) as folder:
        onnx.save_model(model, str(folder / target.name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_name)
        for name in (data_name, target.name):
            with open(folder / name, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(folder / data_name, target.with_name(data_name))
        os.replace(folder / target.name, target)
    return target.stat().st_size + target.with_name(data_name).stat().st_size


def refuse_overwriting_input(source: str, output: str | os.PathLike[str] | None) -> None:
    """``-o`` equal to (or a hard link of) the input would destroy it before it is measured."""
    if output is None or source == "<in-memory>":
        return
    target = Path(output)
    same = target.resolve() == Path(source).resolve()
    if not same and target.exists():
        try:
            same = os.path.samefile(target, source)
        except OSError:
            same = False
    if same:
        raise PruneError(f"-o {output} is the input model itself; write the pruned model to another path")
