"""Optimum's merged decoder (``decoder_model_merged.onnx``): one top-level ``If`` on the graph
input ``use_cache_branch`` whose branches are the decoder with and without past.

redaudit inlines the with-past branch at load (:mod:`redaudit.core.branches`), so the merged
model is scanned and pruned exactly as the flat cached export it was merged from: the same taps,
units, probe and CKA matrix. Each model here is the tiny LLaMA of ``tests/lm_exports.py`` (3
layers, with cache) merged in code (``tests/merged_models.py``).

Tolerance of the CKA comparison (1e-6): both models run the same operators on the same weights
and the same probe arrays in onnxruntime; only node order and names differ, so the features are
equal up to float32 rounding of a differently fused or ordered kernel, far below 1e-6 after the
float64 CKA (measured: 0.0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import redaudit
from redaudit.core import model as model_module
from redaudit.core.external import inline_small
from redaudit.core.prepared import PreparedModel
from redaudit.core.probe import make_probe
from redaudit.core.tap import TapError
from redaudit.errors import ProbeInputError
from redaudit.prune import prune_model

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
import lm_exports  # after the skips: it needs torch and transformers
import merged_models
import onnxruntime as ort

pytestmark = pytest.mark.torch

LAYERS = 3
#: Two outer initializers moved into the branches: a layer's weight (a weighted layer reading a
#: branch's own initializer) and the final norm's.
OWN = ("onnx::MatMul_651", "model.model.layers.0.input_layernorm.weight")  # the second: every norm's (tied)
NOTE = "inlined the If 'optimum::if' on input 'use_cache_branch' (then-branch: with past)"


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Paths: the flat cached export, its optimum-style merge (branch names as exported), a merge
    with prefixed branch names, and a merge whose branches hold initializers of their own."""
    folder = tmp_path_factory.mktemp("merged")
    flat = lm_exports.export(folder / "cached.onnx", "llama", layers=LAYERS, kv_cache=True).path
    cached = onnx.load(str(flat))
    paths = {"flat": flat}
    for key, merged in (("merged", merged_models.merge(cached, then_prefix="")),
                        ("prefixed", merged_models.merge(cached)),
                        ("own", merged_models.merge(cached, then_prefix="", own=OWN))):
        onnx.checker.check_model(merged, full_check=True)
        paths[key] = folder / f"{key}.onnx"
        onnx.save(merged, str(paths[key]))
    return paths


def _tokens(count: int = 8, length: int = 6, seed: int = 3) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(1, lm_exports.VOCAB, (count, length)).astype(np.int64)
    return {"input_ids": ids}


def _feed(path: Path, count: int = 4, length: int = 6, **extra) -> dict[str, np.ndarray]:
    """Token ids, a full mask, positions and an empty past for every input of ``path``."""
    ids = _tokens(count, length)["input_ids"]
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids),
            "position_ids": np.broadcast_to(np.arange(length, dtype=np.int64), ids.shape).copy()}
    for item in ort.InferenceSession(str(path)).get_inputs():
        if item.name.startswith("past_key_values."):
            feed[item.name] = np.zeros((count, 4, 0, 8), np.float32)
    feed.update(extra)
    return feed


def _logits(model: Path | onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = {item.name for item in session.get_inputs()}
    return session.run(["logits"], {k: v for k, v in feed.items() if k in names})[0]


def test_taps_and_units_are_the_flat_exports(exports):
    flat = PreparedModel.load(exports["flat"]).taps("block")
    for key, prefix in (("merged", ""), ("prefixed", "with_past/"), ("own", "")):
        prepared = PreparedModel.load(exports[key])
        selection = prepared.taps("block")
        assert selection.unit == flat.unit == "decoder layer"
        assert len(selection.points) == len(flat.points) == 1 + LAYERS  # the embedding, then one per layer
        assert [p.tensor for p in selection.points] == [prefix + p.tensor for p in flat.points]
        assert prepared.notes == (NOTE,)
        assert "use_cache_branch" not in {spec.name for spec in prepared.input_specs}
        assert not [node for node in prepared.proto.graph.node if node.op_type == "If"]


def test_probe_token_ids_stay_in_the_embedding_table(exports):
    prepared = PreparedModel.load(exports["merged"])
    ids = next(spec for spec in prepared.input_specs if spec.name == "input_ids")
    assert ids.vocab == lm_exports.VOCAB
    probe = make_probe(prepared.input_specs, None, 64, seed=0)
    batch = next(iter(probe.batches(64, 64)))
    assert 0 <= batch["input_ids"].min() and batch["input_ids"].max() < lm_exports.VOCAB


@pytest.mark.parametrize("key", ["merged", "prefixed", "own"])
def test_scan_matches_the_flat_export(exports, key):
    common = {"samples": 16, "cka_batch": 8, "seed": 0, "dims": {"sequence_length": 6}}
    flat = redaudit.scan(str(exports["flat"]), **common)
    merged = redaudit.scan(str(exports[key]), **common)
    assert merged.similarity.shape == flat.similarity.shape == (1 + LAYERS, 1 + LAYERS)
    assert float(np.abs(merged.similarity - flat.similarity).max()) <= 1e-6
    assert merged.warnings.count(NOTE) == 1
    assert [w for w in merged.warnings if w != NOTE] == flat.warnings


def test_inlined_graph_computes_the_with_past_branch(exports):
    prepared = PreparedModel.load(exports["own"])
    onnx.checker.check_model(prepared.proto, full_check=True)
    feed = _feed(exports["own"])
    merged = _logits(exports["own"], {**feed, "use_cache_branch": np.array([True])})
    assert np.array_equal(_logits(prepared.proto, feed), merged)
    assert np.array_equal(_logits(exports["flat"], feed), merged)


def test_branch_initializers_kept_in_external_data_stay_external(exports, tmp_path, monkeypatch):
    merged = onnx.load(str(exports["own"]))
    path = tmp_path / "external.onnx"
    onnx.save(merged, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="external.onnx.data", size_threshold=0)
    # the tiny model's tensors are all below the 64 KiB read inline at load: keep them external
    monkeypatch.setattr(model_module, "inline_small", lambda proto, folder: inline_small(proto, folder, limit=0))
    prepared = PreparedModel.load(path)
    moved = {tensor.name: tensor for tensor in prepared.proto.graph.initializer if tensor.name in OWN}
    assert set(moved) == set(OWN)
    assert all(tensor.data_location == TensorProto.EXTERNAL for tensor in moved.values())
    common = {"samples": 16, "cka_batch": 8, "seed": 0, "dims": {"sequence_length": 6}}
    flat = redaudit.scan(str(exports["flat"]), **common)
    assert float(np.abs(redaudit.scan(prepared, **common).similarity - flat.similarity).max()) <= 1e-6
    result = prune_model(prepared, remove=1, latency=False, measure_msrs=False, min_cosine=None,
                                  output=tmp_path / "pruned.onnx", **common)
    onnx.checker.check_model(str(tmp_path / "pruned.onnx"))
    assert _logits(tmp_path / "pruned.onnx", _feed(tmp_path / "pruned.onnx")).shape == (4, 6, lm_exports.VOCAB)
    assert result.params_after < result.params_before


def test_pruned_merged_decoder_is_the_flat_export_pruned_the_same_way(exports, tmp_path):
    tokens = tmp_path / "tokens.npz"
    np.savez(tokens, **_tokens())
    flat_model = onnx.load(str(exports["flat"]))
    from redaudit.prune.candidates import find_candidates

    layer = [block.name for block in find_candidates(flat_model) if "/layers.1/" in block.exit]
    outcomes = {}
    for key in ("flat", "merged"):
        output = tmp_path / f"{key}-pruned.onnx"
        result = prune_model(str(exports[key]), blocks=layer, inputs=str(tokens), latency=False,
                                      measure_msrs=False, min_cosine=None, output=output)
        outcomes[key] = (output, result)
    output, result = outcomes["merged"]
    assert result.warnings.count(NOTE) == 1
    onnx.checker.check_model(str(output), full_check=True)
    pruned = onnx.load(str(output))
    names = [item.name for item in pruned.graph.input]
    assert "use_cache_branch" not in names and "past_key_values.1.key" in names and "past_key_values.2.key" not in names
    assert not [node for node in pruned.graph.node if node.op_type == "If"]
    feed = _feed(output)
    assert np.array_equal(_logits(output, feed), _logits(outcomes["flat"][0], feed))


def test_use_cache_branch_in_inputs_must_name_the_inlined_branch(exports, tmp_path):
    tokens = _tokens()
    common = {"samples": 8, "cka_batch": 8, "seed": 0}
    flat = redaudit.scan(str(exports["flat"]), inputs=tokens, **common)
    honoured = redaudit.scan(str(exports["merged"]), inputs={**tokens, "use_cache_branch": np.array([True])},
                             **common)
    assert float(np.abs(honoured.similarity - flat.similarity).max()) <= 1e-6
    for value in (np.array([False]), np.array([True, False] * 4)):
        with pytest.raises(ProbeInputError, match="use_cache_branch") as raised:
            redaudit.scan(str(exports["merged"]), inputs={**tokens, "use_cache_branch": value}, **common)
        assert "\n" not in str(raised.value)
    for value, accepted in ((np.array([True]), True), (np.zeros(8, bool), False)):  # an .npz alike
        path = tmp_path / f"tokens-{accepted}.npz"
        np.savez(path, **tokens, use_cache_branch=value)
        if accepted:
            assert redaudit.scan(str(exports["merged"]), inputs=str(path), **common).similarity.shape == (4, 4)
        else:
            with pytest.raises(ProbeInputError, match="must be True in every sample"):
                redaudit.scan(str(exports["merged"]), inputs=str(path), **common)


def test_cli_taps_and_scan_say_it_in_one_line(exports, tmp_path):
    from click.testing import CliRunner

    from redaudit.cli.main import cli

    taps = CliRunner().invoke(cli, ["taps", str(exports["merged"])])
    assert taps.exit_code == 0, taps.output
    assert f"{1 + LAYERS} taps at level block (unit: decoder layer)" in taps.output
    assert taps.output.count("use_cache_branch") == 1
    scan = CliRunner().invoke(cli, ["scan", str(exports["merged"]), "--samples", "8", "--cka-batch", "8",
                                    "--json", str(tmp_path / "scan.json")])
    assert scan.exit_code == 0, scan.output
    assert "out of data bounds" not in scan.output
    assert scan.output.count("use_cache_branch") == 1


def _computed_condition(path: Path) -> onnx.ModelProto:
    """The merged decoder with its condition computed in the graph (any token in the mask), not a
    graph input: no value is known at load, so nothing is inlined."""
    merged = onnx.load(str(path))
    graph = merged.graph
    condition = next(item for item in graph.input if item.name == "use_cache_branch")
    graph.input.remove(condition)
    computed = [helper.make_node("ReduceSum", ["attention_mask"], ["mask_total"], keepdims=0, name="total"),
                helper.make_node("Greater", ["mask_total", "zero"], ["use_cache_branch"], name="any_token")]
    graph.initializer.append(helper.make_tensor("zero", TensorProto.INT64, [], [0]))
    nodes = [*computed, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(merged)
    return merged


def test_weighted_layers_behind_a_computed_condition_are_named(exports):
    prepared = PreparedModel.load(_computed_condition(exports["merged"]))
    assert prepared.notes == ()
    selection = prepared.taps("block")  # only the If's outputs are left: logits and presents, at op level
    hidden = [w for w in selection.warnings if "optimum::if" in w]
    assert hidden == [("If node 'optimum::if' holds 22 weighted layer(s) in its subgraph, which cannot be tapped "
                       "or pruned: its condition 'use_cache_branch' is computed in the graph, not a graph input")]
    assert not [w for w in selection.warnings if "tensors inside If/Loop/Scan" in w]  # named once, not twice


def test_no_tap_left_outside_a_body_is_an_error_naming_it():
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel())
    body = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]),
                              helper.make_node("ArgMax", ["h"], ["best"], axis=1)], "body", [],
                             [helper.make_tensor_value_info("best", TensorProto.INT64, ["N", 1])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=body, name="gate")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 1])],
                              [weight, helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(TapError, match="'gate' holds 1 weighted layer") as raised:
        PreparedModel.load(model).taps("block")
    assert "\n" not in str(raised.value) and "computed in the graph" in str(raised.value)
