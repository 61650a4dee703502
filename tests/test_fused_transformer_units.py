"""Units and taps on graphs optimized by onnxruntime's transformer optimizer: residual merges fused
into ``com.microsoft.SkipLayerNormalization`` (with fused ``Attention``, ``BiasGelu``/``FastGelu``
and ``EmbedLayerNormalization``). A tiny post-norm BERT and a tiny pre-norm GPT-2 are exported
from transformers (random weights), optimized in the test, and compared with their unfused
exports and with torch: the same layers, the same IR values, the same CKA matrix."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from redaudit.core.prepared import PreparedModel
from redaudit.core.units import find_units

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
optimizer = pytest.importorskip("onnxruntime.transformers.optimizer")
import lm_exports  # after the skips: it needs torch and transformers

pytestmark = pytest.mark.torch

LAYERS = 3
ARCHES = ("bert", "gpt2")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """(unfused TinyLM, path of its optimized twin) per architecture, built once."""
    folder = tmp_path_factory.mktemp("fused")
    built = {}
    for arch in ARCHES:
        lm = lm_exports.export(folder / f"{arch}.onnx", arch, layers=LAYERS)
        fused = optimizer.optimize_model(str(lm.path), model_type=arch, num_heads=4, hidden_size=32, opt_level=0)
        path = folder / f"{arch}_fused.onnx"
        fused.save_model_to_file(str(path))
        built[arch] = (lm, path)
    return built


def _op_count(path, op_type: str) -> int:
    return sum(node.op_type == op_type for node in onnx.load(str(path)).graph.node)


def _feeds(arch: str, count: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """Token ids within the vocabulary and full masks, written out by hand (the probe is the
    same for both graphs, independent of redaudit's LM probe)."""
    ids = np.random.default_rng(seed).integers(0, lm_exports.VOCAB, (count, length))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if arch != "bert":
        feeds["position_ids"] = np.tile(np.arange(length), (count, 1))
    return feeds


def _layer_modules(lm: lm_exports.TinyLM):
    return lm.model.encoder.layer if lm.arch == "bert" else lm.model.transformer.h


def _torch_layer_outputs(lm: lm_exports.TinyLM, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The embedding and each layer's output (forward hooks: a pre-norm model's last layer is
    reported before the final norm, as redaudit taps it)."""
    outputs: list[np.ndarray] = []
    hooks = [layer.register_forward_hook(
        lambda module, args, out: outputs.append((out[0] if isinstance(out, tuple) else out).detach().numpy()))
        for layer in _layer_modules(lm)]
    try:
        states = lm_exports.hidden_states(lm.model, feeds["input_ids"], feeds["attention_mask"])
    finally:
        for hook in hooks:
            hook.remove()
    return [states[0], *outputs]


def _tapped(prepared: PreparedModel, level: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The IRs a scan taps at ``level``, raw (flattened), from the augmented graph scan runs."""
    selection = prepared.taps(level)
    augmented = prepared.augmented(selection, "flatten")
    session, _ = prepared.session(augmented)
    return session.run(augmented.fetch_names, feeds)


@pytest.mark.parametrize("arch", ARCHES)
def test_the_optimizer_fused_the_residual_merges(exports, arch):
    _, fused = exports[arch]
    assert _op_count(fused, "SkipLayerNormalization") == 2 * LAYERS
    assert _op_count(fused, "LayerNormalization") <= 1  # GPT-2's first ln_1 reads no residual sum


@pytest.mark.parametrize("arch", ARCHES)
def test_one_unit_per_layer_on_the_fused_graph_as_on_the_unfused(exports, arch):
    lm, fused = exports[arch]
    layouts = [find_units(PreparedModel.load(path).index) for path in (lm.path, fused)]
    for layout in layouts:
        assert len(layout.units) == LAYERS
        assert all(unit.is_transformer_layer and len(unit.sublayers) == 2 for unit in layout.units)
    assert layouts[0].kind == layouts[1].kind == ("encoder layer" if arch == "bert" else "decoder layer")
    assert layouts[0].norm == layouts[1].norm == ("post" if arch == "bert" else "pre")
    for level, count in (("block", 1 + LAYERS), ("sublayer", 1 + 2 * LAYERS)):
        selections = [PreparedModel.load(path).taps(level) for path in (lm.path, fused)]
        assert [len(selection.points) for selection in selections] == [count, count]
        assert [p.unit for p in selections[0].points] == [p.unit for p in selections[1].points]
        assert selections[1].level == level and not selections[1].warnings


@pytest.mark.parametrize("arch", ARCHES)
def test_fused_block_irs_are_the_layer_outputs(exports, arch):
    lm, fused = exports[arch]
    feeds = _feeds(arch, 3, 7, seed=1)
    expected = _torch_layer_outputs(lm, feeds)
    unfused_irs = _tapped(PreparedModel.load(lm.path), "block", feeds)
    fused_irs = _tapped(PreparedModel.load(fused), "block", feeds)
    assert len(fused_irs) == len(expected) == 1 + LAYERS
    for number, (ours, plain, theirs) in enumerate(zip(fused_irs, unfused_irs, expected, strict=True)):
        np.testing.assert_allclose(ours, theirs, atol=1e-4, err_msg=f"IR {number} vs torch")
        np.testing.assert_allclose(ours, plain, atol=1e-4, err_msg=f"IR {number} vs the unfused graph")


@pytest.mark.parametrize("arch", ARCHES)
def test_fused_sublayer_irs_equal_the_unfused(exports, arch):
    lm, fused = exports[arch]
    feeds = _feeds(arch, 3, 7, seed=2)
    for ours, plain in zip(_tapped(PreparedModel.load(fused), "sublayer", feeds),
                           _tapped(PreparedModel.load(lm.path), "sublayer", feeds), strict=True):
        np.testing.assert_allclose(ours, plain, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHES)
def test_the_similarity_matrix_of_the_fused_model_is_the_unfused_one(exports, arch):
    import redaudit

    lm, fused = exports[arch]
    feeds = _feeds(arch, 24, 8, seed=3)
    results = [redaudit.scan(str(path), inputs=feeds, samples=24, cka_batch=12, device="cpu")
               for path in (lm.path, fused)]
    assert [len(result.layers) for result in results] == [1 + LAYERS] * 2
    np.testing.assert_allclose(results[1].similarity, results[0].similarity, atol=1e-6, rtol=0)


def test_a_sum_the_graph_does_not_name_is_not_tapped_in_its_place(exports):
    """Without expose_residual_sums (a raw GraphIndex of the optimized file), the last GPT-2
    layer's IR — the sum the optimizer fused with the final norm — names no tensor: that layer
    is left untapped, never replaced by output 0 (the final norm's output)."""
    from redaudit.core.graph import GraphIndex
    from redaudit.core.tap import select_taps

    _, fused = exports["gpt2"]
    model = onnx.load(str(fused))
    last = [node for node in model.graph.node if node.op_type == "SkipLayerNormalization"][-1]
    assert len(last.output) < 4 or not last.output[3]  # the optimizer left the sum unnamed
    index = GraphIndex.build(model)
    layout = find_units(index)
    assert len(layout.units) == LAYERS and layout.units[-1].exit not in index.producer
    points = select_taps(index, "block").points
    assert [point.unit for point in points] == ["embedding"] + [f"decoder layer {n}" for n in range(LAYERS - 1)]
    assert last.output[0] not in {point.tensor for point in points}


def test_pruning_a_fused_post_norm_layer_equals_pruning_the_unfused_one(exports, tmp_path):
    """BERT's stream is output 0 of the fused node: removing a layer rewires it like the unfused
    graph's LayerNorm output, the layer's norms going with it."""
    import onnxruntime as ort

    from redaudit.prune import prune_model
    from redaudit.prune.candidates import find_candidates

    lm, fused = exports["bert"]
    feeds = _feeds("bert", 16, 8, seed=4)
    probe = tmp_path / "probe.npz"
    np.savez(probe, **feeds)
    outputs, names = [], []
    for path in (lm.path, fused):
        prepared = PreparedModel.load(path)
        candidates = find_candidates(prepared.proto, prepared.index)
        assert [block.layer for block in candidates] == list(range(LAYERS))
        layer_1 = [block.name for block in candidates if block.layer == 1]
        names.append(layer_1)
        result = prune_model(str(path), blocks=layer_1, inputs=str(probe), latency=False, measure_msrs=False,
                             samples=16, cka_batch=8)
        session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs.append(session.run(["last_hidden_state"], feeds)[0])
    assert names[0] == names[1]
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-4)
    full = ort.InferenceSession(str(lm.path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.abs(full - outputs[0]).max() > 1e-2  # the layer mattered: the comparison can fail


def test_prune_refuses_a_fused_pre_norm_model_in_one_line(exports):
    from click.testing import CliRunner

    from redaudit.cli.main import cli

    _, fused = exports["gpt2"]
    outcome = CliRunner().invoke(cli, ["prune", str(fused), "--remove", "1", "--no-latency"])
    assert outcome.exit_code == 2, outcome.output
    assert "SkipLayerNormalization" in outcome.output and "before optimization" in outcome.output
    assert "Traceback" not in outcome.output and len(outcome.output.strip().splitlines()) == 1


@pytest.mark.parametrize("arch", ARCHES)
def test_a_synthetic_probe_draws_token_ids_within_the_fused_vocabulary(exports, arch):
    """The optimizer hides the embedding Gather inside EmbedLayerNormalization: the vocabulary is
    then read from that node's word-embedding input, so a scan without --inputs draws ids within
    it (it failed in onnxruntime with "input index out of range" when the table was not found)."""
    import redaudit
    from redaudit.core.lm_inputs import input_roles

    lm, path = exports[arch]
    model = onnx.load(str(path))
    roles = input_roles(model, [value.name for value in model.graph.input])
    assert roles["input_ids"].vocab == lm_exports.VOCAB
    fused = redaudit.scan(str(path), samples=24, cka_batch=8)
    assert np.isfinite(fused.similarity).all() and len(fused.layers) == LAYERS + 1


def test_taps_lists_what_a_scan_taps_on_a_fused_pre_norm_model(exports):
    """`redaudit taps` reads the graph a scan reads: the fused GPT-2's last layer, whose sum the
    optimizer left unnamed, is listed as the scan taps it (output 3 exposed at load), not dropped."""
    from click.testing import CliRunner

    import redaudit
    from redaudit.cli.main import cli

    _, fused = exports["gpt2"]
    scanned = redaudit.scan(str(fused), inputs=_feeds("gpt2", 8, 8, seed=1), samples=8, cka_batch=8, device="cpu")
    listed = CliRunner().invoke(cli, ["taps", str(fused)])
    assert listed.exit_code == 0, listed.output
    assert f"{len(scanned.layers)} taps at level block" in listed.output
    assert len(scanned.layers) == 1 + LAYERS
