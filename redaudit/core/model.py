"""Load an ONNX model as untrusted input.

Why our own checks: ``onnx.load`` follows external-data paths wherever they point and reads
files of any size. We read the file once, bound its size, parse it as a protobuf (never
pickle), validate every external-data reference against the model's own folder before any
byte of it is read, then run the ONNX checker.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx.external_data_helper import _get_all_tensors

from redaudit.errors import ModelLoadError, UnsafeModelError

DEFAULT_MAX_MODEL_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class LoadedModel:
    """A validated model with the identity of the file it came from."""

    proto: onnx.ModelProto
    path: str
    sha256: str
    size_bytes: int


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in _get_all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]


#: The keys onnx reads from a tensor's ``external_data``; any other key is dropped (onnx
#: ignores it too, but with a Python warning that would be a second stderr line).
_EXTERNAL_KEYS = ("location", "offset", "length", "checksum", "basepath")
_MAX_OFFSET = 2**62


@dataclass(frozen=True)
class ExternalRef:
    """One tensor's validated external-data reference."""

    tensor: str
    location: str
    offset: int
    length: int | None


def _external_ref(tensor: onnx.TensorProto) -> ExternalRef:
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


def _check_external_data(model: onnx.ModelProto, folder: Path, max_bytes: int, main_size: int) -> int:
    """Validate external-data references; returns their total byte count.

    A location must be relative, must not climb out with ``..`` and, after resolving symlinks,
    must still lie inside the model's folder; the referenced range must exist in the file.
    """
    root = folder.resolve()
    total = main_size
    for tensor in _external_tensors(model):
        ref = _external_ref(tensor)
        try:
            total += _check_location(ref, folder, root)
        except (OSError, ValueError) as error:  # a NUL byte, a name too long, a loop of links
            raise ModelLoadError(f"external data {ref.location[:80]!r} of tensor {ref.tensor!r} cannot be "
                                 f"opened ({getattr(error, 'strerror', None) or error}); re-export the model") from None
    if total > max_bytes:
        raise UnsafeModelError(
            f"model with its external data is {_mib(total)}, above the {_mib(max_bytes)} limit; "
            "raise it with --max-model-size if you trust this file")
    return total


def _check_location(ref: ExternalRef, folder: Path, root: Path) -> int:
    """The byte count of one reference, after the location and range checks."""
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
    return length


def external_data_files(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> list[str]:
    """The external-data files the model at ``path`` references, as relative POSIX paths inside
    its folder, each once; empty for a self-contained model.

    Validated as :func:`load_model` validates them (relative, no ``..``, inside the folder after
    resolving links, present, long enough, within ``max_bytes`` in all), without reading the
    data: what ``redaudit push`` packs beside the model into a bundle — only these files.
    """
    model_path = Path(path)
    if not model_path.is_file():
        raise ModelLoadError(f"model file not found: {model_path}")
    size = model_path.stat().st_size
    if size > max_bytes:
        raise UnsafeModelError(f"{model_path} is {_mib(size)}, above the {_mib(max_bytes)} limit; "
                               "raise it with --max-model-size if you trust this file")
    proto = parse_model_bytes(model_path.read_bytes(), str(model_path))
    tensors = _external_tensors(proto)
    if not tensors:
        return []
    _check_external_data(proto, model_path.parent, max_bytes, size)
    return sorted({Path(_external_ref(tensor).location).as_posix() for tensor in tensors})


def load_model(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
               check: bool = True) -> LoadedModel:
    """Read, validate and return the model at ``path``; raises a ModelLoadError subclass."""
    model_path = Path(path)
    if not model_path.exists():
        raise ModelLoadError(f"model file not found: {model_path}")
    if not model_path.is_file():
        raise ModelLoadError(f"not a file: {model_path} (pass the path of a .onnx file)")
    size = model_path.stat().st_size
    if size > max_bytes:
        raise UnsafeModelError(
            f"{model_path} is {_mib(size)}, above the {_mib(max_bytes)} limit; "
            "raise it with --max-model-size if you trust this file")
    data = model_path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    proto = parse_model_bytes(data, str(model_path))
    del data
    if _external_tensors(proto):
        _check_external_data(proto, model_path.parent, max_bytes, size)
        try:
            onnx.load_external_data_for_model(proto, str(model_path.parent))
        except (OSError, ValueError, TypeError, UnicodeError) as error:
            raise ModelLoadError(f"cannot read external data of {model_path}: "
                                 f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    if check:
        check_model(proto, str(model_path))
    return LoadedModel(proto=proto, path=str(model_path), sha256=sha256, size_bytes=size)


def parse_model_bytes(data: bytes, label: str) -> onnx.ModelProto:
    """Parse protobuf bytes into a ModelProto, turning garbage into a one-line error."""
    if not data:
        raise ModelLoadError(f"{label} is empty; expected an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelLoadError(
            f"{label} is not an ONNX model (cannot parse it as an ONNX protobuf; truncated or "
            "another format?)") from None
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.graph.node:
        raise ModelLoadError(
            f"{label} is not an ONNX model (no IR version or empty graph); "
            "export the model to ONNX first")
    where = first_invalid_string(proto)
    if where is not None:
        raise ModelLoadError(f"{label} has a {where} that is not valid UTF-8 (corrupt or crafted file); "
                             "re-export the model")
    return proto


def first_invalid_string(message: Message) -> str | None:
    """The field path of the first string field that is not valid UTF-8, or None.

    Why: ONNX's schema is proto2, whose parser accepts any bytes in a string field; Python
    then hands them out as ``bytes`` where every caller expects ``str`` (names become keys,
    paths, JSON, HTML). Walked iteratively: nesting (subgraphs in attributes) can be deep.
    """
    stack: list[tuple[Message, str]] = [(message, type(message).__name__)]
    while stack:
        current, where = stack.pop()
        for field, value in current.ListFields():
            repeated = _is_repeated(field)
            if field.type == FieldDescriptor.TYPE_STRING:
                for item in (value if repeated else (value,)):
                    if not isinstance(item, str):
                        return f"{where}.{field.name}"
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                items = value if repeated else (value,)
                stack.extend((item, f"{where}.{field.name}") for item in items)
    return None


def _is_repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def check_model(proto: onnx.ModelProto, label: str) -> None:
    """Run the ONNX checker; a rejection becomes one line naming the first problem."""
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "invalid model"
        raise ModelLoadError(f"{label} was rejected by the ONNX checker: {first_line}") from None


def model_sha256_of_proto(proto: onnx.ModelProto) -> str:
    """Hash of an in-memory model, as the hash of the bytes it would be saved as."""
    return hashlib.sha256(proto.SerializeToString()).hexdigest()
