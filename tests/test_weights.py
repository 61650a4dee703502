"""core/weights.py: one tensor read by memory map, a model written as .onnx + one data file."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import weights_models as wm
from onnx import numpy_helper

from redaudit.core import weights
from redaudit.core.weights import (
    ALIGNMENT,
    WeightsError,
    data_file_path,
    tensor_array,
    write_model,
)
from redaudit.errors import UnsafeModelError


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def refs(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


@pytest.fixture
def source(tmp_path: Path) -> tuple[onnx.ModelProto, Path]:
    model = wm.wide_residual_mlp(width=48, blocks=3)
    return model, wm.save_external(model, tmp_path / "src" / "model.onnx")


def test_tensor_array_maps_external_bytes_and_reads_inline(source):
    model, path = source
    weightless = onnx.load(str(path), load_external_data=False)
    expected = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    external = 0
    for tensor in weightless.graph.initializer:
        array = tensor_array(tensor, path.parent)
        np.testing.assert_array_equal(array, expected[tensor.name])
        assert array.dtype == expected[tensor.name].dtype and array.shape == expected[tensor.name].shape
        if weights.is_external(tensor):
            external += 1
            assert isinstance(array.base, np.memmap) or isinstance(array, np.memmap)
            assert not array.flags.writeable
    assert external == 7  # stem, 3 × (W1, W2), head; the 48-float biases stay inline


def test_tensor_array_keeps_the_external_data_rules(source, tmp_path):
    _, path = source
    tensor = weights.external_tensors(onnx.load(str(path), load_external_data=False))[0]
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * 65536)
    (path.parent / "link.bin").symlink_to(outside)
    for location in ("../outside.bin", str(outside), "link.bin"):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
        with pytest.raises(UnsafeModelError):
            tensor_array(tensor, path.parent)
    with pytest.raises(WeightsError, match="folder is unknown"):
        tensor_array(tensor, None)


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "read-write"])
def test_a_no_op_rewrite_copies_every_tensor_byte_for_byte(source, tmp_path, monkeypatch, kernel_copy):
    model, path = source
    if not kernel_copy:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    weightless = onnx.load(str(path), load_external_data=False)
    before = weightless.SerializeToString()
    out = tmp_path / "out" / "copy.onnx"
    written = write_model(weightless, out, path.parent)
    assert weightless.SerializeToString() == before  # the caller's proto is not touched
    assert sorted(os.listdir(out.parent)) == ["copy.onnx", "copy.onnx.data"]
    assert written == out.stat().st_size + data_file_path(out).stat().st_size
    onnx.checker.check_model(str(out), full_check=True)
    copy = onnx.load(str(out), load_external_data=False)
    expected = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for tensor in copy.graph.initializer:
        np.testing.assert_array_equal(tensor_array(tensor, out.parent), expected[tensor.name])
        if weights.is_external(tensor):
            assert refs(tensor)["location"] == "copy.onnx.data"
            assert int(refs(tensor)["offset"]) % ALIGNMENT == 0
    x = np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(out, x), run(path, x))


def test_a_self_contained_model_is_written_as_before(tmp_path):
    model = wm.wide_residual_mlp(width=48, blocks=2)
    out = tmp_path / "small.onnx"
    assert write_model(model, out) == out.stat().st_size
    assert out.read_bytes() == model.SerializeToString()
    assert os.listdir(tmp_path) == ["small.onnx"]


def test_new_inline_tensors_join_the_data_file(source, tmp_path):
    """A healing map added to a weightless model (inline, as surgery makes it) moves out."""
    _model, path = source
    weightless = onnx.load(str(path), load_external_data=False)
    graph = weightless.graph
    mixing = np.random.default_rng(3).normal(0, 0.2, (48, 48)).astype(np.float32)  # 9 KiB: above INLINE_LIMIT
    graph.initializer.append(numpy_helper.from_array(mixing, "head.scale"))
    head = next(node for node in graph.node if node.name == "head")
    head.input[0] = "scaled"
    graph.node.insert(list(graph.node).index(head),
                      onnx.helper.make_node("MatMul", ["block2.out", "head.scale"], ["scaled"], name="scale"))
    out = tmp_path / "healed.onnx"
    write_model(weightless, out, path.parent)
    added = next(t for t in onnx.load(str(out), load_external_data=False).graph.initializer if t.name == "head.scale")
    assert weights.is_external(added) and int(refs(added)["offset"]) % ALIGNMENT == 0
    x = np.random.default_rng(2).normal(size=(4, 8)).astype(np.float32)
    inline = onnx.ModelProto()
    inline.CopyFrom(weightless)
    onnx.load_external_data_for_model(inline, str(path.parent))
    expected = ort.InferenceSession(inline.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(run(out, x), expected)


def test_a_failure_mid_write_leaves_no_output_and_no_data_file(source, tmp_path, monkeypatch):
    _, path = source
    weightless = onnx.load(str(path), load_external_data=False)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    copies = []
    real_copy = weights._copy_range

    def copy_then_fail(*args):  # an injected failure after some tensors were copied (a full disk)
        if len(copies) == 3:
            raise OSError(28, "No space left on device")
        copies.append(args)
        real_copy(*args)

    monkeypatch.setattr(weights, "_copy_range", copy_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_model(weightless, out_folder / "pruned.onnx", path.parent)
    assert os.listdir(out_folder) == []


def test_the_data_file_never_replaces_a_source_data_file(source):
    _, path = source
    weightless = onnx.load(str(path), load_external_data=False)
    with pytest.raises(WeightsError, match="data file the model's weights are read from"):
        write_model(weightless, path.parent / "model", path.parent)  # model + ".data" = the source's data


def test_without_external_data_is_checkable_anywhere(source, tmp_path, monkeypatch):
    _, path = source
    weightless = onnx.load(str(path), load_external_data=False)
    monkeypatch.chdir(tmp_path)  # the checker would look for model.data here
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(weightless, full_check=True)
    onnx.checker.check_model(weights.without_external_data(weightless), full_check=True)


def test_a_range_two_tensors_share_is_copied_once(source, tmp_path):
    """Tied weights (an exporter's one range for the embedding and the head) stay one range."""
    _, path = source
    weightless = onnx.load(str(path), load_external_data=False)
    graph = weightless.graph
    w1 = next(t for t in graph.initializer if t.name == "block0.W1")
    twin = onnx.TensorProto()
    twin.CopyFrom(w1)
    twin.name = "block0.W1_tied"
    graph.initializer.append(twin)
    next(node for node in graph.node if node.name == "block1.fc1").input[1] = "block0.W1_tied"
    out = tmp_path / "tied.onnx"
    write_model(weightless, out, path.parent)
    written = {t.name: refs(t) for t in onnx.load(str(out), load_external_data=False).graph.initializer}
    assert written["block0.W1"] == written["block0.W1_tied"]
    ranges = {(int(r["offset"]), int(r["length"])) for r in written.values() if r}
    assert len(ranges) == sum(1 for r in written.values() if r) - 1
    assert data_file_path(out).stat().st_size == max(offset + length for offset, length in ranges)


def test_a_self_contained_model_past_the_limit_gets_a_data_file(tmp_path, monkeypatch):
    """Healing maps can push a model with no external data past one protobuf: decided by size."""
    model = wm.wide_residual_mlp(width=48, blocks=2)
    monkeypatch.setattr(weights, "EXTERNAL_DATA_THRESHOLD", model.ByteSize() // 2)
    out = tmp_path / "big.onnx"
    write_model(model, out)
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    x = np.random.default_rng(4).normal(size=(4, 8)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(run(out, x), expected)
