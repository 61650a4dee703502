"""PreparedModel reuse, progress stages, cancellation, chunked runs, and prune's use of them."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import numpy as np
import pytest

import redaudit
from redaudit.core.progress import STAGES
from redaudit.core.spec import ScanSpec
from redaudit.errors import ScanCancelled
from redaudit.prune.surgery import PruneError
from tests import models, prune_models

SMALL = dict(samples=64, cka_batch=32)


def test_one_prepared_model_serves_several_scans_with_the_same_numbers():
    prepared = redaudit.prepare(models.residual_cnn(blocks=3))
    first = redaudit.scan(prepared, **SMALL)
    second = redaudit.scan(prepared, level="layer", **SMALL)
    third = redaudit.scan(models.residual_cnn(blocks=3), **SMALL)
    assert prepared.taps("block") is prepared.taps("block")  # selection cached
    assert np.array_equal(first.similarity, third.similarity)
    assert len(second.layers) > len(first.layers)


def test_progress_reports_every_stage_in_order():
    events = []
    redaudit.scan(models.residual_cnn(blocks=2), progress=events.append, **SMALL)
    stages = list(dict.fromkeys(event.stage for event in events))
    assert stages == list(STAGES)
    batches = [event for event in events if event.stage == "batches"]
    assert [event.done for event in batches] == [0, 32, 64] and {event.total for event in batches} == {64}


def test_cancel_stops_between_batches():
    """One batch in flight (a thread count is set: no lanes): polls after taps and after the
    session, before batch 1's run, then after it, where the stop lands. With lanes the count
    depends on which lane asks first; tests/test_scan_lanes.py bounds it."""
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(ScanCancelled):
        redaudit.scan(models.residual_cnn(blocks=2), cancel=cancel, samples=256, cka_batch=32, threads=1)
    assert calls["n"] == 4


def test_a_fixed_batch_of_three_runs_with_the_default_cka_batch():
    """A model whose batch axis is fixed at 3 runs a CKA batch of 256 as 86 chunks, exactly."""
    fixed = redaudit.scan(models.residual_cnn(blocks=2, batch=3), samples=512)
    dynamic = redaudit.scan(models.residual_cnn(blocks=2), samples=512)
    assert fixed.samples == 512
    np.testing.assert_allclose(fixed.similarity, dynamic.similarity, atol=1e-6)


def test_spec_and_keyword_options_mean_the_same_scan():
    spec = ScanSpec(samples=64, cka_batch=32, epsilon=0.7)
    by_spec = redaudit.scan(models.mlp(), spec)
    by_options = redaudit.scan(models.mlp(), samples=64, cka_batch=32, epsilon=0.7)
    assert by_spec.config == by_options.config
    assert np.array_equal(by_spec.similarity, by_options.similarity)


def test_prune_refuses_to_overwrite_its_input_before_any_work(tmp_path):
    path = tmp_path / "m.onnx"
    import onnx

    onnx.save(prune_models.residual_mlp(blocks=4), str(path))
    before = path.read_bytes()
    link = tmp_path / "link.onnx"
    os.link(path, link)
    for target in (path, link, tmp_path / "." / "m.onnx"):
        with pytest.raises(PruneError, match="is the input model itself"):
            redaudit.prune.prune_model(str(path), remove=1, output=str(target), **SMALL)
    assert path.read_bytes() == before


def test_prune_verification_runs_on_the_requested_device():
    result = redaudit.prune.prune_model(prune_models.residual_mlp(blocks=4), remove=1, device="cpu",
                                        latency=False, measure_msrs=False, **SMALL)
    assert result.agreement and result.removed


def test_the_cli_installs_inside_the_redaudit_package():
    """No top-level `cli` package in site-packages: the console script is redaudit.cli.main."""
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["redaudit"] == "redaudit.cli.main:main"
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["redaudit*"]
    assert (Path(redaudit.__file__).parent / "cli" / "main.py").is_file()
