"""``--heal attention``: the map also reads the upstream layer's head-averaged attention, so a
block that moves information between tokens can be replaced; checked on a generated model whose
removed block is exactly ``x·(I + C) + (P̄x)·B`` and against a NumPy evaluation of the nodes."""
from __future__ import annotations

import heal_models as hm
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from redaudit.prune import PruneError, find_candidates
from redaudit.prune.calibrate import outputs_only
from redaudit.prune.heal import heal_blocks, heal_nodes_only, heal_span
from redaudit.prune.heal_mix import mix_features, upstream_attention


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray], names: list[str] | None = None) -> list[np.ndarray]:
    model = outputs_only(model, names) if names else model
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def tokens(count: int, seed: int, seq: int = 6, width: int = 8) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).normal(size=(count, seq, width)).astype(np.float32)}


def block(model, name):
    return next(b for b in find_candidates(model) if b.name == name)


def test_the_upstream_attention_is_the_last_softmax_before_the_entry():
    model = hm.attention_stack()
    assert upstream_attention(model, "block0.out") == "probs"
    assert upstream_attention(model, "block1.out") == "probs"
    assert upstream_attention(model, "x") is None
    assert upstream_attention(hm.token_stack(), "block1.out") is None  # no attention anywhere


@pytest.mark.parametrize("opset", [17, 18])
def test_the_inserted_nodes_compute_the_mix(opset):
    model = hm.attention_stack(opset=opset)
    rng = np.random.default_rng(3)
    weight, bias = rng.normal(size=(16, 8)), rng.normal(size=8)
    healed, how = heal_span(model, "block0.out", "block1.out", weight, bias, mixer="probs")
    assert how == "inserted attention mix"
    feed = tokens(5, seed=1)
    x, probs = run(model, feed, ["block0.out", "probs"])
    expected = np.concatenate([x, probs.mean(1) @ x], -1).astype(np.float64) @ weight + bias
    (got,) = run(healed, feed, ["block1.out"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mix_features(probs, x), np.concatenate([x, probs.mean(1) @ x], -1), rtol=1e-6)
    assert all(heal_nodes_only(type("B", (), {"node_names": (n.name,)})) for n in healed.graph.node
               if n.name.startswith("block1.out/"))  # iterative pruning never offers the map as a block


def test_a_token_mixing_block_is_recovered_exactly_and_a_per_token_map_cannot():
    model = hm.attention_stack()
    calibration, check = tokens(256, seed=0), tokens(64, seed=1)
    (reference,) = run(model, check)
    mixed, (span,) = heal_blocks(model, [block(model, "block1.out")], calibration, heal="attention")
    assert span.how == "inserted attention mix" and span.attention == "probs"
    assert span.heldout_error < 1e-8 < span.removal_error
    np.testing.assert_allclose(run(mixed, check)[0], reference, rtol=1e-3, atol=1e-3)
    linear, (plain_span,) = heal_blocks(model, [block(model, "block1.out")], calibration, heal="linear")
    assert plain_span.attention is None and plain_span.heldout_error > 0.01
    assert np.abs(run(linear, check)[0] - reference).max() > 0.05
    onnx.checker.check_model(mixed, full_check=True)


def test_iterative_steps_mix_tokens_too():
    from redaudit.prune.heal import HealOptions, heal_step

    model = hm.attention_stack()
    calibration, check = tokens(256, seed=0), tokens(32, seed=1)
    healed, span = heal_step(model, model, block(model, "block1.out"), calibration,
                             HealOptions(attention_mix=True))
    assert span.attention == "probs" and span.how == "inserted attention mix"
    np.testing.assert_allclose(run(healed, check)[0], run(model, check)[0], rtol=1e-3, atol=1e-3)


def test_without_attention_upstream_the_plain_map_is_used():
    model = hm.token_stack()
    calibration = {"x": np.random.default_rng(0).normal(size=(128, 5, 8)).astype(np.float32)}
    mixed, (span,) = heal_blocks(model, [block(model, "block1.out")], calibration, heal="attention")
    plain, (plain_span,) = heal_blocks(model, [block(model, "block1.out")], calibration, heal="linear")
    assert span.attention is None and span.how == plain_span.how
    check = {"x": np.random.default_rng(1).normal(size=(8, 5, 8)).astype(np.float32)}
    np.testing.assert_array_equal(run(mixed, check)[0], run(plain, check)[0])


def test_a_mix_that_does_not_fit_is_refused():
    model = hm.attention_stack()
    with pytest.raises(PruneError, match="not computed in this model"):
        heal_span(model, "block0.out", "block1.out", np.zeros((16, 8)), np.zeros(8), mixer="nothing")
    with pytest.raises(PruneError, match="a \\(2D, D\\) map"):
        heal_span(model, "block0.out", "block1.out", np.zeros((8, 8)), np.zeros(8), mixer="probs")
    with pytest.raises(PruneError, match="does not mix the tokens"):
        mix_features(np.zeros((2, 2, 3, 3), np.float32), np.zeros((2, 4, 8), np.float32))


def test_prune_cli_heals_with_attention_and_says_with_what(tmp_path):
    import json

    from click.testing import CliRunner

    from redaudit.cli.main import cli

    path, calibration = tmp_path / "m.onnx", tmp_path / "cal.npz"
    onnx.save(hm.attention_stack(), str(path))
    np.savez(calibration, **tokens(256, seed=0))
    np.savez(tmp_path / "probe.npz", **tokens(128, seed=1))
    args = ["prune", str(path), "--calibrate", str(calibration), "--inputs",
            str(tmp_path / "probe.npz"), "--samples", "128", "--cka-batch", "64", "--no-latency"]
    result = CliRunner().invoke(cli, [*args, "--blocks", "block1.out", "--heal", "attention", "--json",
                                      "-o", str(tmp_path / "p.onnx")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["healed"][0]["how"] == "inserted attention mix" and report["healed"][0]["attention"] == "probs"
    assert report["agreement"][0]["cosine_mean"] > 0.9999  # the block was exactly a mix: recovered
    text = CliRunner().invoke(cli, [*args, "--blocks", "block1.out", "--heal", "attention"])
    assert text.exit_code == 0 and "mixing tokens with probs" in " ".join(text.output.split()), text.output
    iterative = CliRunner().invoke(cli, [*args, "--heal", "attention", "--iterative", "--remove", "1", "--json",
                                         "--min-cosine", "0"])
    assert iterative.exit_code == 0 and "attention" in json.loads(iterative.stdout)["healed"][0], iterative.output
    linear = CliRunner().invoke(cli, [*args, "--blocks", "block1.out", "--heal", "linear", "--json",
                                      "--min-cosine", "0"])
    assert json.loads(linear.stdout)["agreement"][0]["cosine_mean"] < 0.999
