"""ScanResult ⇄ JSON: the machine-readable scan report (schema version 1).

The JSON is strict (``allow_nan=False``): JSON has no NaN or infinity, so every non-finite
float (a degenerate layer pair, a NaN batch, log2 of an MSRS of 0) is written as ``null`` and
read back as NaN. ``scan_from_dict`` rebuilds a :class:`ScanResult` from the raw fields only;
the derived fields (``redundancy``, ``most_similar``, ``top_pairs`` ...) are recomputed from the
matrix and config, so a reloaded report can never disagree with its own similarity matrix.
"""
from __future__ import annotations

import json
import math

from pathlib import Path
from typing import Any

import numpy as np

from redaudit import atomic
from redaudit.errors import RedauditError
from redaudit.core.result import LayerInfo, ModelInfo, ScanResult
from redaudit.core.spec import ScanConfig
from redaudit.report.reading import reading_of_result

SCHEMA_VERSION = 1
#: How many pairs ``top_pairs`` lists in the JSON report.
TOP_PAIRS = 10


class ReportFormatError(RedauditError):
    """A JSON report cannot be read back: not JSON, wrong schema version or missing fields."""


def _float_or_none(value: Any) -> float | None:
    """A JSON-safe float: non-finite values (NaN, ±inf) become ``None``."""
    number = float(value)
    return number if math.isfinite(number) else None


def _float_from(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _shape_to_json(shape: tuple[int | str, ...]) -> list[int | str]:
    return [dim if isinstance(dim, str) else int(dim) for dim in shape]


def config_to_json(config: ScanConfig) -> dict[str, Any]:
    """``ScanConfig.to_dict()`` with ``cka_batch=None`` written as ``"all"`` (as the CLI spells it)."""
    data = config.to_dict()
    if data["cka_batch"] is None:
        data["cka_batch"] = "all"
    return data


def config_from_json(data: dict[str, Any]) -> ScanConfig:
    """Inverse of :func:`config_to_json`; unknown keys (from newer writers) are ignored."""
    return ScanConfig.from_dict(data, ignore_unknown=True)


def _model_to_json(model: ModelInfo) -> dict[str, Any]:
    return {
        "path": model.path,
        "sha256": model.sha256,
        "size_bytes": int(model.size_bytes),
        "parameter_count": int(model.parameter_count),
        "opset": int(model.opset),
        "producer": model.producer,
        "inputs": [
            {"name": name, "dtype": dtype, "shape": _shape_to_json(shape)}
            for name, dtype, shape in model.inputs
        ],
    }


def _model_from_json(data: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        path=data["path"],
        sha256=data["sha256"],
        size_bytes=int(data["size_bytes"]),
        parameter_count=int(data["parameter_count"]),
        opset=int(data["opset"]),
        producer=data["producer"],
        inputs=tuple(
            (item["name"], item["dtype"], tuple(item["shape"])) for item in data["inputs"]
        ),
    )


def _matrix_to_json(matrix: np.ndarray) -> list[list[float | None]]:
    return [[_float_or_none(value) for value in row] for row in np.asarray(matrix, dtype=np.float64)]


def _layers_to_json(result: ScanResult) -> list[dict[str, Any]]:
    """One object per layer from the shared per-layer view (:meth:`ScanResult.layer_rows`):
    static ``shape`` (empty when typing did not know the rank), ``runtime_shape`` (``N`` on the
    batch axis, ``?`` only where a dim varied), ``reduced_axes`` and the ``layout`` decision."""
    return [{
        "name": row.name,
        "op": row.op,
        "shape": _shape_to_json(row.shape),
        "runtime_shape": _shape_to_json(row.runtime_shape),
        "reduced_axes": [int(axis) for axis in row.reduced_axes],
        "layout": row.layout,
        "layout_source": row.layout_source,
        "node": row.node,
        "redundancy": row.redundancy,
        "most_similar": row.most_similar,
        "most_similar_cka": row.most_similar_cka,
        "issue": row.issue,
        "unit": layer.unit,
    } for row, layer in zip(result.layer_rows(), result.layers)]


def scan_to_dict(result: ScanResult) -> dict[str, Any]:
    """The report as plain JSON-ready data (no NaN: non-finite floats are ``None``).

    ``msrs_ci`` (the bootstrap interval over batches) and ``reading`` (the scale and the sentence
    of :mod:`redaudit.report.reading`) were added within schema version 1: derived fields that
    readers may ignore and :func:`scan_from_dict` recomputes. ``unit`` (what one IR is, and per
    layer what that IR is: docs/taps.md) was added within version 1 too; older reports read as "".
    ``micro_batch`` (samples per onnxruntime run, chosen from the memory budget; 0 when unknown)
    likewise: older reports read back as 0."""
    names = result.layer_names
    reading = reading_of_result(result)
    return {
        "schema_version": SCHEMA_VERSION,
        "redaudit_version": result.redaudit_version,
        "msrs": _float_or_none(result.msrs),
        "msrs_std": _float_or_none(result.msrs_std),
        "log2_msrs": _float_or_none(result.log2_msrs) if math.isfinite(result.msrs) else None,
        "msrs_batches": [_float_or_none(value) for value in np.ravel(result.msrs_batches)],
        "msrs_ci": reading.interval.to_dict(),
        "reading": {key: _float_or_none(value) if isinstance(value, float) else value
                    for key, value in reading.to_dict().items()},
        "unit": result.unit,
        "layers": _layers_to_json(result),
        "similarity": _matrix_to_json(result.similarity),
        "consecutive_similarity": [
            _float_or_none(value) for value in result.consecutive_similarity()
        ] if names else [],
        "top_pairs": [
            {"a": names[i], "b": names[j], "cka": float(cka)}
            for i, j, cka in result.top_pairs(TOP_PAIRS) if math.isfinite(cka)
        ],
        "samples": int(result.samples),
        "batches": int(result.batches),
        "dropped_samples": int(result.dropped_samples),
        "nan_batches": int(result.nan_batches),
        "inputs": {"real": bool(result.inputs_real), "hash": result.input_hash},
        "model": _model_to_json(result.model),
        "config": config_to_json(result.config),
        "provider": result.provider,
        "backend": result.backend,
        "micro_batch": int(result.micro_batch),
        "timings": {key: _float_or_none(value) for key, value in result.timings.items()},
        "warnings": list(result.warnings),
    }


def scan_from_dict(data: dict[str, Any]) -> ScanResult:
    """Rebuild a ScanResult from :func:`scan_to_dict` output (or a loaded JSON report).

    Raises :class:`ReportFormatError` when the schema version is not 1 or a field is missing.
    """
    if not isinstance(data, dict):
        raise ReportFormatError("scan report must be a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ReportFormatError(
            f"unsupported scan report schema_version {version!r} (this redaudit reads {SCHEMA_VERSION})")
    try:
        layers = [
            LayerInfo(name=item["name"], op=item["op"], shape=tuple(item["shape"]), node=item.get("node", ""),
                      runtime_shape=tuple(item.get("runtime_shape", ())),
                      reduced_axes=tuple(int(axis) for axis in item.get("reduced_axes", ())),
                      layout=item.get("layout"), layout_source=item.get("layout_source", ""),
                      unit=item.get("unit", ""))
            for item in data["layers"]
        ]
        size = len(layers)
        similarity = np.array(
            [[_float_from(value) for value in row] for row in data["similarity"]], dtype=np.float64
        ).reshape(size, size)
        return ScanResult(
            model=_model_from_json(data["model"]),
            layers=layers,
            similarity=similarity,
            msrs=_float_from(data["msrs"]),
            msrs_std=_float_from(data["msrs_std"]),
            msrs_batches=np.array([_float_from(v) for v in data["msrs_batches"]], dtype=np.float64),
            config=config_from_json(data["config"]),
            samples=int(data["samples"]),
            batches=int(data["batches"]),
            dropped_samples=int(data["dropped_samples"]),
            nan_batches=int(data["nan_batches"]),
            inputs_real=bool(data["inputs"]["real"]),
            input_hash=data["inputs"]["hash"],
            provider=data["provider"],
            backend=data["backend"],
            redaudit_version=data["redaudit_version"],
            timings={key: _float_from(value) for key, value in data.get("timings", {}).items()},
            layer_issues={item["name"]: item["issue"] for item in data["layers"] if item.get("issue")},
            warnings=list(data.get("warnings", [])),
            unit=data.get("unit", ""),
            micro_batch=int(data.get("micro_batch", 0)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ReportFormatError(f"scan report is incomplete or malformed: {error!r}") from error


def _format(value: Any, indent: str, level: int) -> str:
    """Indented JSON in which lists of scalars (shapes, matrix rows) stay on one line, so an
    L × L matrix takes L lines rather than L² and the file stays readable in a diff."""
    def flat(item: Any) -> str:
        return json.dumps(item, allow_nan=False, ensure_ascii=False)

    inner = indent * (level + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{flat(str(key))}: {_format(item, indent, level + 1)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent * level + "}"
    if isinstance(value, list) and value and any(isinstance(item, (dict, list)) for item in value):
        items = [inner + _format(item, indent, level + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + indent * level + "]"
    return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(", ", ": "))


def dumps(result: ScanResult) -> str:
    """Strict JSON text of the report: every non-finite float, wherever a field carries one
    (``_float_or_none`` covers the known ones; :func:`finite_only` the rest), is ``null``."""
    return _format(finite_only(scan_to_dict(result)), "  ", 0)


def finite_only(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf, numpy's included) replaced by None."""
    if isinstance(value, dict):
        return {key: finite_only(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_only(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(result: ScanResult, path: str | Path) -> Path:
    """Write the report as UTF-8 strict JSON; returns the path written."""
    text = dumps(result) + "\n"  # rendered first: a result that cannot be written leaves no file
    atomic.write_text(path, text)
    return Path(path)


def read_json(path: str | Path) -> ScanResult:
    """Load a report written by :func:`write_json`; user-facing errors for bad files."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise ReportFormatError(f"cannot read scan report {source}: {error.strerror}") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportFormatError(f"{source} is not valid JSON: {error.msg} (line {error.lineno})") from error
    return scan_from_dict(data)
