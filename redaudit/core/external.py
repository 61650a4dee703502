"""External data: a model's weights in files beside it, validated and referenced, never loaded.

Why: weights are not the graph. Every stage reads the graph; only onnxruntime (and the writer
of a pruned model) needs the weights, and onnxruntime reads them itself from the model's folder.
So a loaded model keeps each external tensor as a reference (location, offset, length), checked
here against the model's own folder before any byte is read; only tensors of at most
:data:`INLINE_BYTES` are read into the proto, so that shape inference and constant folding still
see shape constants (a Reshape's target) when an exporter put every tensor outside.

The rules: a location is relative, does not climb out with ``..``, still lies inside the folder
after resolving links, names a regular file, and the range (offset, length) lies in that file
and holds exactly the bytes the tensor's type and shape need.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx.external_data_helper import _get_all_tensors

from redaudit.errors import ModelLoadError, UnsafeModelError

#: External tensors up to this size are read into the proto at load (shape constants, biases).
INLINE_BYTES = 64 * 1024
#: The keys onnx reads from a tensor's ``external_data``; any other key is dropped (onnx
#: ignores it too, but with a Python warning that would be a second stderr line).
_EXTERNAL_KEYS = ("location", "offset", "length", "checksum", "basepath")
_MAX_OFFSET = 2**62
#: Bits per element of the packed types (two 4-bit or four 2-bit values per byte).
_PACKED_BITS = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.FLOAT4E2M1: 4,
                onnx.TensorProto.INT2: 2, onnx.TensorProto.UINT2: 2}
_HASH_CHUNK = 8 * 1024**2


@dataclass(frozen=True)
class ExternalRef:
    """One tensor's validated external-data reference (``length`` None: to the end of the file)."""

    tensor: str
    location: str
    offset: int
    length: int | None


def external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor of the model (initializers, Constant attributes, subgraphs) kept outside."""
    return [t for t in _get_all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]


def parse_ref(tensor: onnx.TensorProto) -> ExternalRef:
    """Parse ``external_data`` ourselves: onnx's parser raises bare ValueErrors (``int('abc')``,
    negative offsets) and warns on unknown keys. Offsets and lengths must be decimal integers
    in [0, 2**62]."""
    fields: dict[str, str] = {}
    for entry in list(tensor.external_data):
        if entry.key in _EXTERNAL_KEYS:
            fields[entry.key] = entry.value
    unknown = [entry for entry in tensor.external_data if entry.key not in _EXTERNAL_KEYS]
    for entry in unknown:
        tensor.external_data.remove(entry)
    numbers: dict[str, int | None] = {}
    for key in ("offset", "length"):
        text = fields.get(key)
        if text is None or text == "":
            numbers[key] = None
            continue
        if not text.isascii() or not text.isdigit() or int(text) > _MAX_OFFSET:
            raise ModelLoadError(
                f"tensor {tensor.name!r} has external-data {key} {text[:40]!r}, which is not a "
                f"non-negative integer below 2**62; the model file is corrupt, re-export it")
        numbers[key] = int(text)
    return ExternalRef(tensor.name, fields.get("location", ""), numbers["offset"] or 0, numbers["length"])


def tensor_nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes the tensor's data type and shape need (None: strings and unknown types)."""
    count = math.prod(int(d) for d in tensor.dims)
    if tensor.data_type in _PACKED_BITS:
        return (count * _PACKED_BITS[tensor.data_type] + 7) // 8
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return None


def resolve(ref: ExternalRef, folder: Path) -> tuple[Path, int]:
    """(file, byte count) of one reference, after the location, range and size checks."""
    try:
        return _resolve(ref, folder, folder.resolve())
    except (OSError, ValueError) as error:  # a NUL byte, a name too long, a loop of links
        raise ModelLoadError(f"external data {ref.location[:80]!r} of tensor {ref.tensor!r} cannot be "
                             f"opened ({getattr(error, 'strerror', None) or error}); re-export the model") from None


def _resolve(ref: ExternalRef, folder: Path, root: Path) -> tuple[Path, int]:
    location = ref.location
    if not location:
        raise ModelLoadError(f"tensor {ref.tensor!r} is marked as external data but names no file; "
                             "the model file is corrupt, re-export it")
    if os.path.isabs(location) or Path(location).is_absolute():
        raise UnsafeModelError(
            f"tensor {ref.tensor!r} points to external data at an absolute path ({location!r}); "
            "only files inside the model's folder are read")
    if ".." in Path(location).parts:
        raise UnsafeModelError(
            f"tensor {ref.tensor!r} points to external data outside the model's folder "
            f"({location!r}); move the data file next to the model")
    resolved = (folder / location).resolve()
    if root != resolved and root not in resolved.parents:
        raise UnsafeModelError(
            f"external data {location!r} of tensor {ref.tensor!r} resolves outside the model's "
            "folder (symlink?); copy the data file next to the model")
    if not resolved.is_file():
        raise ModelLoadError(
            f"external data file {location!r} for tensor {ref.tensor!r} is missing; "
            f"place it in {folder} next to the model")
    file_size = resolved.stat().st_size
    length = ref.length if ref.length is not None else file_size - ref.offset
    if length < 0 or ref.offset + length > file_size:
        raise ModelLoadError(
            f"external data {location!r} is shorter than tensor {ref.tensor!r} needs "
            "(truncated file?); re-export or re-copy the model")
    return resolved, length


def check_external(model: onnx.ModelProto, folder: Path) -> dict[str, int]:
    """Validate every external reference; returns the bytes each data file contributes (the
    union of the ranges read from it, counted once per byte range), keyed by its POSIX path
    relative to ``folder``."""
    spans: dict[str, set[tuple[int, int]]] = {}
    for tensor in external_tensors(model):
        ref = parse_ref(tensor)
        _, length = resolve(ref, folder)
        needed = tensor_nbytes(tensor)
        if needed is not None and length != needed:
            raise ModelLoadError(
                f"external data of tensor {ref.tensor!r} is {length:,} bytes but its type and shape need "
                f"{needed:,}; the model file is corrupt, re-export it")
        spans.setdefault(Path(ref.location).as_posix(), set()).add((ref.offset, length))
    return {name: sum(length for _, length in ranges) for name, ranges in spans.items()}


def inline_small(model: onnx.ModelProto, folder: Path, limit: int = INLINE_BYTES) -> None:
    """Read every external tensor of at most ``limit`` bytes into the proto (references must
    have been checked by :func:`check_external`)."""
    for tensor in external_tensors(model):
        ref = parse_ref(tensor)
        path, length = resolve(ref, folder)
        if length > limit:
            continue
        with open(path, "rb") as handle:
            handle.seek(ref.offset)
            data = handle.read(length)
        if len(data) != length:
            raise ModelLoadError(f"external data {ref.location!r} changed while being read; load the model again")
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        tensor.raw_data = data


def data_files(model: onnx.ModelProto) -> list[str]:
    """The external-data files the model references (POSIX, relative), sorted, each once."""
    return sorted({Path(parse_ref(tensor).location).as_posix() for tensor in external_tensors(model)})


def hash_files(model_bytes: bytes, folder: Path, files: list[str]) -> str:
    """sha256 of the model file's bytes followed by each data file's, streamed in ``files``'
    order. A self-contained model hashes as its file alone, as it always has."""
    digest = hashlib.sha256(model_bytes)
    for name in files:
        with open(folder / name, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def sample_bytes(tensor: onnx.TensorProto, folder: str | None, windows: int = 64, width: int = 1024) -> bytes | None:
    """``windows`` spans of ``width`` bytes spread evenly over the tensor's raw bytes, whether
    they are in the proto or in a data file (a few reads, never the whole tensor): what is
    compared to find weights shared by value. None: the tensor keeps no raw bytes."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        if folder is None:
            return None
        ref = parse_ref(tensor)
        path, length = resolve(ref, Path(folder))
        starts = sorted({i * length // windows for i in range(windows)})
        with open(path, "rb") as handle:
            return b"".join(os.pread(handle.fileno(), min(width, length - start), ref.offset + start)
                            for start in starts)
    raw = tensor.raw_data
    if not raw:
        return None
    starts = sorted({i * len(raw) // windows for i in range(windows)})
    return b"".join(raw[start:start + width] for start in starts)


def external_bytes(model: onnx.ModelProto) -> int:
    """Bytes the model's external tensors hold (by their references: nothing is read)."""
    total = 0
    for tensor in external_tensors(model):
        ref = parse_ref(tensor)
        total += ref.length if ref.length is not None else (tensor_nbytes(tensor) or 0)
    return total


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every tensor of the model, external ones included: what onnxruntime holds once
    it has the weights."""
    inline = sum(t.ByteSize() for t in _get_all_tensors(model) if t.data_location != onnx.TensorProto.EXTERNAL)
    return inline + external_bytes(model)


def checker_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for the ONNX checker of an in-memory model whose tensors reference external data.

    The checker resolves external locations against the current directory when it is given a
    proto (it knows no folder), so each external tensor becomes an empty stand-in (name, type
    kept): every graph rule is still checked, and the references were checked by our own rules.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in external_tensors(copy):
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.dims[:]
        tensor.dims.append(0)
        tensor.raw_data = b""
    return copy
