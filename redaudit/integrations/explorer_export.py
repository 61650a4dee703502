"""``redaudit export model-explorer``: read scans (JSON reports or history scan ids), check that
the model file is the one scanned, build the node data (:mod:`.model_explorer`) and write it.

The model file matters: node ids come from the adapter's conversion of that very file, so a file
that changed since the scan (other sha256) is refused rather than overlaid with wrong numbers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redaudit.core.model import load_model
from redaudit.core.spec import DEFAULT_MAX_MODEL_BYTES
from redaudit.integrations.model_explorer import (METRICS, OverlayError, ScannedLayers, adapter_graph,
                                                  diff_node_data, scan_node_data, sibling_paths)


def load_scanned(source: str | Path, db: Any = None) -> ScannedLayers:
    """A scan from a JSON report path or, for a number that is not a file, a history scan id."""
    text = str(source)
    if text.isdigit() and not Path(text).exists():
        from redaudit.history.store import load_scan

        return ScannedLayers.from_stored(load_scan(db, int(text)))
    from redaudit.report.json_report import read_json

    return ScannedLayers.from_result(read_json(source))


def scanned_model(scanned: ScannedLayers, model: str | Path | None = None,
                  max_bytes: int | None = DEFAULT_MAX_MODEL_BYTES) -> Any:
    """The scanned ONNX file, validated (size, external data, checker) and proven the same bytes."""
    path = Path(model) if model is not None else Path(scanned.model_path)
    loaded = load_model(path, max_bytes=max_bytes)
    if loaded.sha256 != scanned.sha256:
        raise OverlayError(f"{path} is not the file the scan measured (sha256 "
                           f"{loaded.sha256[:12]}, scanned {scanned.sha256[:12]}); pass --model PATH of "
                           f"the scanned file")
    return loaded


def _encode(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False) + "\n").encode("utf-8")


def scan_files(scanned: ScannedLayers, model: str | Path | None = None,
               max_bytes: int | None = DEFAULT_MAX_MODEL_BYTES) -> dict[str, dict]:
    """Metric key → node data for ``scanned`` on the graph of its model file."""
    from redaudit.prune.candidates import find_candidates

    loaded = scanned_model(scanned, model, max_bytes)
    graph = adapter_graph(loaded.path)
    return scan_node_data(scanned, graph, find_candidates(loaded.proto))


@dataclass(frozen=True)
class Exported:
    """The model file the node data belongs to and the files written (the viewer's arguments)."""

    model: Path
    files: tuple[Path, ...]


def export_scan(source: str | Path, output: str | Path, *, db: Any = None, model: str | Path | None = None,
                max_bytes: int | None = DEFAULT_MAX_MODEL_BYTES) -> Exported:
    """Write one node data file per metric: ``output`` (redundancy) and ``output``'s stem plus
    ``.most-similar-cka`` / ``.prune-cka`` beside it. All files or none (staged, then renamed)."""
    from redaudit.atomic import staged_files

    scanned = load_scanned(source, db)
    files = scan_files(scanned, model, max_bytes)
    paths = sibling_paths(output, [key for key, _ in METRICS])
    written = []
    with staged_files() as staged:
        for key, data in files.items():
            staged.stage(paths[key], _encode(data))
            written.append(paths[key])
    return Exported(Path(model or scanned.model_path), tuple(written))


def export_diff(before: str | Path, after: str | Path, output: str | Path, *, db: Any = None,
                model: str | Path | None = None, force: bool = False,
                max_bytes: int | None = DEFAULT_MAX_MODEL_BYTES) -> Exported:
    """Write the per-layer redundancy change ``before`` → ``after`` on ``after``'s graph. Scans
    measured with settings that change MSRS are refused unless ``force``, as ``redaudit diff``
    refuses them."""
    from redaudit.atomic import write_bytes
    from redaudit.history.diff import config_differences, refuse_if_incompatible

    first, second = load_scanned(before, db), load_scanned(after, db)
    if not force:
        refuse_if_incompatible(config_differences(first.config, second.config),
                               f"{first.label} and {second.label}")
    loaded = scanned_model(second, model, max_bytes)
    data = diff_node_data(first, second, adapter_graph(loaded.path))
    return Exported(Path(loaded.path), (write_bytes(output, _encode(data)),))
