"""Model Explorer node data: every key is a node id of the ONNX adapter's own conversion of the
scanned file (generated models, one without node names, and magika's real model), the numbers
are the scan's, and the CLI writes them from a report, a history scan id and as a diff."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

import redaudit
from redaudit.cli.main import cli
from redaudit.core.spec import ScanSpec
from redaudit.integrations.model_explorer import (ScannedLayers, adapter_graph, diverging_colour,
                                                  layer_deltas, scan_node_data)
from redaudit.prune.candidates import find_candidates
from redaudit.report.json_report import write_json
from tests import models

pytest.importorskip("model_explorer_onnx")
SPEC = ScanSpec(samples=128, cka_batch=64)


def _scan(path: Path, **options):
    return redaudit.scan(str(path), SPEC.with_options(**options) if options else SPEC)


def _keys(data: dict) -> tuple[str, set[str]]:
    (graph_id, graph), = data.items()
    return graph_id, set(graph["results"])


def test_overlay_keys_are_the_adapters_nodes_of_a_residual_cnn(save_model):
    path = save_model(models.residual_cnn(blocks=3))
    result = _scan(path)
    graph = adapter_graph(path)
    files = scan_node_data(ScannedLayers.from_result(result), graph, find_candidates(onnx.load(path)))
    assert set(files) == {"redundancy", "most-similar-cka", "prune-cka"}
    for data in files.values():
        graph_id, keys = _keys(data)
        assert graph_id == graph.graph_id and keys <= graph.node_ids
    # the tapped IRs are the stem's and each block's final Relu (nodes named in models.residual_cnn)
    _, keys = _keys(files["redundancy"])
    assert keys == {"stem/relu", "block0/relu2", "block1/relu2", "block2/relu2"}
    rows = {graph.node_of_tensor[row.name]: row for row in result.layer_rows()}
    values = files["redundancy"][graph.graph_id]["results"]
    for node, entry in values.items():
        assert entry["value"] == pytest.approx(rows[node].redundancy)
    similar = files["most-similar-cka"][graph.graph_id]["results"]
    assert similar["block1/relu2"]["value"] == pytest.approx(rows["block1/relu2"].most_similar_cka)


def test_prune_score_is_what_prune_measures(save_model):
    """The overlay's prune score is CKA(block input, output) from the scan's matrix; prune's
    cka policy measures it again with explicit taps on the same probe: the same numbers."""
    from redaudit.core.prepared import PreparedModel
    from redaudit.prune.api import probe_arrays
    from redaudit.prune.similarity import block_similarity

    path = save_model(models.residual_cnn(blocks=3, zero_branch=1))
    result = _scan(path)
    graph = adapter_graph(path)
    blocks = find_candidates(onnx.load(path))
    scores = scan_node_data(ScannedLayers.from_result(result), graph, blocks)["prune-cka"][graph.graph_id]["results"]
    prepared = PreparedModel.load(str(path))
    measured, _ = block_similarity(prepared, blocks, SPEC, probe_arrays(prepared, SPEC)[0])
    expected = {graph.node_of_tensor[block.exit]: value for block, value in zip(blocks, measured)}
    assert set(scores) == set(expected)
    for node, entry in scores.items():
        assert entry["value"] == pytest.approx(expected[node], abs=1e-6)
    assert scores["block1/relu2"]["value"] > 0.99  # zeroed branch: the block's output is its input


def test_unnamed_nodes_get_the_adapters_ids(save_model):
    """Nameless nodes get names from the adapter's passes (onnx_ir's ``node``, ``node_1``, ...,
    in its own order): ids come from its conversion, never from tensor or node names."""
    model = models.residual_cnn(blocks=2)
    for node in model.graph.node:
        node.name = ""
    path = save_model(model)
    result = _scan(path)
    graph = adapter_graph(path)
    files = scan_node_data(ScannedLayers.from_result(result), graph)
    _, keys = _keys(files["redundancy"])
    assert len(keys) == len(result.layers) and keys <= graph.node_ids
    assert all(key.startswith("node") for key in keys) and not keys & set(result.layer_names)
    assert "prune-cka" not in files  # no candidate blocks given


@pytest.mark.slow
def test_magika_overlay_keys_are_nodes_of_its_graph(magika_model):
    result = redaudit.scan(str(magika_model), ScanSpec(samples=64, cka_batch=32, int_range=(0, 257)))
    graph = adapter_graph(magika_model)
    files = scan_node_data(ScannedLayers.from_result(result), graph, find_candidates(onnx.load(magika_model)))
    for data in files.values():
        graph_id, keys = _keys(data)
        assert graph_id == graph.graph_id == "tf2onnx" and keys <= graph.node_ids
    _, keys = _keys(files["redundancy"])
    assert len(keys) == len(result.layers)
    # tf2onnx names tensors NODE:0; the ids are the nodes, found through the adapter's metadata
    assert {f"{key}:0" for key in keys} == set(result.layer_names)


def test_diverging_colours():
    assert diverging_colour(0.0, 1.0) == "#ffffff"
    assert diverging_colour(1.0, 1.0) == "#d7191c" and diverging_colour(-2.0, 1.0) == "#2166ac"
    assert diverging_colour(0.5, 0.0) == "#ffffff"


def test_cli_from_report_history_and_diff(runner, tmp_path, save_model):
    before_path = save_model(models.residual_cnn(blocks=3), "before.onnx")
    after_path = save_model(models.residual_cnn(blocks=3, zero_branch=1), "after.onnx")
    before, after = _scan(before_path), _scan(after_path)
    write_json(after, tmp_path / "after.json")
    write_json(before, tmp_path / "before.json")
    db = f"sqlite:///{tmp_path / 'h.db'}"
    from redaudit.history import record_scan

    scan_id = record_scan(db, after, "cnn")

    out = runner.invoke(cli, ["export", "model-explorer", str(tmp_path / "after.json"), "-o", str(tmp_path / "ov.json")])
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith(f"model-explorer {tmp_path / 'after.onnx'} --extensions=model_explorer_onnx ")
    assert out.stdout.strip().endswith(
        f"--node_data_paths={tmp_path / 'ov.json'},{tmp_path / 'ov.most-similar-cka.json'},{tmp_path / 'ov.prune-cka.json'}")
    from_report = json.loads((tmp_path / "ov.json").read_text())

    out = runner.invoke(cli, ["export", "model-explorer", str(scan_id), "--db", db, "-o", str(tmp_path / "h.json")])
    assert out.exit_code == 0, out.output
    from_history = json.loads((tmp_path / "h.json").read_text())
    graph_id = adapter_graph(after_path).graph_id
    stored, fresh = from_history[graph_id]["results"], from_report[graph_id]["results"]
    assert stored.keys() == fresh.keys()
    for node in stored:  # the history stores redundancy as float32-rounded numbers
        assert stored[node]["value"] == pytest.approx(fresh[node]["value"], rel=1e-5, abs=1e-9)

    out = runner.invoke(cli, ["export", "model-explorer", "--diff", str(tmp_path / "before.json"),
                              str(tmp_path / "after.json"), "-o", str(tmp_path / "diff.json")])
    assert out.exit_code == 0, out.output
    diff = json.loads((tmp_path / "diff.json").read_text())[graph_id]
    expected = layer_deltas(ScannedLayers.from_result(before), ScannedLayers.from_result(after))
    rows = adapter_graph(after_path).node_of_tensor
    plain = {row.name: row.redundancy for row in after.layer_rows()}
    old = {row.name: row.redundancy for row in before.layer_rows()}
    assert {rows[name]: plain[name] - old[name] for name in expected} == pytest.approx(
        {node: entry["value"] for node, entry in diff["results"].items()})
    assert "gradient" not in diff and all(entry["bgColor"].startswith("#") for entry in diff["results"].values())
    biggest = max(diff["results"].values(), key=lambda entry: abs(entry["value"]))
    assert biggest["bgColor"] in ("#d7191c", "#2166ac")


def test_cli_refuses_a_changed_model_and_writes_nothing(runner, tmp_path, save_model):
    path = save_model(models.residual_cnn(blocks=2))
    write_json(_scan(path), tmp_path / "r.json")
    onnx.save(models.residual_cnn(blocks=2, seed=1), str(path))  # the file changed since the scan
    out = runner.invoke(cli, ["export", "model-explorer", str(tmp_path / "r.json"), "-o", str(tmp_path / "ov.json")])
    assert out.exit_code == 2
    assert out.stderr.count("\n") == 1 and "is not the file" in out.stderr and "--model" in out.stderr
    assert not list(tmp_path.glob("ov*"))
    out = runner.invoke(cli, ["export", "model-explorer", "-o", str(tmp_path / "ov.json")])
    assert out.exit_code == 2 and "give one scan" in out.stderr


def test_cli_diff_refuses_incompatible_settings_and_a_missing_extra(runner, tmp_path, save_model, monkeypatch):
    path = save_model(models.residual_cnn(blocks=2))
    write_json(_scan(path), tmp_path / "a.json")
    write_json(_scan(path, epsilon=0.5), tmp_path / "b.json")
    args = ["export", "model-explorer", "--diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
            "-o", str(tmp_path / "d.json")]
    out = runner.invoke(cli, args)
    assert out.exit_code == 2 and "epsilon" in out.stderr and "--force" in out.stderr
    assert not (tmp_path / "d.json").exists()
    assert runner.invoke(cli, [*args, "--force"]).exit_code == 0 and (tmp_path / "d.json").exists()

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "model_explorer_onnx" else real(name, *a))
    out = runner.invoke(cli, ["export", "model-explorer", str(tmp_path / "a.json"), "-o", str(tmp_path / "x.json")])
    assert out.exit_code == 2
    assert out.stderr == "error: export model-explorer needs the explorer extra: pip install 'redaudit[explorer]'\n"
