"""Units of transformer language models: one IR per layer (the hidden state after it), halves at
``sublayer`` level, and prune candidates that are the same layers — on tiny models exported
from transformers in the test (pre-norm Llama/GPT-2, OPT with its MLP on a flattened view of the
stream, parallel GPT-NeoX/Phi/Cohere, post-norm BERT)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from redaudit.core.graph import GraphIndex
from redaudit.core.tap import select_taps
from redaudit.core.units import find_units

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
import lm_exports  # after the skips: it needs torch and transformers

pytestmark = pytest.mark.torch

#: (arch, sublayers per layer): parallel layouts have one residual per layer.
LAYOUTS = [("llama", 2, "pre"), ("mistral", 2, "pre"), ("qwen2", 2, "pre"), ("gpt2", 2, "pre"), ("gpt_neox", 1, "pre"), ("phi", 1, "pre"),
           ("opt", 2, "pre"), ("cohere", 1, "pre"), ("bert", 2, "post")]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    built: dict[tuple[str, bool], lm_exports.TinyLM] = {}

    def get(arch: str, kv_cache: bool = False) -> lm_exports.TinyLM:
        key = (arch, kv_cache)
        if key not in built:
            # GQA: fewer key/value heads than query heads
            kv_heads = 2 if arch in ("llama", "mistral", "qwen2") else None
            built[key] = lm_exports.export(folder / f"{arch}_{kv_cache}.onnx", arch, layers=3, kv_cache=kv_cache,
                                          kv_heads=kv_heads)
        return built[key]
    return get


def _layer_modules(lm: lm_exports.TinyLM):
    model = lm.model
    return {"llama": lambda: model.model.layers, "phi": lambda: model.model.layers,
            "mistral": lambda: model.model.layers, "qwen2": lambda: model.model.layers,
            "gpt2": lambda: model.transformer.h, "gpt_neox": lambda: model.gpt_neox.layers,
            "opt": lambda: model.model.decoder.layers, "cohere": lambda: model.model.layers,
            "bert": lambda: model.encoder.layer}[lm.arch]()


def _torch_layer_outputs(lm: lm_exports.TinyLM, ids: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(each layer's output from forward hooks, output_hidden_states) for ``ids``."""
    outputs: list[np.ndarray] = []
    hooks = [layer.register_forward_hook(
        lambda module, args, out: outputs.append((out[0] if isinstance(out, tuple) else out).detach().numpy()))
        for layer in _layer_modules(lm)]
    try:
        states = lm_exports.hidden_states(lm.model, ids, np.ones_like(ids))
    finally:
        for hook in hooks:
            hook.remove()
    return outputs, states


def _run_raw(path, tensors: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The named tensors from a plain onnxruntime session of the model with them as outputs."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    existing = {output.name for output in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in tensors if name not in existing)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(tensors, feeds)


def _feeds(lm: lm_exports.TinyLM, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The model's inputs for ``ids`` with an empty cache, written out by hand (independent of
    redaudit's LM probe)."""
    batch, length = ids.shape
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if lm.arch != "bert":
        feeds["position_ids"] = np.tile(np.arange(length), (batch, 1))
    if lm.kv_cache:
        for value in onnx.load(str(lm.path)).graph.input:
            if value.name.startswith("past_key_values."):
                dims = value.type.tensor_type.shape.dim
                feeds[value.name] = np.zeros((batch, dims[1].dim_value, 0, dims[3].dim_value), np.float32)
    return feeds


@pytest.mark.parametrize("arch,halves,norm", LAYOUTS)
def test_one_block_ir_per_layer_and_the_halves_at_sublayer_level(exports, arch, halves, norm):
    lm = exports(arch)
    index = GraphIndex.build(onnx.load(str(lm.path)))
    layout = find_units(index)
    assert (len(layout.units), layout.norm, layout.parallel) == (lm.layers, norm, halves == 1)
    block = select_taps(index, "block")
    assert [point.unit for point in block.points] == ["embedding"] + [
        f"{layout.kind} {number}" for number in range(lm.layers)]
    assert block.unit == ("encoder layer" if arch == "bert" else "decoder layer")
    sublayer = select_taps(index, "sublayer")
    assert len(sublayer.points) == 1 + halves * lm.layers
    if halves == 2:
        assert sublayer.unit == "attention/MLP sublayer"
        assert [point.unit.split()[-1] for point in sublayer.points[1:3]] == ["attention", "mlp"]


# Cohere's TorchScript export (torch 2.13, transformers 5) runs only at its traced shapes (its
# rotary's Reshape/Mul bake them in); optimum-onnx's real Cohere file is compared with float64 in
# benchmarks/optimum_exports.py instead
@pytest.mark.parametrize("arch", [arch for arch, _, _ in LAYOUTS if arch != "cohere"])
def test_the_layer_ir_is_the_hidden_state_torch_gives(exports, arch):
    lm = exports(arch)
    ids = np.random.default_rng(1).integers(0, lm_exports.VOCAB, (2, 7))
    points = select_taps(GraphIndex.build(onnx.load(str(lm.path))), "block").points
    tapped = _run_raw(lm.path, [point.tensor for point in points], _feeds(lm, ids))
    per_layer, states = _torch_layer_outputs(lm, ids)
    np.testing.assert_allclose(tapped[0], states[0], atol=1e-5)  # the embedding
    for number, (ours, theirs) in enumerate(zip(tapped[1:], per_layer, strict=True)):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=f"layer {number}")
    # output_hidden_states: every layer but the last, which pre-norm models report after the final norm
    for number in range(lm.layers - (0 if arch == "bert" else 1)):
        np.testing.assert_allclose(tapped[1 + number], states[1 + number], atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gpt_neox", "opt"])
def test_the_layer_irs_with_and_without_kv_cache_agree(exports, arch):
    plain, cached = exports(arch), exports(arch, kv_cache=True)
    ids = np.random.default_rng(2).integers(0, lm_exports.VOCAB, (3, 6))
    results = []
    for lm in (plain, cached):
        points = select_taps(GraphIndex.build(onnx.load(str(lm.path))), "block").points
        assert len(points) == 1 + lm.layers
        results.append(_run_raw(lm.path, [point.tensor for point in points], _feeds(lm, ids)))
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("arch", [arch for arch, _, _ in LAYOUTS])
def test_prune_candidates_are_the_layers_scan_taps(exports, arch):
    from redaudit.prune.candidates import find_candidates

    lm = exports(arch)
    model = onnx.load(str(lm.path))
    index = GraphIndex.build(model)
    blocks = find_candidates(model, index)
    taps = [point.tensor for point in select_taps(index, "block").points]
    assert [block.kind for block in blocks] == ["transformer-layer"] * lm.layers
    assert [block.name for block in blocks] == taps[1:]
    assert [block.layer for block in blocks] == list(range(lm.layers))
    # consecutive layers chain: each one's entry is the previous one's exit (contiguous spans, healing)
    assert [block.entry for block in blocks] == taps[:-1]
    halves = find_candidates(model, index, "sublayer")
    sub_taps = [point.tensor for point in select_taps(index, "sublayer").points]
    assert [block.name for block in halves] == sub_taps[1:]


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_removing_a_layer_keeps_the_model_running_and_its_other_layers(exports, arch):
    """Bypassing decoder layer 1 of 3: the result runs, and layer 2 now reads layer 0's output
    (OPT: from the view that restores its MLP's flattened sum)."""
    from redaudit.prune.candidates import find_candidates
    from redaudit.prune.surgery import remove_blocks

    lm = exports(arch)
    model = onnx.load(str(lm.path))
    blocks = find_candidates(model)
    pruned = remove_blocks(model, [blocks[1]])
    onnx.checker.check_model(pruned)
    ids = np.random.default_rng(3).integers(0, lm_exports.VOCAB, (2, 5))
    import onnxruntime as ort

    session = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], _feeds(lm, ids))[0]
    reference = lm_exports.build(arch, layers=3, kv_heads=2 if arch == "llama" else None)  # the same weights
    layers = reference.model.decoder.layers if arch == "opt" else reference.model.layers
    with torch.no_grad():
        del layers[1]
        reference.config.num_hidden_layers = 2
        for number, layer in enumerate(layers):
            layer.self_attn.layer_idx = number
        expected = reference(input_ids=torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_prune_list_offers_layers_at_block_level_and_halves_at_sublayer_level(exports):
    from click.testing import CliRunner

    from redaudit.cli.main import cli

    lm = exports("llama")
    fast = ["--samples", "16", "--cka-batch", "8", "--dim", "sequence_length=6", "--json"]
    listed = {}
    for level in ("block", "sublayer"):
        result = CliRunner().invoke(cli, ["prune", str(lm.path), "--list", "--level", level, *fast])
        assert result.exit_code == 0, result.output
        listed[level] = [item["kind"] for item in json.loads(result.stdout)["candidates"]]
    assert listed["block"] == ["transformer-layer"] * lm.layers
    assert listed["sublayer"] == ["attention", "mlp"] * lm.layers


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_cached_layer_owns_its_past_and_present(exports, arch):
    """What goes with a layer of a key/value-cache export: its past inputs and present outputs;
    the first layer's past key stays, as its length sizes every layer's causal mask."""
    lm = exports(arch, kv_cache=True)
    units = find_units(GraphIndex.build(onnx.load(str(lm.path)))).units
    assert [unit.cache_outputs for unit in units] == [(f"present.{n}.key", f"present.{n}.value") for n in range(3)]
    assert [unit.cache_inputs for unit in units] == [("past_key_values.0.value",)] + [
        (f"past_key_values.{n}.key", f"past_key_values.{n}.value") for n in (1, 2)]
    plain = find_units(GraphIndex.build(onnx.load(str(exports(arch).path)))).units
    assert all(unit.cache_inputs == unit.cache_outputs == () for unit in plain)


def test_sublayer_level_on_a_network_without_attention_taps_its_blocks():
    import models

    index = GraphIndex.build(models.residual_cnn(blocks=3))
    block, sublayer = select_taps(index, "block"), select_taps(index, "sublayer")
    assert [point.tensor for point in sublayer.points] == [point.tensor for point in block.points]
    assert sublayer.unit == block.unit == "residual block"
    assert [point.unit for point in block.points] == ["stem", "residual block 0", "residual block 1", "residual block 2"]
    assert any("no transformer layers" in warning for warning in sublayer.warnings)


@pytest.mark.parametrize("op_type, attributes, causal", [
    ("Attention", {"num_heads": 2, "unidirectional": 1}, True),
    ("Attention", {"num_heads": 2}, False),  # a fused encoder attention
    ("GroupQueryAttention", {"num_heads": 2, "kv_num_heads": 2}, True),
])
def test_fused_attention_says_whether_it_is_causal(op_type, attributes, causal):
    """onnxruntime's optimizer folds the causal mask into its fused Attention (unidirectional=1):
    with no Trilu or position comparison left in the graph, that attribute is what makes the
    layer a decoder's."""
    from onnx import TensorProto, helper

    from redaudit.core.causal_attention import is_causal
    from redaudit.core.graph import GraphIndex

    node = helper.make_node(op_type, ["x", "w", "b"], ["y"], domain="com.microsoft", **attributes)
    graph = helper.make_graph(
        [node], "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor("w", TensorProto.FLOAT, [8, 24], [0.0] * 192),
         helper.make_tensor("b", TensorProto.FLOAT, [24], [0.0] * 24)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    assert is_causal(GraphIndex.build(model)) is causal
