"""Reduction decided from the run when typing cannot tell a tap's rank; layouts stated and overridable."""
from __future__ import annotations

import json

import numpy as np
import pytest

import redaudit
import tap_models
from benchmarks.reference import raw_outputs, reduce_as_documented, reference_matrix
from redaudit.cli.main import cli
from redaudit.core.graph import GraphIndex

SAMPLES = 192


def _token_inputs(seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).normal(size=(SAMPLES, 96)).astype(np.float32)}


def _reference(model, result, inputs) -> np.ndarray:
    raw = raw_outputs(model, result.layer_names, inputs)
    features = [reduce_as_documented(array, SAMPLES, layer.layout, layer.layout_source == "recurrent")
                for array, layer in zip(raw, result.layers)]
    return reference_matrix(features, result.config.cka_batch)


def test_hidden_rank_is_pooled_exactly_like_its_static_twin():
    hidden, static = tap_models.token_blocks(hidden_rank=True), tap_models.token_blocks(hidden_rank=False)
    assert GraphIndex.build(hidden).types["block0_out"].shape is None  # typing really cannot tell
    inputs = _token_inputs()
    found = redaudit.scan(hidden, inputs=inputs, samples=SAMPLES, cka_batch=64)
    twin = redaudit.scan(static, inputs=inputs, samples=SAMPLES, cka_batch=64)
    assert found.layer_names == twin.layer_names == ["stem_out", "block0_out", "block1_out", "block2_out"]
    assert np.array_equal(found.similarity, twin.similarity)
    assert found.msrs == twin.msrs
    for layer in found.layers:
        assert layer.shape == ()  # nothing static ...
        assert layer.runtime_shape == ("N", 6, 16)  # ... but the run knows
        assert (layer.reduced_axes, layer.layout, layer.layout_source) == ((1,), "tokens", "graph")
    np.testing.assert_allclose(found.similarity, _reference(hidden, found, inputs), atol=1e-6)


def test_conv1d_maps_are_channels_and_match_the_reference():
    model = tap_models.conv1d_blocks()
    inputs = {"x": np.random.default_rng(2).normal(size=(SAMPLES, 4, 12)).astype(np.float32)}
    result = redaudit.scan(model, inputs=inputs, samples=SAMPLES, cka_batch=64)
    assert [layer.reduced_axes for layer in result.layers] == [(2,)] * 4
    assert {(layer.layout, layer.layout_source) for layer in result.layers} == {("channels", "graph")}
    assert result.layers[0].runtime_shape == ("N", 8, 12)
    np.testing.assert_allclose(result.similarity, _reference(model, result, inputs), atol=1e-6)


def test_layout_override_end_to_end(runner, tmp_path, save_model):
    model = tap_models.conv1d_blocks()
    path = save_model(model)
    inputs = {"x": np.random.default_rng(3).normal(size=(SAMPLES, 4, 12)).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **inputs)
    out = tmp_path / "r.json"
    done = runner.invoke(cli, ["scan", str(path), "--inputs", str(tmp_path / "in.npz"), "--samples", str(SAMPLES),
                                "--cka-batch", "64", "--layout", "block1_out=tokens", "--json", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    layers = {item["name"]: item for item in json.loads(out.read_text())["layers"]}
    assert (layers["block1_out"]["reduced_axes"], layers["block1_out"]["layout"],
            layers["block1_out"]["layout_source"]) == ([1], "tokens", "override")
    assert (layers["block0_out"]["reduced_axes"], layers["block0_out"]["layout"]) == ([2], "channels")
    assert layers["block0_out"]["runtime_shape"] == ["N", 8, 12]
    from redaudit.report.json_report import read_json
    reloaded = read_json(out)
    assert [row.reduction for row in reloaded.layer_rows()][:3] == [
        "channels: mean axis 2", "channels: mean axis 2", "tokens: mean axis 1 (--layout)"]
    assert reloaded.layers[2].runtime_shape == ("N", 8, 12)
    result = redaudit.scan(model, inputs=inputs, samples=SAMPLES, cka_batch=64, layouts={"block1_out": "tokens"})
    plain = redaudit.scan(model, inputs=inputs, samples=SAMPLES, cka_batch=64)
    assert not np.allclose(result.similarity, plain.similarity)  # the override changed the features
    np.testing.assert_allclose(result.similarity, _reference(model, result, inputs), atol=1e-6)


@pytest.mark.parametrize("layout, message", [("nosuch=tokens", "does not tap"),
                                             ("stem_out=channels", None)])
def test_layout_names_must_be_tapped_3d_tensors(runner, tmp_path, save_model, layout, message):
    path = save_model(tap_models.token_blocks(hidden_rank=False) if message else tap_models.conv1d_blocks())
    out = tmp_path / "r.json"
    done = runner.invoke(cli, ["scan", str(path), "--samples", "64", "--cka-batch", "32", "--layout", layout,
                                "--json", str(out), "--quiet"])
    if message is None:  # a 3-D tap: accepted
        assert done.exit_code == 0, done.output
        return
    assert done.exit_code == 2
    assert message in done.output and len(done.output.strip().splitlines()) == 1
    assert not out.exists()


def test_layout_on_a_4d_tap_is_refused(runner, save_model):
    import models
    path = save_model(models.residual_cnn(blocks=2))
    done = runner.invoke(cli, ["scan", str(path), "--samples", "32", "--layout", "block0_out=tokens"])
    assert done.exit_code == 2
    assert "only chooses between" in done.output


def test_all_degenerate_scan_says_why_in_one_line_and_exits_0(runner, tmp_path, save_model):
    import models
    path = save_model(models.mlp(constant_layer=True))
    out = tmp_path / "r.json"
    done = runner.invoke(cli, ["scan", str(path), "--tap", "a0", "--tap", "a0_zero", "--samples", "64",
                               "--cka-batch", "32", "--json", str(out)])
    assert done.exit_code == 0, done.output
    data = json.loads(out.read_text())
    assert data["msrs"] is None and data["msrs_batches"] == [None, None]
    result = redaudit.scan(str(path), taps=["a0", "a0_zero"], samples=64, cka_batch=32)
    (reason,) = [w for w in result.warnings if w.startswith("MSRS cannot be computed")]
    assert "\n" not in reason and "a0_zero" in reason and "likely cause: synthetic probe inputs" in reason
    assert np.isnan(result.msrs) and reason == result.msrs_unavailable_reason()
    assert " ".join(reason.split()) in " ".join(done.output.split())  # the terminal says it (rich may wrap)


def test_conv_map_flattened_and_transposed_to_tokens_is_tokens():
    """SVTR-style OCR heads: (N, C, H, W) → Flatten(2) → (N, C, H·W) → Transpose(0, 2, 1) → (N, T, C):
    tokens, although the nearest weighted producer is a convolution."""
    from onnx import TensorProto, helper

    from models import _init, make_model
    from redaudit.core.augment import decide_reduction
    from redaudit.core.tap import TapPoint

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "flat"], ["flattened"]),
             helper.make_node("Transpose", ["flattened"], ["tokens"], perm=[0, 2, 1]),
             helper.make_node("Relu", ["flattened"], ["channels"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])],
                       [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", 20, 6]),
                        helper.make_tensor_value_info("channels", TensorProto.FLOAT, ["N", 6, 20])],
                       [_init("w", np.ones((6, 3, 3, 3))), helper.make_tensor("flat", TensorProto.INT64, [3], [0, 6, 20])])
    index = GraphIndex.build(model)
    decided = {name: decide_reduction(index, TapPoint(name, "", "", ()), 3, "pool") for name in ("tokens", "channels")}
    assert (decided["tokens"].layout, decided["tokens"].axes) == ("tokens", (1,))
    assert (decided["channels"].layout, decided["channels"].axes) == ("channels", (2,))


def test_runtime_shape_marks_only_dims_that_vary():
    from redaudit.core.shapes import RuntimeShapes

    shapes = RuntimeShapes([0, 2])
    shapes.add([np.array([[256, 20, 120], [256, 20, 120]]), np.array([[7, 2, 256, 12]])])
    shapes.add([np.array([[100, 21, 120]]), np.array([[7, 2, 100, 12]])])
    assert shapes.shape(0) == ("N", "?", 120)  # the batch axis is N, the token count really varied
    assert shapes.shape(1) == (7, 2, "N", 12)  # a time-major recurrent output: batch on axis 2


def test_a_wrongly_declared_output_shape_does_not_break_the_shape_outputs():
    """A quantized CRNN (ddddocr's common_old.onnx) declares its rank-3 output as (1, seqlen);
    onnxruntime's Shape kernel trusted the declaration and failed once the tap's shape was
    fetched (benchmarks/real_models.py runs that model). This small twin does not trigger the
    onnxruntime failure; it checks that the runtime shape, not the declaration, is reported."""
    from onnx import TensorProto, helper

    from models import _init, make_model

    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Compress", ["target", "keep"], ["hidden_target"]),  # typing cannot follow
             helper.make_node("Reshape", ["h", "hidden_target"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "S"])],  # really (N, 4, 3)
                       [_init("w", np.random.default_rng(0).normal(size=(3, 3))),
                        helper.make_tensor("target", TensorProto.INT64, [3], [0, 4, 3]),
                        helper.make_tensor("keep", TensorProto.BOOL, [3], [True, True, True])])
    result = redaudit.scan(model, taps=["h", "y"], samples=32, cka_batch=16)
    assert [layer.runtime_shape for layer in result.layers] == [("N", 4, 3), ("N", 4, 3)]
