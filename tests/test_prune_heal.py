"""Linear healing: the streaming ridge fit against plain float64 least squares, the graph surgery
(insert vs fold) on generated models whose removed block is exactly affine, and calibration."""
from __future__ import annotations

import heal_models as hm
import numpy as np
import onnx
import onnxruntime as ort
import prune_models as pm
import pytest

from redaudit.prune import PruneError, find_candidates, remove_blocks
from redaudit.prune.cost import parameter_count
from redaudit.prune.heal import (
    HealedSpan,
    RidgeAccumulator,
    calibrate_spans,
    fit_linear_heal,
    heal_blocks,
    heal_span,
)
from redaudit.prune.heal_spans import merge_spans


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def tokens(count: int, seed: int, width: int = 8, seq: int | None = 5) -> dict[str, np.ndarray]:
    shape = (count, seq, width) if seq else (count, width)
    return {"x": np.random.default_rng(seed).normal(size=shape).astype(np.float32)}


def images(count: int, seed: int, channels: int = 4) -> dict[str, np.ndarray]:
    return {"img": np.random.default_rng(seed).normal(size=(count, channels, 6, 6)).astype(np.float32)}


def block(model: onnx.ModelProto, name: str):
    return next(b for b in find_candidates(model) if b.name == name)


def ridge_reference(x: np.ndarray, y: np.ndarray, alpha: float, prior: np.ndarray | None) -> np.ndarray:
    """argmin ‖y − [x 1]θ‖² + α‖T − P‖² by an augmented least-squares problem (bias unpenalised)."""
    d = x.shape[1]
    design = np.vstack([np.hstack([x, np.ones((len(x), 1))]), np.hstack([np.sqrt(alpha) * np.eye(d), np.zeros((d, 1))])])
    target = np.vstack([y, np.sqrt(alpha) * (prior if prior is not None else np.zeros((d, y.shape[1])))])
    return np.linalg.lstsq(design, target, rcond=None)[0]


def test_streaming_fit_equals_float64_least_squares():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    y = x @ rng.normal(size=(6, 6)) + rng.normal(size=6) + 0.3 * rng.normal(size=(300, 6))
    batched = fit_linear_heal([x[:100].astype(np.float32), x[100:].astype(np.float32)],
                              [y[:100].astype(np.float32), y[100:].astype(np.float32)], lambdas=(0.1,))
    scale = np.trace(x.astype(np.float32).astype(np.float64).T @ x.astype(np.float32)) / 6
    theta = ridge_reference(x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64),
                            0.1 * scale, np.eye(6))
    np.testing.assert_allclose(batched.weight, theta[:-1], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(batched.bias, theta[-1], rtol=1e-8, atol=1e-10)
    assert batched.alpha == pytest.approx(0.1 * scale)
    # The identity prior matters: shrinking toward zero gives a different map.
    zero = fit_linear_heal([x], [y], lambdas=(0.1,), prior="zero")
    assert np.abs(zero.weight - batched.weight).max() > 1e-3


def test_heldout_error_equals_explicit_cross_validation():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(40, 5))
    accumulator = RidgeAccumulator(5, 5, folds=2)
    accumulator.add_batch(x, y)
    fitted = accumulator.solve(lambdas=(0.5,))
    error = variance = 0.0
    for fold in (0, 1):
        test, train = np.arange(40) % 2 == fold, np.arange(40) % 2 != fold
        scale = np.trace(x[train].T @ x[train] + x[test].T @ x[test]) / 5  # α is relative to all data
        theta = ridge_reference(x[train], y[train], 0.5 * scale, np.eye(5))
        error += np.sum((y[test] - np.hstack([x[test], np.ones((test.sum(), 1))]) @ theta) ** 2)
        variance += np.sum((y[test] - y[test].mean(0)) ** 2)
    assert fitted.heldout_error == pytest.approx(error / variance, rel=1e-9)
    assert fitted.removal_error == pytest.approx(np.sum((y - x) ** 2) / np.sum((y - y.mean(0)) ** 2), rel=1e-9)


def test_alpha_is_chosen_by_heldout_error():
    rng = np.random.default_rng(2)
    few = rng.normal(size=(30, 20))
    noisy = few + rng.normal(size=(30, 20))  # y = x + noise: the identity prior is right, the data too few
    chosen = fit_linear_heal([few], [noisy])
    assert chosen.relative_alpha >= 0.1
    plentiful = rng.normal(size=(4000, 4))
    exact = fit_linear_heal([plentiful], [plentiful @ rng.normal(size=(4, 4)) + 1.0])
    assert exact.relative_alpha <= 1e-5 and exact.heldout_error < 1e-8


def test_masked_rows_do_not_count():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 7, 4))
    y = x @ rng.normal(size=(4, 4))
    mask = rng.random((20, 7)) > 0.3
    y_garbage = np.where(mask[..., None], y, 1e3)
    masked = RidgeAccumulator(4, 4)
    masked.add_batch(x, y_garbage, mask)
    clean = fit_linear_heal([x[mask][None]], [y[mask][None]], lambdas=(1e-8,))
    np.testing.assert_allclose(masked.solve(lambdas=(1e-8,)).weight, clean.weight, atol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        masked.add_batch(x, y, mask[:, :3])


@pytest.mark.parametrize("layout_model, feed, exit_name", [
    (hm.token_stack(head="relu"), tokens, "block1.out"),
    (hm.conv_stack(head="relu"), images, "layer1.out"),
])
def test_an_affine_block_is_recovered_exactly(layout_model, feed, exit_name):
    target = block(layout_model, exit_name)
    healed, report = heal_blocks(layout_model, [target], feed(256, seed=0))
    check = feed(64, seed=9)  # held-out samples
    np.testing.assert_allclose(run(healed, check), run(layout_model, check), atol=2e-4)
    assert report[0].how.startswith("inserted") and report[0].heldout_error < 1e-8
    removed = remove_blocks(layout_model, [target])
    assert np.abs(run(removed, check) - run(layout_model, check)).max() > 0.1  # removal alone is wrong
    assert not any(node.name == target.node_names[0] for node in healed.graph.node)


@pytest.mark.parametrize("model, feed, exit_name, op", [
    (hm.token_stack(linear_block=2), tokens, "block2.out", "MatMul head"),
    (hm.token_stack(linear_block=2, head="gemm", tokens=False), lambda n, seed: tokens(n, seed, seq=None),
     "block2.out", "Gemm head"),
    (hm.conv_stack(linear_block=2), images, "layer2.out", "Conv head"),
    (hm.conv_stack(linear_block=2, head="gap-gemm"), images, "layer2.out", "Gemm head through GlobalAveragePool"),
    (hm.conv_stack(linear_block=2, head="mean-matmul"), images, "layer2.out", "MatMul head through ReduceMean"),
])
def test_folding_equals_inserting_and_adds_no_parameters(model, feed, exit_name, op):
    target = block(model, exit_name)
    folded, folded_report = heal_blocks(model, [target], feed(256, seed=0))
    inserted, inserted_report = heal_blocks(model, [target], feed(256, seed=0), fold=False)
    assert folded_report[0].how == f"folded into {op}"
    assert inserted_report[0].how.startswith("inserted")
    check = feed(64, seed=5)
    np.testing.assert_allclose(run(folded, check), run(inserted, check), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run(folded, check), run(model, check), atol=2e-4)  # the block was affine
    assert parameter_count(folded) == parameter_count(remove_blocks(model, [target]))
    assert parameter_count(inserted) > parameter_count(folded)
    for healed in (folded, inserted):
        onnx.checker.check_model(healed, full_check=True)
        onnx.shape_inference.infer_shapes(healed, strict_mode=True)


def test_healing_beats_removal_on_a_nonlinear_block():
    model = pm.residual_mlp(4, seed=3)
    chosen = [block(model, "block1.out")]
    calibration = {"x": np.random.default_rng(0).normal(size=(512, 8)).astype(np.float32)}
    check = {"x": np.random.default_rng(1).normal(size=(256, 8)).astype(np.float32)}
    reference = run(model, check)
    healed, report = heal_blocks(model, chosen, calibration)
    removed, _ = heal_blocks(model, chosen, calibration, heal="none")
    heal_error = np.linalg.norm(run(healed, check) - reference)
    removal_error = np.linalg.norm(run(removed, check) - reference)
    assert heal_error < 0.7 * removal_error
    assert report[0].heldout_error < report[0].removal_error


def test_adjacent_blocks_become_one_span_and_the_output_keeps_its_name():
    model = pm.plain_chain()  # the last chain block's exit is the graph output "y"
    blocks = find_candidates(model)
    spans = merge_spans(blocks[-2:][::-1])
    assert len(spans) == 1 and spans[0].entry == blocks[-2].entry and spans[0].exit == "y"
    assert len(merge_spans([blocks[0], blocks[-1]])) == 2 or blocks[0].exit == blocks[-1].entry
    calibration = {"x": np.random.default_rng(0).normal(size=(256, 16)).astype(np.float32)}
    healed, report = heal_blocks(model, blocks[-2:], calibration)
    assert len(report) == 1 and isinstance(report[0], HealedSpan)
    assert [out.name for out in healed.graph.output] == ["y"]
    assert run(healed, calibration).shape == (256, 16)


def test_calibration_reads_graph_input_entries_and_bounded_statistics():
    model = hm.conv_stack(head="relu")
    first = find_candidates(model)[0]
    assert first.entry == "img"
    (accumulator,) = calibrate_spans(model, [(first.entry, first.exit)],
                                     [images(16, seed=s) for s in range(3)])
    assert accumulator.samples == 48 and accumulator.rows.sum() == 48 * 36  # every pixel is a row
    assert accumulator.gram.shape == (5, 5, 5)  # folds × (C+1) × (C+1), whatever the sample count


def test_bad_requests_are_refused():
    model = hm.token_stack()
    with pytest.raises(PruneError, match="--heal must be one of"):
        heal_blocks(model, [block(model, "block1.out")], tokens(8, 0), heal="quadratic")
    with pytest.raises(PruneError, match="computed from exit"):
        heal_span(model, "block2.out", "block1.out", np.eye(8), np.zeros(8))
    with pytest.raises(PruneError, match="not computed"):
        heal_span(model, "x", "nothing", np.eye(8), np.zeros(8))


def test_calibration_model_runs_only_as_far_as_the_span():
    from redaudit.prune.calibrate import outputs_only

    model = hm.conv_stack(head="conv")
    cut = outputs_only(model, ["layer0.out"])
    assert [out.name for out in cut.graph.output] == ["layer0.out"]
    assert {node.name for node in cut.graph.node} == {"layer0.conv1", "layer0.relu1", "layer0.conv2",
                                                      "layer0.add", "layer0.relu2"}
    feed = images(4, seed=0)
    expected = ort.InferenceSession(outputs_only(model, ["layer0.out", "y"]).SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(["layer0.out"], feed)[0]
    np.testing.assert_array_equal(run(cut, feed), expected)


def test_healer_fits_each_span_once_and_reuses_it(monkeypatch):
    import redaudit.prune.heal as heal_module
    from redaudit.prune.heal import LinearHealer

    passes = []
    original = heal_module.calibrate_spans
    monkeypatch.setattr(heal_module, "calibrate_spans",
                        lambda model, spans, feeds, **kw: passes.append(list(spans)) or original(model, spans, feeds, **kw))
    model = pm.residual_mlp(4, seed=3)
    blocks = find_candidates(model)
    healer = LinearHealer(model, {"x": np.random.default_rng(0).normal(size=(128, 8)).astype(np.float32)})
    first, _ = healer.apply([blocks[1]])
    _, report = healer.apply([blocks[1], blocks[3]])
    assert passes == [[(blocks[1].entry, blocks[1].exit)], [(blocks[3].entry, blocks[3].exit)]]
    assert len(report) == 2
    direct, _ = heal_blocks(model, [blocks[1]], healer.calibration)
    check = {"x": np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)}
    np.testing.assert_array_equal(run(first, check), run(direct, check))


def _tensor(model: onnx.ModelProto, name: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    from redaudit.prune.calibrate import outputs_only

    return run(outputs_only(model, [name]), feed).astype(np.float64)


def test_sequential_healing_fits_a_later_span_on_the_healed_upstream():
    """The second map is plain least squares of the *original* exit on the entry that the model
    with the first span healed actually produces; it beats the independently fitted map there."""
    from redaudit.prune.heal import HealOptions, LinearHealer

    model = pm.residual_mlp(4, seed=3)
    first, second = block(model, "block1.out"), block(model, "block3.out")
    calibration = {"x": np.random.default_rng(0).normal(size=(512, 8)).astype(np.float32)}
    options = {"lambdas": (1e-8,), "fold": False}
    sequential = LinearHealer(model, calibration, HealOptions(**options))
    healed, report = sequential.apply([second, first])  # any order: spans are healed upstream first
    assert [r.span.exit for r in report] == ["block1.out", "block3.out"]
    assert report[0].fitted_after == () and report[1].fitted_after == ("block1.out",)

    upstream_healed, _ = heal_blocks(model, [first], calibration, **options)
    x = _tensor(upstream_healed, second.entry, calibration)
    y = _tensor(model, second.exit, calibration)
    assert np.abs(x - _tensor(model, second.entry, calibration)).max() > 0.05  # the upstream heal is not exact
    theta = ridge_reference(x, y, 1e-8 * np.trace(x.T @ x) / x.shape[1], np.eye(x.shape[1]))
    fitted = sequential.maps[(((first.entry, first.exit),), (second.entry, second.exit))]
    np.testing.assert_allclose(fitted.weight, theta[:-1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fitted.bias, theta[-1], rtol=1e-6, atol=1e-7)

    independent, independent_report = LinearHealer(model, calibration, HealOptions(**options, sequential=False)).apply(
        [first, second])
    assert independent_report[1].fitted_after == ()
    for feed in (calibration, {"x": np.random.default_rng(1).normal(size=(256, 8)).astype(np.float32)}):
        target = _tensor(model, second.exit, feed)
        error_sequential = np.linalg.norm(_tensor(healed, second.exit, feed) - target)
        error_independent = np.linalg.norm(_tensor(independent, second.exit, feed) - target)
        assert error_sequential < 0.95 * error_independent


def test_sequential_equals_independent_when_the_upstream_heal_is_exact():
    """An exactly affine first block is healed without error, so the later span sees the
    original's entries and both ways give the same map."""
    from redaudit.prune.heal import HealOptions, LinearHealer

    model = hm.token_stack(blocks=4, linear_block=0, head="relu")
    chosen = [block(model, "block0.out"), block(model, "block2.out")]
    calibration = tokens(256, seed=0)
    sequential = LinearHealer(model, calibration, HealOptions(lambdas=(1e-6,)))
    sequential.apply(chosen)
    independent = LinearHealer(model, calibration, HealOptions(lambdas=(1e-6,), sequential=False))
    independent.apply(chosen)
    span = (chosen[1].entry, chosen[1].exit)
    np.testing.assert_allclose(sequential.maps[(((chosen[0].entry, "block0.out"),), span)].weight,
                               independent.maps[((), span)].weight, atol=1e-4)


def test_a_cached_sequential_map_is_keyed_by_the_whole_upstream_spans():
    """Blocks 0–1 and block 1 end at the same tensor; a map fitted after healing 0–1 must not
    be reused after healing block 1 alone."""
    from redaudit.prune.heal import HealOptions, LinearHealer

    model = pm.residual_mlp(4, seed=3)
    b = find_candidates(model)
    calibration = {"x": np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)}
    shared = LinearHealer(model, calibration, HealOptions(lambdas=(1e-6,)))
    shared.apply([b[0], b[1], b[3]])
    reused, _ = shared.apply([b[1], b[3]])
    fresh, _ = LinearHealer(model, calibration, HealOptions(lambdas=(1e-6,))).apply([b[1], b[3]])
    check = {"x": np.random.default_rng(1).normal(size=(32, 8)).astype(np.float32)}
    np.testing.assert_array_equal(run(reused, check), run(fresh, check))
