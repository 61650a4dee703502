"""End to end through the CLI on generated models and a real pretrained model (magika)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import models
from cli.main import cli


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


@pytest.mark.slow
def test_magika_scan_through_cli(runner, tmp_path, magika_model):
    result = runner.invoke(cli, ["scan", str(magika_model), "--samples", "512", "--level", "layer",
                                 "--int-range", "0", "257"])
    assert result.exit_code == 0, result.output
    text = result.output.replace("\n", " ")
    assert "synthetic inputs" in text and "MSRS" in text
    assert "Dense_1" in text and "Conv" in text
