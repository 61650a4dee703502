"""A model's weights as data, apart from its graph: read one tensor, write a model with its data.

Why: a model past 2 GB keeps its weights in external data files and cannot be one protobuf.
Every stage works on the weightless graph (initializers that reference byte ranges of files in
the model's folder); only the few that need numbers read them, one tensor at a time
(:func:`tensor_array`, a read-only memory map), and a pruned or healed model is written by
copying each kept tensor's bytes from its source file to the output's data file, by offset, in
chunks (:func:`write_model`) — the weights are never all in memory, nor in Python objects.

Layout written: a self-contained model (no external tensor, under the protobuf limit) is one
``.onnx`` file exactly as before. Otherwise ``out.onnx`` plus one ``out.onnx.data`` beside it
(:func:`data_file_path`): every external tensor, and every inline tensor of at least
``INLINE_LIMIT`` bytes, at an offset aligned to ``ALIGNMENT`` (onnxruntime maps aligned tensors
instead of copying them). The data file is renamed into place before the ``.onnx``, so the model
never points at missing data; a failure leaves neither (:mod:`redaudit.atomic`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.external_data_helper import _get_all_tensors

from redaudit import atomic
from redaudit.core.external import external_bytes, external_tensors, parse_ref, resolve
from redaudit.errors import ModelLoadError, RedauditError

#: Above this a model without external data is still written with one (protobuf's 2 GiB limit).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
#: Inline tensors at least this large move to the data file when one is written (onnx's default).
INLINE_LIMIT = 1024
#: Tensor offsets in the data file are multiples of this (the page size: mappable as they are).
ALIGNMENT = 4096
#: Bytes copied per read/write when the kernel cannot copy file ranges itself.
CHUNK = 64 * 1024**2
_DATA_SUFFIX = ".data"


class WeightsError(RedauditError):
    """A model's weights cannot be read or written where asked."""


def data_file_path(output: str | os.PathLike[str]) -> Path:
    """The external-data file written beside ``output`` (``out.onnx`` → ``out.onnx.data``) when
    the model needs one: an output path a command must treat as written, like ``output`` itself."""
    target = Path(output)
    return target.with_name(target.name + _DATA_SUFFIX)


def is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def external_source(tensor: onnx.TensorProto, base_dir: str | os.PathLike[str] | None) -> tuple[Path, int, int]:
    """(file, offset, length) of an external tensor's bytes, validated as loading validates them
    (:mod:`redaudit.core.external`: relative, inside ``base_dir`` after resolving links, long enough)."""
    ref = parse_ref(tensor)
    if base_dir is None:
        raise WeightsError(f"tensor {tensor.name!r} lives in external data {ref.location!r} but the model's "
                           "folder is unknown; load the model from its path")
    path, length = resolve(ref, Path(base_dir))
    return path, ref.offset, length


def tensor_array(tensor: onnx.TensorProto, base_dir: str | os.PathLike[str] | None) -> np.ndarray:
    """The tensor's values: a read-only memory map of its byte range for external data (pages are
    read when touched, nothing is copied), ``numpy_helper.to_array`` for inline data."""
    if not is_external(tensor):
        return numpy_helper.to_array(tensor)
    source, offset, length = external_source(tensor, base_dir)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    shape = tuple(int(d) for d in tensor.dims)
    count = int(np.prod(shape, dtype=np.int64))
    if dtype.itemsize * count != length or dtype.kind in "OUS" or tensor.data_type in _PACKED:
        return _read_whole(tensor, source, offset, length)
    if count == 0:
        return np.empty(shape, dtype)
    array = np.memmap(source, dtype=dtype.newbyteorder("<"), mode="r", offset=offset, shape=(count,))
    return array.reshape(shape)


#: Types stored packed or converted on read (4-bit, float4, float8 with a numpy view of another
#: width): read through onnx's own conversion, which knows their layouts.
_PACKED = {getattr(onnx.TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
           if hasattr(onnx.TensorProto, name)}


def _read_whole(tensor: onnx.TensorProto, source: Path, offset: int, length: int) -> np.ndarray:
    """Unusual layouts: the bytes into an inline copy of the tensor, converted by onnx."""
    inline = onnx.TensorProto()
    inline.CopyFrom(tensor)
    del inline.external_data[:]
    inline.data_location = onnx.TensorProto.DEFAULT
    with open(source, "rb") as handle:
        handle.seek(offset)
        inline.raw_data = handle.read(length)
    try:
        return numpy_helper.to_array(inline)
    except (ValueError, TypeError) as error:
        raise ModelLoadError(f"external data of tensor {tensor.name!r} does not hold its declared type and "
                             f"shape ({error}); re-export the model") from None


def stored_bytes(model: onnx.ModelProto) -> int:
    """The model's size as written: its protobuf plus the bytes of its external tensors."""
    return model.ByteSize() + external_bytes(model)


def needs_data_file(model: onnx.ModelProto) -> bool:
    """Whether :func:`write_model` writes ``.onnx`` + ``.data``: the model has external tensors,
    or (inline tensors, new healing maps included) it is too big for one protobuf."""
    return bool(external_tensors(model)) or model.ByteSize() > EXTERNAL_DATA_THRESHOLD


def without_external_data(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which each external initializer is a graph input of its type and shape: what the
    ONNX checker and shape inference can check with no data file at hand (they resolve external
    locations against the working folder otherwise). Small: the graph, and inline tensors only.
    A model without external initializers is returned as it is (not copied)."""
    if not any(is_external(tensor) for tensor in model.graph.initializer):
        return model
    checkable = onnx.ModelProto()
    checkable.CopyFrom(model)
    graph = checkable.graph
    external = [tensor for tensor in graph.initializer if is_external(tensor)]
    declared = {value.name for value in graph.input}
    kept = [tensor for tensor in graph.initializer if not is_external(tensor)]
    for tensor in external:
        if tensor.name not in declared:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return checkable


def write_model(model: onnx.ModelProto, path: str | os.PathLike[str],
                base_dir: str | os.PathLike[str] | None = None) -> int:
    """Write ``model`` to ``path`` atomically; external tensors are read from ``base_dir`` (the
    folder their locations are relative to: the source model's). Returns the bytes written
    (model plus data file). ``model`` itself is not modified. Raises OSError naming the target."""
    target = Path(path)
    if not needs_data_file(model):
        atomic.write_bytes(target, model.SerializeToString())
        return target.stat().st_size
    data_target = data_file_path(target)
    _refuse_overwriting_sources(model, base_dir, data_target)
    written = onnx.ModelProto()
    written.CopyFrom(model)
    with atomic.staged_files() as files:
        with files.open(data_target) as handle:
            _write_tensors(written, base_dir, handle, data_target.name)
        files.stage(target, written.SerializeToString())
    return target.stat().st_size + data_target.stat().st_size


def _refuse_overwriting_sources(model: onnx.ModelProto, base_dir, data_target: Path) -> None:
    """The new data file replaces ``data_target`` only after every byte was copied, but the source
    model would then point at the wrong bytes: never write over a file the model reads."""
    resolved = Path(os.path.realpath(data_target))
    for tensor in external_tensors(model):
        source, _, _ = external_source(tensor, base_dir)
        if source == resolved or (resolved.exists() and os.path.samefile(source, resolved)):
            raise WeightsError(f"the output's data file {data_target} is the data file the model's weights "
                               "are read from; write the model to another name or folder")


def _write_tensors(model: onnx.ModelProto, base_dir, handle: BinaryIO, location: str) -> None:
    """Copy each external tensor's bytes and move each large inline tensor's bytes to ``handle``,
    then point the tensor at its new range of ``location``."""
    sources: dict[Path, int] = {}
    copied: dict[tuple[Path, int, int], int] = {}  # a range two tensors share (tied weights) is copied once
    try:
        for tensor in _get_all_tensors(model):
            if is_external(tensor):
                source, offset, length = external_source(tensor, base_dir)
                if source not in sources:
                    sources[source] = os.open(source, os.O_RDONLY)
                start = copied.get((source, offset, length), -1)
                if start < 0:
                    start = copied[source, offset, length] = _align(handle)
                    _copy_range(sources[source], offset, handle, length)
            elif tensor.HasField("raw_data") and len(tensor.raw_data) >= INLINE_LIMIT:
                start = _align(handle)
                length = handle.write(tensor.raw_data)
                tensor.ClearField("raw_data")
            else:
                continue
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(start)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    finally:
        for descriptor in sources.values():
            os.close(descriptor)


def _align(handle: BinaryIO) -> int:
    position = handle.tell()
    padding = -position % ALIGNMENT
    if padding:
        handle.write(b"\0" * padding)
    return position + padding


def _copy_range(source: int, offset: int, handle: BinaryIO, length: int) -> None:
    """``length`` bytes of ``source`` from ``offset`` appended to ``handle``: in the kernel where it
    can (``copy_file_range``: no user-space buffer), else in ``CHUNK`` pieces."""
    handle.flush()
    target = handle.fileno()
    done = 0
    copy_range = getattr(os, "copy_file_range", None)
    while done < length and copy_range is not None:
        try:
            moved = copy_range(source, target, min(CHUNK, length - done), offset + done)
        except OSError:  # another file system, an old kernel: copy through user space
            break
        if moved <= 0:
            break
        done += moved
    handle.seek(0, os.SEEK_END)
    while done < length:
        piece = os.pread(source, min(CHUNK, length - done), offset + done)
        if not piece:
            raise WeightsError(f"external data ended {length - done} bytes early while copying; "
                               "was the source model changed during the run?")
        handle.write(piece)
        done += len(piece)
