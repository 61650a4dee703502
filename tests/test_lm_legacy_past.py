"""Decoders exported with the legacy GPT-2 cache layout (onnxruntime's own GPT-2 exporter, older
transformers/optimum exports): one input ``past_N`` of shape (2, batch, heads, past, head_dim) per
layer — key and value stacked on axis 0, the batch on axis 1 — and outputs ``present_N`` alike.

Scanned like the modern layout (an empty past, the mask over past + current tokens), one IR per
layer, and pruned with the layer's past/present — each against the same model exported without
a cache, whose answers need no cache handling at all."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import redaudit
from redaudit.core.graph import GraphIndex
from redaudit.core.probe import input_specs, make_probe
from redaudit.core.run import BatchRunner, fixed_batch_of, session_feed
from redaudit.core.tap import select_taps
from redaudit.core.units import find_units
from redaudit.errors import ProbeInputError

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
import lm_exports  # after the skips: it needs torch and transformers
import onnxruntime as ort

pytestmark = pytest.mark.torch

LAYERS, HEADS, HEAD_DIM = 3, 4, 8


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """(no-cache export, legacy 5-D past export) of one random-weight GPT-2."""
    return lm_exports.export_gpt2_legacy(tmp_path_factory.mktemp("gpt2_legacy"), layers=LAYERS, heads=HEADS,
                                         hidden=HEADS * HEAD_DIM)


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _first_batch(path, count: int = 6, **options) -> dict[str, np.ndarray]:
    probe = make_probe(input_specs(onnx.load(str(path))), None, count, seed=0, **options)
    return next(iter(probe.batches(count, count)))


def _layer_irs(path, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Every block-level IR (embedding, then one per layer) of ``path`` for ``batch``, fed as
    redaudit feeds it."""
    model = onnx.load(str(path))
    tensors = [point.tensor for point in select_taps(GraphIndex.build(model), "block").points]
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in tensors)
    return BatchRunner(_session(model), tensors).run(batch)


def test_the_empty_past_is_stacked_with_the_batch_on_axis_one(gpt2):
    plain, cached = gpt2
    specs = {spec.name: spec for spec in input_specs(onnx.load(str(cached.path)))}
    assert {specs[f"past_{n}"].role for n in range(LAYERS)} == {"past"}
    batch = _first_batch(cached.path, dims={"seq_len": 5})
    assert batch["attention_mask"].shape == (6, 5) and (batch["attention_mask"] == 1).all()
    np.testing.assert_array_equal(batch["position_ids"], np.tile(np.arange(5), (6, 1)))
    session = _session(str(cached.path))
    assert fixed_batch_of(session) is None  # the leading 2 is key/value, not a batch of 2
    feed = session_feed(session, batch)
    assert {feed[f"past_{n}"].shape for n in range(LAYERS)} == {(2, 6, HEADS, 0, HEAD_DIM)}
    assert feed["input_ids"].dtype == np.int32  # gpt2_helper's int32 ids, as the graph declares
    logits = session.run(["logits"], feed)[0]
    expected = _session(str(plain.path)).run(["logits"], {name: batch[name] for name in
                                                          ("input_ids", "position_ids", "attention_mask")})[0]
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_a_given_past_length_widens_the_mask_and_shifts_positions(gpt2):
    _, cached = gpt2
    batch = _first_batch(cached.path, dims={"seq_len": 4, "past_seq_len": 3})
    assert batch["attention_mask"].shape == (6, 7)
    np.testing.assert_array_equal(batch["position_ids"], np.tile(np.arange(3, 7), (6, 1)))
    session = _session(str(cached.path))
    feed = session_feed(session, batch)
    assert feed["past_1"].shape == (2, 6, HEADS, 3, HEAD_DIM)
    presents = dict(zip([out.name for out in session.get_outputs()], session.run(None, feed)))
    assert presents["present_2"].shape == (2, 6, HEADS, 7, HEAD_DIM)


def test_the_legacy_export_scans_as_the_plain_one(gpt2):
    """Same weights, same token ids: per-layer IRs within 1e-5, the CKA matrix within 1e-6."""
    plain, cached = gpt2
    options = {"samples": 24, "cka_batch": 12, "dims": {"seq_len": 8}}
    plain_scan, cached_scan = redaudit.scan(str(plain.path), **options), redaudit.scan(str(cached.path), **options)
    assert [layer.unit for layer in cached_scan.layers] == ["embedding"] + [f"decoder layer {n}" for n in range(LAYERS)]
    assert cached_scan.unit == plain_scan.unit == "decoder layer"
    np.testing.assert_allclose(cached_scan.similarity, plain_scan.similarity, atol=1e-6, rtol=0)
    batch = _first_batch(cached.path, count=8, dims={"seq_len": 8})
    cached_irs = _layer_irs(cached.path, batch)
    plain_irs = _layer_irs(plain.path, {name: batch[name] for name in ("input_ids", "position_ids",
                                                                       "attention_mask")})
    assert len(cached_irs) == len(plain_irs) == 1 + LAYERS
    assert max(float(np.abs(ours - theirs).max()) for ours, theirs in zip(cached_irs, plain_irs)) <= 1e-5


def test_token_ids_alone_are_completed_with_a_stacked_empty_past(gpt2, tmp_path):
    from click.testing import CliRunner

    from redaudit.cli.main import cli

    plain, cached = gpt2
    ids = np.random.default_rng(4).integers(1, lm_exports.VOCAB, (8, 6)).astype(np.int32)
    np.savez(tmp_path / "tokens.npz", input_ids=ids)
    probe = make_probe(input_specs(onnx.load(str(cached.path))), str(tmp_path / "tokens.npz"), 8)
    batch = next(iter(probe.batches(8, 8)))
    assert probe.real and batch["attention_mask"].shape == (8, 6)
    assert session_feed(_session(str(cached.path)), batch)["past_0"].shape == (2, 8, HEADS, 0, HEAD_DIM)
    common = ["--inputs", str(tmp_path / "tokens.npz"), "--samples", "8", "--cka-batch", "4"]
    outcome = CliRunner().invoke(cli, ["scan", str(cached.path), *common, "--json", str(tmp_path / "kv.json")])
    assert outcome.exit_code == 0, outcome.output
    reference = redaudit.scan(str(plain.path), inputs=str(tmp_path / "tokens.npz"), samples=8, cka_batch=4)
    import json

    report = json.loads((tmp_path / "kv.json").read_text())
    assert len(report["layers"]) == 1 + LAYERS
    np.testing.assert_allclose(np.array(report["similarity"]), reference.similarity, atol=1e-6, rtol=0)


def _unfillable_past_model(leading) -> onnx.ModelProto:
    """Token ids into an embedding, and a rank-5 past whose leading axis is ``leading``: without
    the fixed 2 of the stacked layout, its batch and past-length axes cannot be told apart."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [lm_exports.VOCAB, 8],
                               np.zeros(lm_exports.VOCAB * 8, np.float32))
    weight = helper.make_tensor("weight", TensorProto.FLOAT, [8, 8], np.eye(8, dtype=np.float32).ravel())
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
             helper.make_node("MatMul", ["embedded", "weight"], ["projected"]),
             helper.make_node("MatMul", ["projected", "weight"], ["hidden"]),
             helper.make_node("ReduceSum", ["past_0"], ["past_sum"], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "seq_len"]),
        helper.make_tensor_value_info("past_0", TensorProto.FLOAT, [leading, "batch_size", 4, "past_seq_len", 8])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch_size", "seq_len", 8]),
         helper.make_tensor_value_info("past_sum", TensorProto.FLOAT, [])], [table, weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("leading", ["kv", 3])
def test_a_past_redaudit_cannot_fill_is_refused_in_one_line(tmp_path, leading):
    from click.testing import CliRunner

    from redaudit.cli.main import cli

    model = _unfillable_past_model(leading)
    shape = f"({leading!r}, 'batch_size', 4, 'past_seq_len', 8)" if isinstance(leading, str) else \
        "(3, 'batch_size', 4, 'past_seq_len', 8)"
    with pytest.raises(ProbeInputError, match="past_0") as raised:
        make_probe(input_specs(model), None, 4)
    assert shape in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ProbeInputError, match="past_0"):  # token ids alone cannot complete it either
        make_probe(input_specs(model), {"input_ids": np.ones((4, 5), np.int64)}, 4)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    outcome = CliRunner().invoke(cli, ["scan", str(path), "--samples", "4"])
    assert outcome.exit_code == 2 and "past_0" in outcome.output and "Traceback" not in outcome.output
    assert len(outcome.output.strip().splitlines()) == 1


def test_each_layer_owns_its_stacked_past_and_present(gpt2):
    """Layer 0's past stays with the model: its length sizes every layer's causal mask."""
    _, cached = gpt2
    units = find_units(GraphIndex.build(onnx.load(str(cached.path)))).units
    assert len(units) == LAYERS
    assert [unit.cache_outputs for unit in units] == [(f"present_{n}",) for n in range(LAYERS)]
    assert [unit.cache_inputs for unit in units] == [()] + [(f"past_{n}",) for n in range(1, LAYERS)]
    from redaudit.prune.candidates import find_candidates

    blocks = find_candidates(onnx.load(str(cached.path)))
    assert [(block.kind, block.layer) for block in blocks] == [("transformer-layer", n) for n in range(LAYERS)]
    assert [block.name for block in blocks] == [point.tensor for point in select_taps(
        GraphIndex.build(onnx.load(str(cached.path))), "block").points][1:]


@pytest.mark.parametrize("removed", [(1,), (0, 2)])
def test_the_pruned_legacy_model_runs_with_the_remaining_pasts_like_the_plain_one(gpt2, removed):
    """Layer 0 removed: the past length moves to the first kept layer's past. Empty past: the
    logits equal the pruned no-cache model's; a second step fed the returned presents equals
    the pruned no-cache model on the longer sequence."""
    from redaudit.prune.candidates import find_candidates
    from redaudit.prune.surgery import remove_blocks

    plain, cached = gpt2
    plain_model, kv_model = onnx.load(str(plain.path)), onnx.load(str(cached.path))
    pick = lambda model: [block for block in find_candidates(model) if block.layer in removed]
    pruned_plain, pruned_kv = remove_blocks(plain_model, pick(plain_model)), remove_blocks(kv_model, pick(kv_model))
    kept = LAYERS - len(removed)
    assert [item.name for item in pruned_kv.graph.input] == ["input_ids", "position_ids", "attention_mask",
                                                             *(f"past_{n}" for n in range(kept))]
    assert [item.name for item in pruned_kv.graph.output] == ["logits", *(f"present_{n}" for n in range(kept))]
    rng = np.random.default_rng(5)
    ids = rng.integers(1, lm_exports.VOCAB, (3, 7)).astype(np.int32)
    tokens = {"input_ids": ids, "position_ids": np.tile(np.arange(7, dtype=np.int32), (3, 1)),
              "attention_mask": np.ones((3, 7), np.int32)}
    kv_session = _session(pruned_kv)
    names = [out.name for out in kv_session.get_outputs()]
    empty = {f"past_{n}": np.zeros((2, 3, HEADS, 0, HEAD_DIM), np.float32) for n in range(kept)}
    first = dict(zip(names, kv_session.run(None, {**tokens, **empty})))
    plain_session = _session(pruned_plain)
    np.testing.assert_allclose(first["logits"], plain_session.run(["logits"], tokens)[0], atol=2e-5)
    next_ids = rng.integers(1, lm_exports.VOCAB, (3, 1)).astype(np.int32)
    step = {"input_ids": next_ids, "position_ids": np.full((3, 1), 7, np.int32),
            "attention_mask": np.ones((3, 8), np.int32)}
    step.update({f"past_{n}": first[f"present_{n}"] for n in range(kept)})
    second = dict(zip(names, kv_session.run(None, step)))
    longer = {"input_ids": np.concatenate([ids, next_ids], axis=1),
              "position_ids": np.tile(np.arange(8, dtype=np.int32), (3, 1)),
              "attention_mask": np.ones((3, 8), np.int32)}
    np.testing.assert_allclose(second["logits"][:, 0], plain_session.run(["logits"], longer)[0][:, -1], atol=2e-5)
    assert second[f"present_{kept - 1}"].shape == (2, 3, HEADS, 8, HEAD_DIM)


def test_prune_model_verifies_the_legacy_export_like_the_plain_one(gpt2, tmp_path):
    """The whole prune path (probe completed from token ids, next-token verification, latency
    with each session fed its own pasts) on the legacy export agrees with the plain export's."""
    from redaudit.prune import prune_model
    from redaudit.prune.candidates import find_candidates

    plain, cached = gpt2
    ids = np.random.default_rng(6).integers(1, lm_exports.VOCAB, (8, 10)).astype(np.int32)
    np.savez(tmp_path / "tokens.npz", input_ids=ids)
    results = []
    for path in (plain.path, cached.path):
        model = onnx.load(str(path))
        blocks = [block.name for block in find_candidates(model) if block.layer == 1]
        results.append(prune_model(model, blocks=blocks, inputs=str(tmp_path / "tokens.npz"), latency_repeats=2,
                                   measure_msrs=False, min_cosine=None))
    plain_result, kv_result = results
    assert kv_result.latency is not None and [item.name for item in kv_result.agreement] == ["logits"]
    assert [item.name for item in kv_result.model.graph.input if item.name.startswith("past")] == ["past_0", "past_1"]
    assert kv_result.next_token.kl_mean == pytest.approx(plain_result.next_token.kl_mean, rel=1e-4)
    assert kv_result.next_token.top1_agreement == plain_result.next_token.top1_agreement
