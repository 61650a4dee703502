"""Every bad input gets one line on stderr, exit code 2, and no traceback."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import models
from redaudit.cli.main import cli


def _run(runner, *args):
    result = runner.invoke(cli, ["scan", *map(str, args), "--samples", "256", "--quiet"])
    return result


def _assert_user_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_file(runner, tmp_path):
    _assert_user_error(_run(runner, tmp_path / "nope.onnx"), "not found")


def test_not_onnx(runner, tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a model\n" * 20)
    _assert_user_error(_run(runner, path), "not an ONNX model")


def test_empty_file(runner, tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    _assert_user_error(_run(runner, path), "empty")


def test_truncated_file(runner, tmp_path, residual_model_path):
    data = residual_model_path.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    _assert_user_error(_run(runner, path), "not an ONNX model")


def test_checker_rejects(runner, tmp_path):
    model = models.mlp()
    model.graph.node[0].input[1] = "no_such_weight"  # dangling input: invalid topology
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    _assert_user_error(_run(runner, path), "rejected by the ONNX checker")


def test_size_limit_and_flag_to_raise_it(runner, residual_model_path):
    _assert_user_error(runner.invoke(cli, ["scan", str(residual_model_path), "--max-model-size", "1K", "--quiet"]),
                       "limit", "--max-model-size")
    ok = runner.invoke(cli, ["scan", str(residual_model_path), "--max-model-size", "10M", "--quiet", "--samples", "256"])
    assert ok.exit_code == 0, ok.output


def _external_model(folder: Path, location: str) -> Path:
    """A one-MatMul model whose weight lives in external data at ``location``."""
    weight = np.arange(16, dtype=np.float32).reshape(4, 4)
    tensor = numpy_helper.from_array(weight, "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(weight.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_missing(runner, tmp_path):
    _assert_user_error(_run(runner, _external_model(tmp_path, "weights.bin")), "missing")


def test_external_data_absolute_path(runner, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    _assert_user_error(_run(runner, _external_model(tmp_path / "m", str(secret)) if (tmp_path / "m").mkdir() is None else None),
                       "absolute path")


def test_external_data_parent_traversal(runner, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    _assert_user_error(_run(runner, _external_model(tmp_path / "m", "../outside.bin")), "outside the model's folder")


def test_external_data_symlink_out(runner, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    os.symlink(tmp_path / "outside.bin", tmp_path / "m" / "weights.bin")
    _assert_user_error(_run(runner, _external_model(tmp_path / "m", "weights.bin")), "resolves outside")


def test_external_data_inside_folder_loads(tmp_path):
    from redaudit.core.model import load_model

    path = _external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    loaded = load_model(path)
    weight = numpy_helper.to_array(loaded.proto.graph.initializer[0])
    assert weight[3, 3] == 15.0


def test_external_data_truncated(runner, tmp_path):
    path = _external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    _assert_user_error(_run(runner, path), "shorter")


def test_inputs_file_problems(runner, tmp_path, residual_model_path):
    not_npz = tmp_path / "inputs.npz"
    not_npz.write_text("nope")
    _assert_user_error(runner.invoke(cli, ["scan", str(residual_model_path), "--inputs", str(not_npz), "--quiet"]),
                       "cannot read")
    wrong_name = tmp_path / "wrong.npz"
    np.savez(wrong_name, images=np.zeros((300, 3, 8, 8), np.float32))
    _assert_user_error(runner.invoke(cli, ["scan", str(residual_model_path), "--inputs", str(wrong_name), "--quiet"]),
                       "input")
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, input=np.zeros((300, 3, 9, 9), np.float32))
    _assert_user_error(runner.invoke(cli, ["scan", str(residual_model_path), "--inputs", str(wrong_shape), "--quiet"]),
                       "axis 2 must be 8")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, input=np.array([{"a": 1}] * 4, dtype=object))
    _assert_user_error(runner.invoke(cli, ["scan", str(residual_model_path), "--inputs", str(pickled), "--quiet"]),
                       "pickle")


def test_too_few_samples_for_cka_batch(runner, residual_model_path):
    _assert_user_error(runner.invoke(cli, ["scan", str(residual_model_path), "--samples", "100", "--quiet"]),
                       "--cka-batch")


def test_unknown_tap(runner, residual_model_path):
    _assert_user_error(runner.invoke(cli, ["scan", str(residual_model_path), "--tap", "nope", "--tap", "stem_out",
                                           "--quiet"]), "no tensor named 'nope'")


def test_tap_weight_is_refused(runner, residual_model_path):
    _assert_user_error(runner.invoke(cli, ["scan", str(residual_model_path), "--tap", "stem_w", "--quiet"]),
                       "weight or graph input")


def test_cupy_backend_unavailable(runner, residual_model_path):
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    _assert_user_error(runner.invoke(cli, ["scan", str(residual_model_path), "--backend", "cupy", "--quiet"]),
                       "cupy")


def test_cuda_device_unavailable(runner, residual_model_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA provider present")
    _assert_user_error(runner.invoke(cli, ["scan", str(residual_model_path), "--device", "cuda", "--quiet"]),
                       "CUDAExecutionProvider")


def test_directory_instead_of_file(runner, tmp_path):
    _assert_user_error(_run(runner, tmp_path), "not a file")
