"""Pruning and healing a model whose weights live in external data: written as .onnx + one data
file, equal to the same pruning of the self-contained copy, never over an input file."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import weights_models as wm
from click.testing import CliRunner

from redaudit.cli.main import cli
from redaudit.core.weights import ALIGNMENT, is_external
from redaudit.prune import prune_model

FAST = ["--samples", "64", "--cka-batch", "32", "--no-latency", "--force"]
X = np.random.default_rng(7).normal(size=(32, 8)).astype(np.float32)


def logits(path: Path) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """The same 3 MB model twice: weights in ``model.data`` beside it (256² matrices, above the
    64 KB the loader reads inline, so they stay external), and self-contained."""
    folder = tmp_path_factory.mktemp("external")
    model = wm.wide_residual_mlp(width=256, blocks=6)
    external = wm.save_external(model, folder / "src" / "model.onnx")
    inline = folder / "inline" / "model.onnx"
    inline.parent.mkdir()
    onnx.save(model, str(inline))
    return external, inline


def prune(*args: object) -> None:
    result = CliRunner().invoke(cli, ["prune", *(str(arg) for arg in args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("heal", ["none", "linear"])
def test_pruned_external_model_equals_the_self_contained_pruning(models, tmp_path, heal):
    external, inline = models
    out_external, out_inline = tmp_path / "a" / "pruned.onnx", tmp_path / "b" / "pruned.onnx"
    prune(external, "--remove", "1", "--heal", heal, *FAST, "-o", out_external)
    prune(inline, "--remove", "1", "--heal", heal, *FAST, "-o", out_inline)
    assert sorted(os.listdir(out_external.parent)) == ["pruned.onnx", "pruned.onnx.data"]
    assert os.listdir(out_inline.parent) == ["pruned.onnx"]  # self-contained stays one file
    assert out_external.stat().st_size < 64 * 1024  # the graph only: weights are in the data file
    written = onnx.load(str(out_external), load_external_data=False)
    offsets = [int(entry.value) for tensor in written.graph.initializer if is_external(tensor)
               for entry in tensor.external_data if entry.key == "offset"]
    assert offsets and all(offset % ALIGNMENT == 0 for offset in offsets)
    np.testing.assert_allclose(logits(out_external), logits(out_inline), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("heal", "iterative"), [("none", False), ("linear", False), ("linear", True)])
def test_a_weightless_model_is_pruned_and_healed_from_its_files(models, tmp_path, heal, iterative):
    external, inline = models
    options = {"remove": 2, "heal": heal, "iterative": iterative, "samples": 64, "cka_batch": 32, "latency": False, "measure_msrs": False, "force": True}
    result = prune_model(str(external), output=tmp_path / "w" / "pruned.onnx", **options)
    reference = prune_model(str(inline), output=tmp_path / "r" / "pruned.onnx", **options)
    assert result.removed == reference.removed
    assert any(is_external(t) for t in result.model.graph.initializer)  # weightless in memory: references
    assert result.model.ByteSize() < 20 * 1024**2  # the graph and the new maps only
    np.testing.assert_allclose(logits(tmp_path / "w" / "pruned.onnx"), logits(tmp_path / "r" / "pruned.onnx"),
                               rtol=0, atol=1e-6)


def test_an_output_whose_data_file_is_an_input_is_refused(models, tmp_path):
    external, _ = models
    source_data = sorted(os.listdir(external.parent))
    npz = tmp_path / "probe.onnx.data"
    with open(npz, "wb") as handle:
        np.savez(handle, x=X)
    for output, args in ((external.parent / "model", []), (tmp_path / "probe.onnx", ["--inputs", npz])):
        result = CliRunner().invoke(cli, ["prune", str(external), "--remove", "1", *FAST, *map(str, args),
                                          "-o", str(output)])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1, result.stderr
        # the CLI guard (cli/guard.py) or the writer itself: either names the data file and asks for another path
        assert ".data" in result.stderr and "another" in result.stderr
    assert sorted(os.listdir(external.parent)) == source_data
    assert sorted(os.listdir(tmp_path)) == ["probe.onnx.data"]


def test_a_pruned_model_derived_in_memory_keeps_the_weights_folder(models):
    """Surgery's result is a graph over the source's files: its sessions, size and scan use them."""
    from redaudit.core.prepared import PreparedModel
    from redaudit.prune import find_candidates, remove_blocks

    external, inline = models
    prepared = PreparedModel.load(str(external))
    pruned = prepared.derived(remove_blocks(prepared.proto, find_candidates(prepared.proto, prepared.index)[:1]))
    reference = PreparedModel.load(str(inline))
    expected = remove_blocks(reference.proto, find_candidates(reference.proto, reference.index)[:1])
    assert pruned.folder == str(external.parent) and pruned.proto.ByteSize() < 64 * 1024
    assert abs(pruned.size_bytes - expected.ByteSize()) < 64 * 1024  # the weights are counted, by reference
    session, _ = pruned.sessions.create(pruned.proto)
    want = ort.InferenceSession(expected.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    np.testing.assert_array_equal(session.run(None, {"x": X})[0], want)
