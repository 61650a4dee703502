"""Model Explorer node data: a scan's per-layer numbers as overlays on the ONNX graph.

Google's Model Explorer (``ai-edge-model-explorer``) shows an ONNX model through the
``model-explorer-onnx`` adapter and colours nodes from "custom node data" files: JSON keyed by
graph id, then by node id, one number per node, plus a gradient (``model_explorer/
node_data_builder.py`` in the package is the format's reference). One file carries one metric,
so a scan becomes one file per metric (:data:`METRICS`).

Node ids are the adapter's own: we run its conversion on the scanned file and map each tapped
tensor to the node whose outputs carry it (``outputsMetadata`` ``__tensor_tag``). Guessing from
tensor names would be wrong for nodes without a name (the adapter calls them ``<node_i>``) and
for tensors that are not named after their node (every tf2onnx and torch export).

The adapter runs only when an overlay is asked for: importing it takes seconds (Flask, the
viewer's server) and it is an optional extra (``redaudit[explorer]``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from redaudit.errors import RedauditError
from redaudit.integrations import require

#: One file per metric: (key, name shown in the viewer). The first is the main overlay.
METRICS = (
    ("redundancy", "redaudit: redundancy (soft count of layers more than ε alike)"),
    ("most-similar-cka", "redaudit: CKA to the most similar other layer"),
    ("prune-cka", "redaudit: prune candidate, CKA(block input, block output)"),
)
#: Low → high: pale, then orange, then red, so the redundant regions stand out.
GRADIENT = ({"stop": 0, "bgColor": "#f4f8fb"}, {"stop": 0.5, "bgColor": "#fdae61"},
            {"stop": 1, "bgColor": "#d7191c", "textColor": "#ffffff"})
#: A diff's colours: less redundant (blue) ← unchanged (white) → more redundant (red).
DECREASE, UNCHANGED, INCREASE = (33, 102, 172), (255, 255, 255), (215, 25, 28)


class OverlayError(RedauditError):
    """The overlay cannot be built for this model (a tapped tensor has no node in the graph)."""


@dataclass(frozen=True)
class AdapterGraph:
    """The main graph as the ONNX adapter converts it: its id, every node id, and which node
    produces each tensor."""

    graph_id: str
    node_ids: frozenset[str]
    node_of_tensor: Mapping[str, str]


def adapter_graph(model_path: str | Path) -> AdapterGraph:
    """Run model-explorer-onnx's conversion of ``model_path`` (what the viewer shows) and index
    its main graph. The caller validates the file first (:func:`redaudit.core.model.load_model`):
    the adapter parses it without our size and external-data policy."""
    require("model_explorer_onnx", "explorer", "a Model Explorer overlay")
    from model_explorer_onnx.main import ONNXAdapter

    graphs = ONNXAdapter().convert(str(model_path), {})["graphs"]
    main = graphs[0]
    producers: dict[str, str] = {}
    for node in main.nodes:
        for metadata in node.outputsMetadata:
            for attr in metadata.attrs:
                if attr.key == "__tensor_tag":
                    producers.setdefault(attr.value, node.id)
    return AdapterGraph(main.id, frozenset(node.id for node in main.nodes), producers)


@dataclass(frozen=True)
class ScannedLayers:
    """What an overlay needs from one scan, read from a JSON report or from the history.
    ``config`` is the comparability key (``redaudit diff`` refuses scans whose keys differ)."""

    model_path: str
    sha256: str
    names: tuple[str, ...]
    redundancy: tuple[float | None, ...]
    most_similar_cka: tuple[float | None, ...]
    similarity: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @classmethod
    def from_result(cls, result: Any) -> ScannedLayers:
        from redaudit.history.diff import config_of_result

        rows = result.layer_rows()
        return cls(result.model.path, result.model.sha256, tuple(row.name for row in rows),
                   tuple(row.redundancy for row in rows), tuple(row.most_similar_cka for row in rows),
                   np.asarray(result.similarity, dtype=np.float64), config_of_result(result),
                   Path(result.model.path).name)

    @classmethod
    def from_stored(cls, stored: Any) -> ScannedLayers:
        layers = sorted(stored.layers, key=lambda layer: layer.position)
        order = {name: i for i, name in enumerate(stored.layer_order)}
        names = tuple(layer.name for layer in layers)
        matrix = np.asarray(stored.similarity, dtype=np.float64)
        if stored.layer_order and tuple(stored.layer_order) != names and matrix.size:
            index = [order[name] for name in names]
            matrix = matrix[np.ix_(index, index)]
        return cls(stored.version.path, stored.version.sha256, names,
                   tuple(layer.redundancy for layer in layers), tuple(layer.most_similar_cka for layer in layers),
                   matrix, dict(stored.summary.config), stored.display)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def node_data(graph_id: str, name: str, values: Mapping[str, float | None],
              colours: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One node data file: ``{graph_id: {name, results: {node_id: {value}}, gradient}}``.
    Nodes without a finite value are left out (the viewer leaves them uncoloured). With
    ``colours`` each node carries its own ``bgColor`` (the viewer's gradient spans min..max,
    so a diverging scale centred on 0 has to be given node by node)."""
    results: dict[str, dict[str, Any]] = {}
    for node, value in values.items():
        number = _finite(value)
        if number is None:
            continue
        results[node] = {"value": number}
        if colours is not None:
            results[node]["bgColor"] = colours[node]
    graph: dict[str, Any] = {"name": name, "results": results}
    if colours is None:
        graph["gradient"] = [dict(stop) for stop in GRADIENT]
    return {graph_id: graph}


def node_ids(graph: AdapterGraph, names: Sequence[str], what: str) -> dict[str, str]:
    """Tensor name → adapter node id for every tapped layer; a layer with no node is an error
    (the file is not the one scanned, or the adapter changed how it names nodes)."""
    missing = [name for name in names if name not in graph.node_of_tensor]
    if missing:
        raise OverlayError(f"{len(missing)} tapped tensor(s) of {what} are not node outputs in Model "
                           f"Explorer's graph (first: {missing[0]}); is this the scanned model file?")
    return {name: graph.node_of_tensor[name] for name in names}


def prune_scores(scanned: ScannedLayers, blocks: Sequence[Any]) -> dict[str, float]:
    """CKA(block input, block output) from the scan's own matrix, for each removable block whose
    input and output were both tapped (at ``--level block`` that is every block after the stem:
    its input is the previous IR). Keyed by the block's output tensor."""
    position = {name: i for i, name in enumerate(scanned.names)}
    scores: dict[str, float] = {}
    for block in blocks:
        first, second = position.get(block.entry), position.get(block.exit)
        if first is not None and second is not None:
            value = _finite(scanned.similarity[first, second])
            if value is not None:
                scores[block.exit] = value
    return scores


def scan_node_data(scanned: ScannedLayers, graph: AdapterGraph, blocks: Sequence[Any] = ()) -> dict[str, dict]:
    """Metric key → node data file for one scan (``prune-cka`` only where a block has a score)."""
    ids = node_ids(graph, scanned.names, scanned.label or scanned.model_path)
    per_metric = {
        "redundancy": dict(zip(scanned.names, scanned.redundancy)),
        "most-similar-cka": dict(zip(scanned.names, scanned.most_similar_cka)),
        "prune-cka": prune_scores(scanned, blocks),
    }
    out = {}
    for key, name in METRICS:
        values = {ids[tensor]: value for tensor, value in per_metric[key].items()}
        if key == "prune-cka" and not values:
            continue
        out[key] = node_data(graph.graph_id, name, values)
    return out


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(channel):02x}" for channel in rgb)


def diverging_colour(value: float, scale: float) -> str:
    """White at 0, blue for decreases and red for increases, full colour at ±``scale``."""
    share = 0.0 if scale <= 0 else max(-1.0, min(1.0, value / scale))
    end = INCREASE if share > 0 else DECREASE
    return _hex([u + abs(share) * (e - u) for u, e in zip(UNCHANGED, end)])


def layer_deltas(before: ScannedLayers, after: ScannedLayers) -> dict[str, float | None]:
    """Redundancy after − before for the layers both scans tapped, matched as ``redaudit diff``
    matches them (:func:`redaudit.history.diff.changed_layers`); None where either is undefined."""
    from redaudit.history.diff import changed_layers

    changes = changed_layers(dict(zip(before.names, map(_finite, before.redundancy))),
                             dict(zip(after.names, map(_finite, after.redundancy))))
    return {change.name: _finite(change.delta) for change in changes}


def diff_node_data(before: ScannedLayers, after: ScannedLayers, graph: AdapterGraph) -> dict[str, dict]:
    """The per-layer redundancy change, drawn on ``after``'s graph."""
    deltas = layer_deltas(before, after)
    ids = node_ids(graph, list(deltas), after.label or after.model_path)
    values = {ids[name]: delta for name, delta in deltas.items()}
    scale = max((abs(v) for v in values.values() if v is not None), default=0.0)
    colours = {node: diverging_colour(v, scale) for node, v in values.items() if v is not None}
    name = f"redaudit: redundancy change {before.label} → {after.label}"
    return node_data(graph.graph_id, name, values, colours)


def sibling_paths(output: str | Path, keys: Sequence[str]) -> dict[str, Path]:
    """``overlay.json`` for the first metric, ``overlay.<metric>.json`` beside it for the others."""
    path = Path(output)
    suffix = path.suffix or ".json"
    return {key: path if i == 0 else path.with_name(f"{path.stem}.{key}{suffix}")
            for i, key in enumerate(keys)}
