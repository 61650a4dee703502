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


def _cross_attention_decoder(layer_seeds: list[int], hidden: int = 8, vocab: int = 11) -> onnx.ModelProto:
    """Decoder layers self-attention + cross-attention + MLP, built by hand as transformers 4.57's
    T5Attention is exported (the real optimum-onnx 0.1.0 ``decoder_model.onnx``): the
    cross-attention reshapes the keys/values it projects from ``encoder_hidden_states`` with the
    batch size read off its *query's* input (``Shape`` of the normed stream), and returns them
    as ``present.N.encoder.key/value``, which nothing else reads (the scores read another
    ``Transpose`` of the reshaped keys). Layer weights come from ``layer_seeds`` (one per layer),
    so a model of the kept layers' seeds is the expected result of removing the others."""
    from onnx import TensorProto, helper

    weights: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, rng, *shape: int) -> str:
        weights.append(helper.make_tensor(name, TensorProto.FLOAT, shape,
                                          (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32).ravel()))
        return name

    def const(name: str, values: list[int]) -> str:
        weights.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output.removesuffix("_output_0"), **attrs))
        return output

    base = np.random.default_rng(100)
    zero, tail = const("zero", [0]), const("tail", [-1, hidden])
    h = node("Gather", [weight("shared.weight", base, vocab, hidden), "input_ids"], "/decoder/embed/Gather_output_0")
    outputs = []
    for number, seed in enumerate(layer_seeds):
        rng, p = np.random.default_rng(seed), f"/decoder/block.{number}"
        w = {key: weight(f"block.{seed}.{key}", rng, hidden, hidden) for key in ("q", "k", "v", "o", "cq", "ck", "cv", "co",
                                                                                  "wi", "wo")}
        gains = [weight(f"block.{seed}.norm{half}", rng, hidden) for half in range(3)]
        # layer.0: self-attention
        n = node("Mul", [h, gains[0]], f"{p}/layer.0/norm_output_0")
        q, k = node("MatMul", [n, w["q"]], f"{p}/layer.0/q_output_0"), node("MatMul", [n, w["k"]], f"present.{number}.decoder.key")
        v = node("MatMul", [n, w["v"]], f"present.{number}.decoder.value")
        s = node("Softmax", [node("MatMul", [q, node("Transpose", [k], f"{p}/layer.0/kt_output_0", perm=[0, 2, 1])],
                                  f"{p}/layer.0/scores_output_0")], f"{p}/layer.0/probs_output_0", axis=-1)
        a = node("MatMul", [node("MatMul", [s, v], f"{p}/layer.0/context_output_0"), w["o"]], f"{p}/layer.0/o_output_0")
        h = node("Add", [h, a], f"{p}/layer.0/Add_output_0")
        # layer.1: cross-attention, keys/values reshaped with the query side's batch size
        n = node("Mul", [h, gains[1]], f"{p}/layer.1/norm_output_0")
        batch = node("Gather", [node("Shape", [n], f"{p}/layer.1/Shape_output_0"), zero], f"{p}/layer.1/batch_output_0")
        target = node("Concat", [batch, tail], f"{p}/layer.1/target_output_0", axis=0)
        k = node("Reshape", [node("MatMul", ["encoder_hidden_states", w["ck"]], f"{p}/layer.1/k_output_0"), target],
                 f"{p}/layer.1/Reshape_1_output_0")
        node("Transpose", [k], f"present.{number}.encoder.key", perm=[0, 1, 2])
        v = node("Transpose", [node("Reshape", [node("MatMul", ["encoder_hidden_states", w["cv"]], f"{p}/layer.1/v_output_0"),
                                                target], f"{p}/layer.1/Reshape_2_output_0")],
                 f"present.{number}.encoder.value", perm=[0, 1, 2])
        q = node("MatMul", [n, w["cq"]], f"{p}/layer.1/q_output_0")
        s = node("Softmax", [node("MatMul", [q, node("Transpose", [k], f"{p}/layer.1/Transpose_3_output_0", perm=[0, 2, 1])],
                                  f"{p}/layer.1/scores_output_0")], f"{p}/layer.1/probs_output_0", axis=-1)
        a = node("MatMul", [node("MatMul", [s, v], f"{p}/layer.1/context_output_0"), w["co"]], f"{p}/layer.1/o_output_0")
        h = node("Add", [h, a], f"{p}/layer.1/Add_output_0")
        # layer.2: the MLP
        n = node("Mul", [h, gains[2]], f"{p}/layer.2/norm_output_0")
        f = node("MatMul", [node("Relu", [node("MatMul", [n, w["wi"]], f"{p}/layer.2/wi_output_0")], f"{p}/layer.2/relu_output_0"),
                            w["wo"]], f"{p}/layer.2/wo_output_0")
        h = node("Add", [h, f], f"{p}/layer.2/Add_output_0")
        outputs += [helper.make_tensor_value_info(f"present.{number}.{side}.{kind}", TensorProto.FLOAT, [None] * 3)
                    for side in ("decoder", "encoder") for kind in ("key", "value")]
    node("MatMul", [h, weight("lm_head.weight", base, hidden, vocab)], "logits")
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "decoder_sequence_length"]),
              helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT,
                                            ["batch_size", "encoder_sequence_length", hidden])]
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "decoder_sequence_length", vocab])
    graph = helper.make_graph(nodes, "decoder", inputs, [logits, *outputs], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("removed", [0, 1, 2])
def test_a_layer_whose_cross_attention_reshapes_with_the_query_batch_is_removable(removed):
    """The real file's cross-attention: removing the layer removes its key/value projections of
    the encoder states (read only by its present.N.encoder.* and its scores) and the Shape of its
    normed stream that sized them; the result is the model built without that layer, cache
    names renumbered."""
    import onnxruntime as ort

    from redaudit.prune.candidates import find_candidates
    from redaudit.prune.surgery import remove_blocks

    seeds = [7, 8, 9]
    model = _cross_attention_decoder(seeds)
    units = find_units(GraphIndex.build(model)).units
    assert [[sublayer.role for sublayer in unit.sublayers] for unit in units] == [ROLES] * 3
    blocks = find_candidates(model)
    assert [(block.kind, block.layer) for block in blocks] == [("transformer-layer", n) for n in range(3)]
    pruned = remove_blocks(model, [blocks[removed]])
    expected = _cross_attention_decoder([seed for number, seed in enumerate(seeds) if number != removed])
    assert [output.name for output in pruned.graph.output] == [output.name for output in expected.graph.output]
    assert len(pruned.graph.node) == len(expected.graph.node)
    rng = np.random.default_rng(4)
    feeds = {"input_ids": rng.integers(0, 11, (2, 5)), "encoder_hidden_states": rng.standard_normal((2, 6, 8)).astype(np.float32)}
    got = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    want = ort.InferenceSession(expected.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for ours, theirs in zip(got, want, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
