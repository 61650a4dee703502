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
from google.protobuf.message import DecodeError
from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

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


def _check_external_data(model: onnx.ModelProto, folder: Path, max_bytes: int, main_size: int) -> int:
    """Validate external-data references; returns their total byte count.

    A location must be relative, must not climb out with ``..`` and, after resolving symlinks,
    must still lie inside the model's folder; the referenced range must exist in the file.
    """
    root = folder.resolve()
    total = main_size
    for tensor in _external_tensors(model):
        info = ExternalDataInfo(tensor)
        location = info.location or ""
        if not location or os.path.isabs(location) or Path(location).is_absolute():
            raise UnsafeModelError(
                f"tensor {tensor.name!r} points to external data at an absolute path ({location!r}); "
                "only files inside the model's folder are read")
        if ".." in Path(location).parts:
            raise UnsafeModelError(
                f"tensor {tensor.name!r} points to external data outside the model's folder "
                f"({location!r}); move the data file next to the model")
        target = (folder / location)
        resolved = target.resolve()
        if root != resolved and root not in resolved.parents:
            raise UnsafeModelError(
                f"external data {location!r} of tensor {tensor.name!r} resolves outside the model's "
                "folder (symlink?); copy the data file next to the model")
        if not resolved.is_file():
            raise ModelLoadError(
                f"external data file {location!r} for tensor {tensor.name!r} is missing; "
                f"place it in {folder} next to the model")
        file_size = resolved.stat().st_size
        offset = int(info.offset or 0)
        length = int(info.length) if info.length else file_size - offset
        if offset < 0 or length < 0 or offset + length > file_size:
            raise ModelLoadError(
                f"external data {location!r} is shorter than tensor {tensor.name!r} needs "
                "(truncated file?); re-export or re-copy the model")
        total += length
    if total > max_bytes:
        raise UnsafeModelError(
            f"model with its external data is {_mib(total)}, above the {_mib(max_bytes)} limit; "
            "raise it with --max-model-size if you trust this file")
    return total


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
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"cannot read external data of {model_path}: {error}") from None
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
    return proto


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
