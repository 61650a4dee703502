"""Pruning policies, one class each, all behind one protocol: each finds the block that is an
exact identity (its branch weights are zero) first, and Block Influence equals a plain NumPy
forward pass of the same network."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import redaudit
from redaudit.core.prepared import PreparedModel
from redaudit.core.spec import ScanSpec
from redaudit.prune.api import probe_arrays
from redaudit.prune.candidates import find_candidates
from redaudit.prune.policies import POLICIES, PolicyContext, consecutive_runs, make_policy
from redaudit.errors import ConfigError
from tests import prune_models

SMALL = dict(samples=128, cka_batch=64)


def _context(model: onnx.ModelProto) -> PolicyContext:
    prepared = PreparedModel.load(model)
    spec = ScanSpec(**SMALL)
    arrays, _, _ = probe_arrays(prepared, spec)
    return PolicyContext(prepared, find_candidates(model, prepared.index), spec, arrays)


@pytest.mark.parametrize("name", ["cka", "bi", "angular", "greedy"])
def test_every_policy_removes_the_identity_block_first(name):
    context = _context(prune_models.residual_mlp(blocks=4, branch_scale={2: 0.0}))
    names = [block.name for block in context.blocks]
    chosen = make_policy(name).choose(context, 1)
    assert names[chosen[0]] == "block2.out", (name, names, chosen)


def test_random_policy_is_seeded():
    context = _context(prune_models.residual_mlp(blocks=4))
    assert make_policy("random", 3).choose(context, 3) == make_policy("random", 3).choose(context, 3)
    orders = {tuple(make_policy("random", seed).choose(context, 3)) for seed in range(10)}
    assert len(orders) > 1


def _forward(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """An independent float64 interpreter for the ops residual_mlp uses."""
    weights = {init.name: numpy_helper.to_array(init).astype(np.float64) for init in model.graph.initializer}
    values = {"x": x.astype(np.float64), **weights}
    for node in model.graph.node:
        a = [values[name] for name in node.input]
        out = {"MatMul": lambda: a[0] @ a[1], "Add": lambda: a[0] + a[1], "Relu": lambda: np.maximum(a[0], 0),
               "Gemm": lambda: a[0] @ a[1] + a[2]}[node.op_type]()
        values[node.output[0]] = out
    return values


def test_block_influence_equals_a_plain_forward_pass():
    model = prune_models.residual_mlp(blocks=3)
    assert {node.op_type for node in model.graph.node} <= {"MatMul", "Add", "Relu", "Gemm"}
    context = _context(model)
    scores = make_policy("bi").scores(context)
    values = _forward(model, context.arrays["x"])
    for block, score in zip(context.blocks, scores):
        a, b = values[block.entry], values[block.exit]
        cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert score == pytest.approx(cosine.mean(), abs=1e-6)


def test_angular_removes_a_contiguous_span():
    context = _context(prune_models.residual_mlp(blocks=5, branch_scale={1: 0.05, 2: 0.05}))
    assert consecutive_runs(context.blocks) == [list(range(len(context.blocks)))]
    chosen = make_policy("angular").choose(context, 2)
    assert chosen == [1, 2]
    with pytest.raises(ConfigError, match="contiguous span"):
        make_policy("angular").choose(context, len(context.blocks) + 1)


def test_greedy_choices_are_nested_and_its_state_stays_in_the_context():
    policy = make_policy("greedy")
    context = _context(prune_models.residual_mlp(blocks=4, branch_scale={3: 0.0, 1: 0.1}))
    two = policy.choose(context, 2)
    assert policy.choose(context, 1) == two[:1]
    other = _context(prune_models.residual_mlp(blocks=4, branch_scale={0: 0.0}))
    assert policy.choose(other, 1) == [0]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_prune_model_accepts_every_policy(name):
    result = redaudit.prune.prune_model(prune_models.residual_mlp(blocks=4), remove=1, policy=name,
                                        latency=False, measure_msrs=False, **SMALL)
    assert len(result.removed) == 1 and result.agreement


def test_prune_heals_a_linear_block_exactly_and_says_how(tmp_path):
    """A block whose branch is affine is recovered by the fitted map: removal alone changes the
    output, linear healing restores it (cosine 1), folded into the next linear op."""
    from tests.heal_models import token_stack

    model = token_stack(blocks=3, linear_block=1)
    plain = redaudit.prune.prune_model(model, blocks=["1"], latency=False, measure_msrs=False, min_cosine=None,
                                       **SMALL)
    healed = redaudit.prune.prune_model(model, blocks=["1"], heal="linear", latency=False, measure_msrs=False,
                                        **SMALL)
    assert healed.agreement[0].cosine_mean > 0.99999 > plain.agreement[0].cosine_mean
    assert healed.healed and healed.healed[0]["how"].startswith(("folded", "inserted"))
    assert any("calibrated on the probe inputs" in w for w in healed.warnings)


def test_prune_refuses_to_write_below_the_agreement_bound(tmp_path):
    out = tmp_path / "p.onnx"
    model = prune_models.residual_mlp(blocks=4, branch_scale={0: 3.0, 1: 3.0, 2: 3.0, 3: 3.0})
    with pytest.raises(redaudit.prune.PruneError, match="below --min-cosine 0.999"):
        redaudit.prune.prune_model(model, remove=2, output=str(out), min_cosine=0.999, latency=False,
                                   measure_msrs=False, **SMALL)
    assert not out.exists()
    forced = redaudit.prune.prune_model(model, remove=2, output=str(out), min_cosine=0.999, force=True,
                                        latency=False, measure_msrs=False, **SMALL)
    assert out.exists() and forced.removed


def test_iterative_healing_equals_sequential_healing_of_the_same_blocks():
    """--iterative --heal linear heals each removed block at once, fitted on what the model pruned
    so far produces against the original's exit: for blocks removed upstream first, exactly the
    sequential healing of the same blocks. The inserted maps are never offered for removal."""
    import onnxruntime as ort

    from redaudit.prune import find_candidates
    from redaudit.prune.heal import heal_blocks

    model = prune_models.residual_mlp(5, branch_scale={1: 0.1, 3: 0.3})
    calibration = {"x": np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)}
    result = redaudit.prune.prune_model(model, remove=2, iterative=True, heal="linear", calibrate=calibration,
                                        latency=False, measure_msrs=False, min_cosine=None, **SMALL)
    assert result.removed == ["block1.out", "block3.out"]
    assert [span["span"]["exit"] for span in result.healed] == ["block1.out", "block3.out"]
    assert result.healed[1]["fitted_after"] == ["block1.out"]
    assert [step["candidates"] for step in result.steps] == [5, 4]  # the map of block 1 is not a candidate
    blocks = {b.name: b for b in find_candidates(model)}
    expected, _ = heal_blocks(model, [blocks["block1.out"], blocks["block3.out"]], calibration)
    check = {"x": np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32)}

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, check)[0]

    np.testing.assert_allclose(run(result.model), run(expected), rtol=1e-5, atol=1e-6)
