"""The --quiet contract (exactly the result line on stdout; warnings, and only warnings, on
stderr), an undefined MSRS printed cleanly, and --dim names checked against the model."""
from __future__ import annotations

import re

import numpy as np
from onnx import TensorProto, helper

import models
from models import _init, make_model
from redaudit.cli.main import cli

RESULT_LINE = re.compile(r"^MSRS \d+\.\d{4} ± \d+\.\d{4}$")


def test_quiet_prints_exactly_the_result_line(runner, residual_model_path, tmp_path):
    outputs = [tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.png"]
    result = runner.invoke(cli, ["scan", str(residual_model_path), "--samples", "64", "--cka-batch", "32",
                                 "--device", "cpu", "--quiet", "--json", str(outputs[0]), "--html",
                                 str(outputs[1]), "--heatmap", str(outputs[2])])
    assert result.exit_code == 0, result.output
    assert RESULT_LINE.match(result.stdout) and result.stdout.count("\n") == 1, repr(result.stdout)
    assert all(path.exists() for path in outputs)
    stderr = result.stderr.splitlines()
    assert stderr and all(line.startswith("warning: ") for line in stderr), stderr
    assert any("probe inputs are synthetic" in line for line in stderr)


def test_without_quiet_reports_are_announced_on_stderr(runner, residual_model_path, tmp_path):
    path = tmp_path / "r.json"
    result = runner.invoke(cli, ["scan", str(residual_model_path), "--samples", "64", "--cka-batch", "32",
                                 "--device", "cpu", "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.stderr and "wrote" not in result.stdout
    assert "warning: probe inputs are synthetic" in result.stderr


def _two_halves_model():
    """Layer A reads x[:, :2], layer B reads x[:, 2:]: zeroing one half makes that layer constant."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    weights_a = np.vstack([rng.normal(size=(2, 3)), np.zeros((2, 3))])
    weights_b = np.vstack([np.zeros((2, 3)), rng.normal(size=(2, 3))])
    nodes = [helper.make_node("MatMul", ["x", "wa"], ["a"], name="a"),
             helper.make_node("MatMul", ["x", "wb"], ["b"], name="b"),
             helper.make_node("Add", ["a", "b"], ["y"], name="sum")]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    return make_model(nodes, [x], [y], [_init("wa", weights_a), _init("wb", weights_b)])


def test_quiet_line_when_every_batch_is_degenerate(runner, save_model, tmp_path):
    path = save_model(_two_halves_model())
    rng = np.random.default_rng(1)
    data = rng.normal(size=(16, 4)).astype(np.float32)
    data[:8, :2] = 0.0  # batch 1: layer a constant
    data[8:, 2:] = 0.0  # batch 2: layer b constant
    np.savez(tmp_path / "in.npz", x=data)
    result = runner.invoke(cli, ["scan", str(path), "--level", "layer", "--inputs", str(tmp_path / "in.npz"),
                                 "--samples", "16", "--cka-batch", "8", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "MSRS n/a (every batch degenerate: 2 of 2 batches had constant or non-finite layers)\n"
    assert "nan" not in result.stdout


def _symbolic_conv():
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    nodes = [helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2")]
    y = helper.make_tensor_value_info("r2", TensorProto.FLOAT, ["batch", 4, "height", "width"])
    return make_model(nodes, [x], [y], [_init("w1", rng.normal(size=(4, 3, 3, 3))),
                                        _init("w2", rng.normal(size=(4, 4, 3, 3)))])


def test_unknown_dim_names_are_an_error_listing_the_models_dims(runner, save_model):
    path = save_model(_symbolic_conv())
    result = runner.invoke(cli, ["scan", str(path), "--dim", "hieght=8", "--device", "cpu"])
    assert result.exit_code == 2
    assert result.stderr == ("error: --dim hieght: the model has no symbolic dimension 'hieght'; its symbolic "
                             "dimensions are: height, width\n")
    batch = runner.invoke(cli, ["scan", str(path), "--dim", "batch=4", "--device", "cpu"])
    assert batch.exit_code == 2 and "is the batch axis" in batch.stderr and batch.stderr.count("\n") == 1
    fixed = runner.invoke(cli, ["scan", str(models and save_model(models.mlp(), "mlp.onnx")), "--dim", "T=4"])
    assert fixed.exit_code == 2 and "none (every non-batch axis is fixed)" in fixed.stderr
    good = runner.invoke(cli, ["scan", str(path), "--dim", "height=8", "--dim", "width=6", "--samples", "16",
                               "--cka-batch", "8", "--device", "cpu", "--quiet"])
    assert good.exit_code == 0, good.output


def test_huge_scans_are_refused_with_one_line(runner, save_model, residual_model_path):
    path = save_model(_symbolic_conv())
    result = runner.invoke(cli, ["scan", str(path), "--dim", "height=100000", "--dim", "width=100000",
                                 "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: this scan needs about ")
    assert "--dim" in result.stderr and result.stdout == ""
    result = runner.invoke(cli, ["scan", str(residual_model_path), "--samples", "1000000000", "--cka-batch",
                                 "1000000000", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "--cka-batch" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
