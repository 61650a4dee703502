"""Load an ONNX model as untrusted input.

Why our own checks: ``onnx.load`` follows external-data paths wherever they point and reads
files of any size. We read the file once, bound its size, parse it as a protobuf (never
pickle), validate every external-data reference against the model's own folder before any
byte of it is read, then run the ONNX checker.

Weights are not the graph: external tensors stay references (:mod:`redaudit.core.external`),
so a 2.5 GB decoder loads as a proto of a few hundred KB; onnxruntime reads the weights itself
from :attr:`LoadedModel.folder`. Nothing here serialises the weights: a model with external
data is checked by path (the checker reads the small .onnx and stats the data files), and its
identity is the hash of its files, streamed.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from redaudit.core.external import FilesDigest, check_external, checker_copy, external_tensors, inline_small
from redaudit.core.fused import checkable, has_ort_onnx_domain_ops
from redaudit.core.hostmemory import available_bytes, format_bytes
from redaudit.errors import ModelLoadError, UnsafeModelError


class ModelTooLargeError(ModelLoadError):
    """The model's weights cannot fit in the memory available on this machine."""


@dataclass(frozen=True)
class LoadedModel:
    """A validated model with the identity of the file it came from."""

    proto: onnx.ModelProto  #: the graph; tensors above external.INLINE_BYTES stay external references
    path: str
    digest: FilesDigest  #: of the model file then each external-data file, in sorted order
    size_bytes: int  #: the model file and its external data
    folder: str | None = None  #: where external references resolve (the model's folder)

    @property
    def sha256(self) -> str:
        """The model's identity (waits for the hash of its external data, see FilesDigest)."""
        return self.digest.value


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


def _check_size(label: str, size: int, max_bytes: int | None, in_memory: bool) -> None:
    """Refuse a model above an explicit ``max_bytes`` (``--max-model-size``), and, whatever the
    limit, one whose weights cannot fit in the memory available when this process will run it
    (``in_memory``): onnxruntime holds them once."""
    if max_bytes is not None and size > max_bytes:
        raise UnsafeModelError(f"{label} is {_mib(size)}, above the {_mib(max_bytes)} limit; "
                               "raise it with --max-model-size if you trust this file")
    available = available_bytes() if in_memory else None
    if available is not None and size > available:
        raise ModelTooLargeError(f"{label} needs {format_bytes(size)} of memory for its weights but "
                                 f"{format_bytes(available)} is available; scan it on a machine with more memory")


def _read_model(path: str | os.PathLike[str], max_bytes: int | None,
                in_memory: bool) -> tuple[Path, os.stat_result, bytes, onnx.ModelProto]:
    """(path, its stat before the read, its bytes, the parsed proto)."""
    model_path = Path(path)
    if not model_path.exists():
        raise ModelLoadError(f"model file not found: {model_path}")
    if not model_path.is_file():
        raise ModelLoadError(f"not a file: {model_path} (pass the path of a .onnx file)")
    before = model_path.stat()
    _check_size(str(model_path), before.st_size, max_bytes, in_memory)
    data = model_path.read_bytes()
    return model_path, before, data, parse_model_bytes(data, str(model_path))


def _external_total(proto: onnx.ModelProto, model_path: Path, size: int, max_bytes: int | None,
                    in_memory: bool) -> tuple[list[str], int]:
    """Validate the external references; refuse the model if it is too large with them.
    Returns (data files, sorted; total bytes of the model with its external data)."""
    spans = check_external(proto, model_path.parent)
    total = size + sum(spans.values())
    _check_size(f"model with its external data ({model_path})", total, max_bytes, in_memory)
    return sorted(spans), total


def external_data_files(path: str | os.PathLike[str], max_bytes: int | None = None) -> list[str]:
    """The external-data files the model at ``path`` references, as relative POSIX paths inside
    its folder, each once; empty for a self-contained model.

    Validated as :func:`load_model` validates them (relative, no ``..``, inside the folder after
    resolving links, present, long enough, within ``max_bytes`` in all), without reading the
    data: what ``redaudit push`` packs beside the model into a bundle — only these files.
    """
    model_path, _, data, proto = _read_model(path, max_bytes, False)
    if not external_tensors(proto):
        return []
    return _external_total(proto, model_path, len(data), max_bytes, False)[0]


def load_model(path: str | os.PathLike[str], max_bytes: int | None = None, check: bool = True,
               will_run: bool = True) -> LoadedModel:
    """Read, validate and return the model at ``path``; raises a ModelLoadError subclass.

    External tensors stay references (see :mod:`redaudit.core.external`); ``max_bytes`` None
    (the default) sets no bound of its own. A model whose weights cannot fit in the memory
    available is refused unless ``will_run`` is False (a service's upload check validates a
    model that a worker, maybe elsewhere, will run).
    """
    model_path, before, data, proto = _read_model(path, max_bytes, will_run)
    files: list[str] = []
    total = len(data)
    if external_tensors(proto):
        files, total = _external_total(proto, model_path, len(data), max_bytes, will_run)
        inline_small(proto, model_path.parent)
    digest = FilesDigest(data, model_path.parent, files)  # external data: hashed in the background
    del data
    if check:
        if files and not has_ort_onnx_domain_ops(proto):  # the checker reads the file itself: a proto with
            _check_by_path(model_path, before)  # external tensors would need its folder (else: stand-ins)
        else:
            check_model(proto, str(model_path))
    return LoadedModel(proto=proto, path=str(model_path), digest=digest, size_bytes=total,
                       folder=str(model_path.parent.resolve()))


def _check_by_path(model_path: Path, before: os.stat_result) -> None:
    """The ONNX checker on the file (it never serialises the weights); the file must be the one
    we parsed, so a swap between our read and its read is refused."""
    try:
        onnx.checker.check_model(str(model_path))
    except (onnx.checker.ValidationError, ValueError) as error:
        raise ModelLoadError(f"{model_path} was rejected by the ONNX checker: {_first_line(error)}") from None
    after = model_path.stat()
    if (before.st_ino, before.st_size, before.st_mtime_ns) != (after.st_ino, after.st_size, after.st_mtime_ns):
        raise ModelLoadError(f"{model_path} changed while being loaded; load it again")


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


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else "invalid model"


def check_model(proto: onnx.ModelProto, label: str) -> None:
    """Run the ONNX checker on an in-memory model; a rejection becomes one line naming the
    first problem. Tensors referencing external data are checked as stand-ins (see
    :func:`redaudit.core.external.checker_copy`), so no weight is serialised."""
    try:
        with checkable(proto) as model:  # onnxruntime's SimplifiedLayerNormalization (redaudit.core.fused)
            onnx.checker.check_model(checker_copy(model) if external_tensors(model) else model)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise ModelLoadError(f"{label} was rejected by the ONNX checker: {_first_line(error)}") from None


def model_sha256_of_proto(proto: onnx.ModelProto) -> str:
    """Hash of an in-memory model, as the hash of the bytes it would be saved as (its external
    tensors as their references)."""
    return hashlib.sha256(proto.SerializeToString()).hexdigest()
