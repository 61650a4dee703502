"""A T5 decoder layer is three residual merges on the stream: ``layer.0`` self-attention,
``layer.1`` cross-attention (keys and values from ``encoder_hidden_states``, or from
``past_key_values.N.encoder.*`` in a with-past decoder), ``layer.2`` the feed-forward. One unit
per layer at ``block`` level (the hidden state after ``layer.2``), three IRs per layer at
``sublayer`` level (roles attention, cross-attention, mlp). Measured on a real optimum-onnx
0.1.0 ``decoder_model.onnx``: redaudit paired the cross-attention with the MLP and left the
self-attention alone, 6 "decoder layers" for 3. The export here (tests/lm_exports.py:
``export_t5_decoder``) has the real file's layout: inputs, outputs and the ops around each
``layer.1/Add`` (the Cast of the stream and the cross-attention's ``o`` projection).
"""
from __future__ import annotations

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

LAYERS = 3
ROLES = ["attention", "cross-attention", "mlp"]


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    return lm_exports.export_t5_decoder(tmp_path_factory.mktemp("t5") / "decoder_model.onnx", layers=LAYERS)


def _feeds(count: int, length: int = 5, source: int = 6, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"encoder_attention_mask": np.ones((count, source), np.int64),
            "input_ids": rng.integers(0, lm_exports.VOCAB, (count, length)).astype(np.int64),
            "encoder_hidden_states": rng.standard_normal((count, source, 32)).astype(np.float32)}


def test_the_export_has_the_real_files_structure(t5):
    model = onnx.load(str(t5.path))
    index = GraphIndex.build(model)
    assert [value.name for value in model.graph.input] == ["encoder_attention_mask", "input_ids",
                                                           "encoder_hidden_states"]
    for number in range(LAYERS):
        add = next(node for node in model.graph.node if node.name.endswith(f"/block.{number}/layer.1/Add"))
        producers = [index.node_of(name) for name in add.input]
        assert [node.op_type for node in producers] == ["Cast", "MatMul"]
        assert producers[0].name.endswith(f"/block.{number}/layer.1/layer_norm/Cast")
        assert producers[1].name.endswith(f"/block.{number}/layer.1/EncDecAttention/o/MatMul")


def test_one_unit_per_decoder_layer_with_three_halves(t5):
    index = GraphIndex.build(onnx.load(str(t5.path)))
    layout = find_units(index)
    assert (layout.kind, layout.norm, layout.parallel) == ("decoder layer", "pre", False)
    assert len(layout.units) == LAYERS
    for number, unit in enumerate(layout.units):
        assert [sublayer.role for sublayer in unit.sublayers] == ROLES
        assert [sublayer.merge.add.split("/")[-2] for sublayer in unit.sublayers] == ["layer.0", "layer.1", "layer.2"]
        assert all(f"/block.{number}/" in sublayer.merge.add for sublayer in unit.sublayers)
        # the halves chain on the stream: each one reads the previous one's IR
        assert [sublayer.entry for sublayer in unit.sublayers[1:]] == [sublayer.exit for sublayer in unit.sublayers[:-1]]
        assert unit.removable and unit.is_transformer_layer
    assert [unit.entry for unit in layout.units[1:]] == [unit.exit for unit in layout.units[:-1]]


def test_block_level_taps_the_stem_and_one_ir_per_layer(t5):
    index = GraphIndex.build(onnx.load(str(t5.path)))
    block = select_taps(index, "block")
    assert block.unit == "decoder layer"
    assert [point.unit for point in block.points] == ["embedding"] + [f"decoder layer {n}" for n in range(LAYERS)]
    assert [point.tensor.split("/")[-3:] for point in block.points[1:]] == [
        [f"block.{n}", "layer.2", "Add_output_0"] for n in range(LAYERS)]
    sublayer = select_taps(index, "sublayer")
    assert sublayer.unit == "attention/cross-attention/MLP sublayer"
    assert [point.unit for point in sublayer.points] == ["embedding"] + [
        f"decoder layer {n} {role}" for n in range(LAYERS) for role in ROLES]


def test_the_layer_ir_is_the_decoder_block_output_torch_gives(t5):
    from benchmarks.reference import raw_outputs

    feeds = _feeds(2)
    points = select_taps(GraphIndex.build(onnx.load(str(t5.path))), "block").points
    tapped = raw_outputs(onnx.load(str(t5.path)), [point.tensor for point in points], feeds)
    outputs: list[np.ndarray] = []
    decoder = t5.model.decoder
    hooks = [layer.register_forward_hook(lambda module, args, out: outputs.append(out[0].detach().numpy()))
             for layer in decoder.block]
    try:
        with torch.no_grad():
            out = t5.model(decoder_input_ids=torch.from_numpy(feeds["input_ids"]),
                           encoder_outputs=(torch.from_numpy(feeds["encoder_hidden_states"]),),
                           attention_mask=torch.from_numpy(feeds["encoder_attention_mask"]),
                           output_hidden_states=True, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    np.testing.assert_allclose(tapped[0], out.decoder_hidden_states[0].numpy(), atol=1e-5)  # the embedding
    for number, (ours, theirs) in enumerate(zip(tapped[1:], outputs, strict=True)):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=f"layer {number}")


@pytest.mark.parametrize("level,count", [("block", 1 + LAYERS), ("sublayer", 1 + 3 * LAYERS)])
def test_the_scan_matrix_is_the_float64_reference(t5, level, count):
    import redaudit
    from benchmarks.reference import raw_outputs, reduce_as_documented, reference_matrix

    samples = 48
    feeds = _feeds(samples)
    result = redaudit.scan(str(t5.path), inputs=feeds, samples=samples, cka_batch=16, level=level,
                           device="cpu", backend="numpy")
    assert len(result.layers) == count
    raw = raw_outputs(onnx.load(str(t5.path)), result.layer_names, feeds)
    features = [reduce_as_documented(array, samples, layer.layout) for array, layer in zip(raw, result.layers)]
    reference = reference_matrix(features, result.config.cka_batch)
    np.testing.assert_allclose(result.similarity, reference, atol=1e-9)


def test_prune_candidates_are_the_layers_and_their_three_halves(t5):
    """Layers 1 and 2 whole (all three halves), or their halves at ``sublayer``. Layer 0 is not
    removable whole: T5 computes the relative position bias that every layer adds to its scores
    in block 0's self-attention (``has_relative_attention_bias``), from the shapes of that
    layer's normed hidden state and keys — rewiring the layer away would cut them. Its
    feed-forward half is offered alone."""
    from redaudit.prune.candidates import find_candidates

    model = onnx.load(str(t5.path))
    index = GraphIndex.build(model)
    blocks = find_candidates(model, index)
    taps = [point.tensor for point in select_taps(index, "block").points]
    assert [(block.kind, block.layer) for block in blocks] == [("residual", 0), ("transformer-layer", 1),
                                                               ("transformer-layer", 2)]
    assert [block.name for block in blocks[1:]] == taps[2:]
    assert [block.entry for block in blocks[1:]] == taps[1:-1]
    halves = find_candidates(model, index, "sublayer")
    assert [block.kind for block in halves] == ["mlp"] + ROLES * (LAYERS - 1)
    assert [block.name for block in halves] == [point.tensor for point in select_taps(index, "sublayer").points][3:]


def test_removing_a_layer_removes_its_three_halves_and_renumbers_its_cache(t5):
    """Layer 1 of 3 removed: the logits are torch's without ``decoder.block[1]``, none of its
    nodes is left, and the cache outputs of layer 2 are renumbered 1 (its cross-attention keys
    and values, which depend on the encoder only, are unchanged)."""
    import onnxruntime as ort

    from redaudit.prune.candidates import find_candidates
    from redaudit.prune.surgery import remove_blocks

    model = onnx.load(str(t5.path))
    layer = next(block for block in find_candidates(model) if block.layer == 1)
    pruned = remove_blocks(model, [layer])
    assert not [node.name for node in pruned.graph.node if "/block.1/" in node.name]
    assert [output.name for output in pruned.graph.output] == ["logits"] + [
        f"present.{n}.{side}.{kind}" for n in range(LAYERS - 1) for side in ("decoder", "encoder")
        for kind in ("key", "value")]
    feeds = _feeds(2, seed=3)
    after = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"])
    before = ort.InferenceSession(str(t5.path), providers=["CPUExecutionProvider"])
    names = [output.name for output in after.get_outputs()]
    got = dict(zip(names, after.run(None, feeds)))
    old = dict(zip([output.name for output in before.get_outputs()], before.run(None, feeds)))
    for kind in ("key", "value"):
        np.testing.assert_array_equal(got[f"present.1.encoder.{kind}"], old[f"present.2.encoder.{kind}"])
    reference = lm_exports.build_t5(LAYERS)  # the same seed: the same weights
    del reference.decoder.block[1]
    with torch.no_grad():
        expected = reference(decoder_input_ids=torch.from_numpy(feeds["input_ids"]),
                             encoder_outputs=(torch.from_numpy(feeds["encoder_hidden_states"]),),
                             attention_mask=torch.from_numpy(feeds["encoder_attention_mask"]),
                             use_cache=False).logits.numpy()
    np.testing.assert_allclose(got["logits"], expected, atol=1e-4)


def test_a_layer_owns_its_self_and_cross_attention_presents(t5):
    units = find_units(GraphIndex.build(onnx.load(str(t5.path)))).units
    assert [set(unit.cache_outputs) for unit in units] == [
        {f"present.{n}.{side}.{kind}" for side in ("decoder", "encoder") for kind in ("key", "value")}
        for n in range(LAYERS)]
