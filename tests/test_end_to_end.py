"""End to end through the CLI on generated models and a real pretrained model (magika)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import models
from redaudit.cli.main import cli


def test_scan_generated_model_with_real_inputs(runner, tmp_path, residual_model_path):
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, input=np.random.default_rng(0).normal(size=(600, 3, 8, 8)).astype(np.float32))
    result = runner.invoke(cli, ["scan", str(residual_model_path), "--inputs", str(inputs)])
    assert result.exit_code == 0, result.output
    assert "MSRS" in result.output and "real inputs" in result.output.replace("\n", " ")
    assert "block2_out" in result.output
    assert "dropped the final partial batch of 88 samples" in result.output.replace("\n", " ")


def test_taps_lists_blocks_and_layers(runner, residual_model_path):
    blocks = runner.invoke(cli, ["taps", str(residual_model_path)])
    assert blocks.exit_code == 0, blocks.output
    for name in ("stem_out", "block0_out", "block1_out", "block2_out"):
        assert name in blocks.output
    assert "4 taps at level block" in blocks.output
    layers = runner.invoke(cli, ["taps", str(residual_model_path), "--level", "layer"])
    assert "8 taps at level layer" in layers.output  # stem + 2 convs per block + fc


def _magika_inputs(tmp_path, samples: int):
    """Real probe data for magika: byte features of real files, built by the demo's own script."""
    import importlib.util
    import site
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "magika_inputs.py"
    spec = importlib.util.spec_from_file_location("magika_inputs", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = json.loads((module.model_dir() / "config.min.json").read_text())
    data = module.collect(Path(site.getsitepackages()[0]) / "numpy", samples, config)
    assert data.shape == (samples, 2048) and data.dtype == np.int32
    path = tmp_path / "magika_inputs.npz"
    np.savez(path, bytes=data)
    return path


@pytest.mark.slow
def test_magika_scan_through_cli_with_json_and_html(runner, tmp_path, magika_model):
    inputs = _magika_inputs(tmp_path, 512)
    json_path, html_path, png_path = tmp_path / "out" / "m.json", tmp_path / "out" / "m.html", tmp_path / "m.png"
    result = runner.invoke(cli, ["scan", str(magika_model), "--inputs", str(inputs), "--samples", "512",
                                 "--json", str(json_path), "--html", str(html_path), "--heatmap", str(png_path)])
    assert result.exit_code == 0, result.output
    text = result.output.replace("\n", " ")
    assert "real inputs" in text and "MSRS" in text and "no residual blocks" in text

    report = json.loads(json_path.read_text())
    names = [layer["name"] for layer in report["layers"]]
    assert len(names) == 3 and names[1].endswith("Conv_0/Conv2D:0") and names[2].endswith("Dense_1/AddV2:0")
    assert [layer["op"] for layer in report["layers"]] == ["MatMul+Mul", "Conv", "MatMul+Add"]
    matrix = np.array(report["similarity"], dtype=float)
    assert matrix.shape == (3, 3) and np.allclose(np.diag(matrix), 1.0)
    assert np.allclose(matrix, matrix.T)
    assert report["samples"] == 512 and report["batches"] == 2 and report["inputs"]["real"] is True
    import hashlib
    assert report["model"]["sha256"] == hashlib.sha256(magika_model.read_bytes()).hexdigest()
    assert report["model"]["path"] == str(magika_model)
    config = report["config"]
    assert {k: config[k] for k in ("level", "reduce", "cka_batch", "estimator", "aggregate", "epsilon", "beta",
                                   "seed")} == {"level": "layer", "reduce": "pool", "cka_batch": 256,
                                                "estimator": "unbiased", "aggregate": "cka", "epsilon": 0.8,
                                                "beta": 100.0, "seed": 0}
    batches = report["msrs_batches"]
    assert report["msrs"] == pytest.approx(np.mean(batches))
    assert 0.0 <= report["msrs"] <= 3.0

    html = html_path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    assert f"{report['msrs']:.3f}" in html
    assert all(name.split("/")[-1] in html for name in names)
    assert 'src="http' not in html and "<link" not in html  # self-contained
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fixed_batch_model_runs_in_chunks():
    """A model exported with batch size 1 is run sample by sample; numbers match the dynamic one."""
    import redaudit

    fixed = redaudit.scan(models.residual_cnn(batch=1), samples=256)
    dynamic = redaudit.scan(models.residual_cnn(batch="N"), samples=256)
    assert fixed.samples == 256 and fixed.layer_names == dynamic.layer_names
    np.testing.assert_allclose(fixed.similarity, dynamic.similarity, atol=1e-6)
