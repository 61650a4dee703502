"""prune_model and `redaudit prune` end to end on generated models (real scan engine)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import prune_models as pm
from redaudit.cli.prune import prune_command
from redaudit.prune import PruneError, prune_model

FAST = {"samples": 512, "latency_repeats": 3}


@pytest.fixture
def redundant_mlp(tmp_path):
    """5 residual blocks; block 2's branch is exactly zero, block 4's is 1e-3 of normal."""
    path = tmp_path / "mlp.onnx"
    onnx.save(pm.residual_mlp(5, branch_scale={2: 0.0, 4: 1e-3}), str(path))
    return path


def test_list_ranks_redundant_blocks_most_similar(redundant_mlp):
    result = prune_model(redundant_mlp, list_only=True, **FAST)
    assert [c.name for c in result.candidates] == [f"block{i}.out" for i in range(5)]
    similarity = {c.name: c.similarity for c in result.candidates}
    assert similarity["block2.out"] == pytest.approx(1.0, abs=1e-9)
    assert similarity["block4.out"] > 0.999
    assert max(similarity[f"block{i}.out"] for i in (0, 1, 3)) < 0.99
    assert all(c.param_share == pytest.approx(512 / 2768) for c in result.candidates)
    assert all(c.flop_share > 0 for c in result.candidates)
    assert result.model is None and result.removed == []


def test_remove_one_takes_the_zero_branch_and_agrees_exactly(redundant_mlp, tmp_path):
    out = tmp_path / "pruned.onnx"
    result = prune_model(redundant_mlp, remove=1, output=out, **FAST)
    assert result.removed == ["block2.out"]
    (agreement,) = result.agreement
    assert agreement.max_abs_error == 0.0 and agreement.top1_agreement == 1.0
    assert result.drift == pytest.approx(0.0, abs=1e-12)
    assert result.params_after == result.params_before - 512
    saved = onnx.load(str(out))
    onnx.checker.check_model(saved, full_check=True)
    assert result.size_after == out.stat().st_size < result.size_before
    assert result.latency is not None and result.latency.pruned_ms > 0
    assert np.isfinite(result.msrs_before) and np.isfinite(result.msrs_after)
    assert result.msrs_after < result.msrs_before  # the duplicated IR pair is gone


def test_remove_two_removes_both_redundant_blocks(redundant_mlp):
    result = prune_model(redundant_mlp, remove=2, **FAST)
    assert sorted(result.removed) == ["block2.out", "block4.out"]
    assert result.agreement[0].cosine_mean > 0.9999
    assert len(result.model.graph.node) == len(onnx.load(str(redundant_mlp)).graph.node) - 8


def test_target_params(redundant_mlp):
    result = prune_model(redundant_mlp, target_params=70, **FAST)
    assert len(result.removed) == 2 and result.params_after <= 0.7 * result.params_before
    with pytest.raises(PruneError, match="cannot reach"):
        prune_model(redundant_mlp, target_params=5, **FAST)


def test_max_drift_stops_before_the_bound(redundant_mlp):
    result = prune_model(redundant_mlp, max_drift=1e-4, **FAST)
    assert sorted(result.removed) == ["block2.out", "block4.out"]
    assert result.drift <= 1e-4
    loose = prune_model(redundant_mlp, max_drift=0.5, **FAST)
    assert len(loose.removed) > 2 and loose.drift <= 0.5


def test_iterative_rescans_after_each_removal(redundant_mlp):
    result = prune_model(redundant_mlp, remove=2, iterative=True, **FAST)
    assert result.removed == ["block2.out", "block4.out"]
    assert [step["candidates"] for step in result.steps] == [5, 4]


def test_blocks_by_name_and_number(redundant_mlp):
    by_name = prune_model(redundant_mlp, blocks=["block0.out", "block3.out"], latency=False, measure_msrs=False, **FAST)
    assert by_name.removed == ["block0.out", "block3.out"]
    by_number = prune_model(redundant_mlp, blocks=["1"], latency=False, measure_msrs=False, **FAST)
    assert by_number.removed == ["block1.out"]


def test_chain_block_at_graph_input_is_measured(tmp_path):
    result = prune_model(pm.plain_chain(), list_only=True, **FAST)
    assert [c.entry for c in result.candidates] == ["x", "fc0.out", "fc2.out"]
    assert all(np.isfinite(c.similarity) for c in result.candidates)


def test_cli_list_and_prune(redundant_mlp, tmp_path, runner):
    listing = runner.invoke(prune_command, [str(redundant_mlp), "--list", "--samples", "512"])
    assert listing.exit_code == 0, listing.output
    assert "block2.out" in listing.output and "residual" in listing.output
    out = tmp_path / "p.onnx"
    done = runner.invoke(prune_command, [str(redundant_mlp), "--remove", "1", "-o", str(out), "--json",
                                         "--samples", "512"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["removed"] == ["block2.out"] and data["output_path"] == str(out)
    assert data["agreement"][0]["max_abs_error"] == 0.0 and out.exists()
    assert 0 < data["params"]["ratio"] < 1 and data["latency"]["ratio"] > 0


@pytest.mark.parametrize("args, message", [
    (["--blocks", "nope"], "unknown block 'nope'"),
    (["--remove", "5"], "refusing to remove all 5"),
    (["--blocks", "0,1,2,3,4"], "refusing to remove all 5"),
    ([], "say what to remove"),
])
def test_cli_bad_requests_write_nothing(redundant_mlp, tmp_path, runner, args, message):
    out = tmp_path / "p.onnx"
    result = runner.invoke(prune_command, [str(redundant_mlp), "-o", str(out), "--samples", "512", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == [redundant_mlp]


def test_cli_model_without_removable_block(tmp_path, runner):
    path = tmp_path / "dense.onnx"
    onnx.save(pm.no_removable_block(), str(path))
    result = runner.invoke(prune_command, [str(path), "--remove", "1", "-o", str(tmp_path / "p.onnx")])
    assert result.exit_code == 2 and "no removable block" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "p.onnx").exists()
