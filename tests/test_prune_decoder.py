"""Depth pruning of generated tiny decoders (Llama layout, with and without a KV cache)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from redaudit.prune import prune_model
from redaudit.prune.candidates import find_candidates
from redaudit.prune.surgery import PruneError, remove_blocks
from tests.lm_models import VOCAB, empty_past, export_tiny_decoder, token_probe

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    """(plain, kv) of a 4-layer decoder whose layer 1 is the identity."""
    return export_tiny_decoder(tmp_path_factory.mktemp("decoder"), identity_layer=1)


def _layer(model: onnx.ModelProto, layer: int) -> list[str]:
    """Names of the candidates that make up decoder layer ``layer`` (one unit, or its two halves)."""
    names = [block.name for block in find_candidates(model) if f"/layers.{layer}/" in block.exit]
    assert names, f"no candidate inside layer {layer}"
    return names


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString())
    taken = {item.name for item in session.get_inputs()}
    names = [item.name for item in session.get_outputs()]
    return dict(zip(names, session.run(None, {k: v for k, v in feed.items() if k in taken})))


def _npz(tmp_path, arrays) -> str:
    path = tmp_path / "tokens.npz"
    np.savez(path, **arrays)
    return str(path)


def test_removing_an_identity_layer_keeps_logits_exact(decoders, tmp_path):
    plain, _ = decoders
    model = onnx.load(str(plain))
    probe = token_probe(pad_last=3)
    result = prune_model(model, blocks=_layer(model, 1), inputs=_npz(tmp_path, probe), latency=False,
                         measure_msrs=False)
    original, pruned = _run(model, probe)["logits"], _run(result.model, probe)["logits"]
    assert np.abs(pruned - original).max() <= 1e-6
    assert result.next_token.top1_agreement == 1.0
    assert result.next_token.kl_mean == pytest.approx(0.0, abs=1e-9)
    assert result.next_token.perplexity_ratio == pytest.approx(1.0, abs=1e-6)
    assert result.next_token.positions == int(probe["attention_mask"].sum())
    assert result.params_after < result.params_before


def test_kv_export_loses_the_removed_layers_cache_and_is_renumbered(decoders):
    _, cached = decoders
    model = onnx.load(str(cached))
    pruned = remove_blocks(model, [b for b in find_candidates(model) if "/layers.0/" in b.exit or "/layers.2/" in b.exit])
    inputs = [i.name for i in pruned.graph.input]
    outputs = [o.name for o in pruned.graph.output]
    assert [n for n in inputs if n.startswith("past_key_values.")] == [
        "past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"]
    assert outputs == ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]


def test_pruned_kv_model_runs_with_a_cache_like_the_plain_one(decoders):
    """Empty past: the pruned KV model's logits equal the pruned no-cache model's; a second step
    fed the returned present equals the no-cache model on the longer sequence."""
    plain, cached = decoders
    plain_model, kv_model = onnx.load(str(plain)), onnx.load(str(cached))
    layers = ("/layers.0/", "/layers.2/")  # layer 0: its past is what the export reads the past length from
    pick = lambda model: [b for b in find_candidates(model) if any(tag in b.exit for tag in layers)]
    pruned_plain, pruned_kv = remove_blocks(plain_model, pick(plain_model)), remove_blocks(kv_model, pick(kv_model))
    probe = token_probe(count=3, length=7)
    first = _run(pruned_kv, {**probe, **empty_past(cached, 3)})
    np.testing.assert_allclose(first["logits"], _run(pruned_plain, probe)["logits"], atol=2e-5)
    next_ids = np.random.default_rng(5).integers(1, VOCAB, (3, 1)).astype(np.int64)
    step = {"input_ids": next_ids, "attention_mask": np.ones((3, 8), np.int64),
            "position_ids": np.full((3, 1), 7, np.int64)}
    step.update({name.replace("present", "past_key_values"): value for name, value in first.items()
                 if name.startswith("present.")})
    second = _run(pruned_kv, step)
    longer = token_probe(count=3, length=8)
    longer["input_ids"] = np.concatenate([probe["input_ids"], next_ids], axis=1)
    whole = _run(pruned_plain, longer)["logits"]
    np.testing.assert_allclose(second["logits"][:, 0], whole[:, -1], atol=2e-5)
    assert second["present.1.key"].shape[2] == 8


def test_linear_healing_of_a_decoder_layer_beats_plain_removal(tmp_path_factory, tmp_path):
    plain, cached = export_tiny_decoder(tmp_path_factory.mktemp("random"), seed=3)
    model, kv_model = onnx.load(str(plain)), onnx.load(str(cached))
    probe = token_probe(count=16, length=16, pad_last=4)
    inputs = _npz(tmp_path, probe)
    common = {"blocks": _layer(model, 2), "inputs": inputs, "latency": False, "measure_msrs": False, "min_cosine": None}
    removed = prune_model(model, heal="none", **common)
    healed = prune_model(model, heal="linear", calibrate=inputs, **common)
    assert healed.healed and healed.next_token.kl_mean < removed.next_token.kl_mean
    kv_probe = {**probe, **empty_past(cached, 16)}
    kv_inputs = tmp_path / "kv.npz"
    np.savez(kv_inputs, **kv_probe)
    healed_kv = prune_model(kv_model, heal="linear", blocks=_layer(kv_model, 2), inputs=str(kv_inputs),
                            calibrate=str(kv_inputs), latency_repeats=2, measure_msrs=False, min_cosine=None)
    assert healed_kv.latency is not None  # both sessions ran, each fed the inputs it takes
    assert "present.3.key" not in [o.name for o in healed_kv.model.graph.output]
    assert [item.name for item in healed_kv.agreement] == ["logits"]  # the cache is memory, not the answer
    assert healed_kv.next_token.kl_mean == pytest.approx(healed.next_token.kl_mean, rel=1e-3)
    np.testing.assert_allclose(_run(healed_kv.model, kv_probe)["logits"], _run(healed.model, probe)["logits"],
                               atol=1e-4)


def test_lm_gates_refuse_to_write(decoders, tmp_path):
    plain, _ = decoders
    model = onnx.load(str(plain))
    inputs = _npz(tmp_path, token_probe(count=8, length=12))
    common = {"blocks": _layer(model, 0), "inputs": inputs, "latency": False, "measure_msrs": False, "min_cosine": None}
    with pytest.raises(PruneError, match="--max-kl"):
        prune_model(model, max_kl=1e-6, output=str(tmp_path / "out.onnx"), **common)
    with pytest.raises(PruneError, match="--max-ppl-increase"):
        prune_model(model, max_ppl_increase=0.0, output=str(tmp_path / "out.onnx"), **common)
    assert not (tmp_path / "out.onnx").exists()
    passed = prune_model(model, max_kl=100.0, max_ppl_increase=1e6, **common)
    assert passed.next_token.kl_mean > 0


def test_perplexity_gate_needs_real_ids_and_lm_gates_need_an_lm(decoders, tmp_path):
    plain, _ = decoders
    model = onnx.load(str(plain))
    with pytest.raises(PruneError, match="needs real token ids"):
        prune_model(model, remove=1, max_ppl_increase=10, samples=8, dims={"sequence_length": 6},
                    latency=False, measure_msrs=False)
    from tests.prune_models import residual_mlp

    with pytest.raises(PruneError, match="causal language model"):
        prune_model(residual_mlp(), remove=1, max_kl=0.1, samples=16, latency=False, measure_msrs=False)


def test_cli_json_reports_next_token_agreement(decoders, tmp_path):
    from redaudit.cli.main import cli

    plain, _ = decoders
    model = onnx.load(str(plain))
    inputs = _npz(tmp_path, token_probe(count=8, length=12))
    args = ["prune", str(plain), "--blocks", ",".join(_layer(model, 1)), "--inputs", inputs, "--json",
            "--no-latency", "--cka-batch", "4", "--max-kl", "0.01", "--max-ppl-increase", "1", "--min-top1", "0.99"]
    outcome = CliRunner().invoke(cli, args)
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.output[outcome.output.index("{"):])
    assert report["next_token"]["top1_agreement"] == 1.0
    assert report["next_token"]["perplexity_ratio"] == pytest.approx(1.0, abs=1e-6)
    bad = CliRunner().invoke(cli, ["prune", str(plain), "--remove", "1", "--max-kl", "-1"])
    assert bad.exit_code == 2 and "--max-kl" in bad.output and "Traceback" not in bad.output


def test_record_stores_the_next_token_verification(decoders, tmp_path):
    from redaudit.history.store import HistoryStore

    plain, _ = decoders
    model = onnx.load(str(plain))
    url = f"sqlite:///{tmp_path / 'history.db'}"
    result = prune_model(model, blocks=_layer(model, 0), inputs=_npz(tmp_path, token_probe(count=8, length=12)),
                         latency=False, min_cosine=None, cka_batch=4, record="tiny-decoder", db=url)
    store = HistoryStore(url)
    try:
        row = store.prune_verification(result.recorded_scan_id)
    finally:
        store.close()
    assert row["top1_agreement"] == pytest.approx(result.next_token.top1_agreement)
    assert row["kl_mean"] == pytest.approx(result.next_token.kl_mean) and row["kl_mean"] > 0
    assert row["perplexity_pruned"] == pytest.approx(result.next_token.perplexity_pruned)
    assert row["removed"] == result.removed and row["probe_real"] is True


def test_calibration_file_combines_with_a_text_probe(decoders, tmp_path):
    """--text/--tokenizer give the probe and --calibrate the healing data: the calibration file
    replaces the text for calibration (it used to collide: '--text and --inputs both give …')."""
    tokenizers = pytest.importorskip("tokenizers")
    plain, _ = decoders
    model = onnx.load(str(plain))
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    rng = np.random.default_rng(0)
    (tmp_path / "probe.txt").write_text(" ".join(f"w{i}" for i in rng.integers(1, VOCAB, 400)))
    calibration = _npz(tmp_path, token_probe(count=8, length=12))
    result = prune_model(model, blocks=_layer(model, 2), heal="linear", calibrate=calibration,
                         text=str(tmp_path / "probe.txt"), tokenizer=str(tmp_path), samples=8,
                         dims={"sequence_length": 12}, latency=False, measure_msrs=False, min_cosine=None)
    assert result.probe_real and result.next_token.perplexity_original is not None
    assert result.healed
