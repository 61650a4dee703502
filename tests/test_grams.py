"""Flattened taps leave onnxruntime as centred float64 Grams (core/grams.py) — same numbers and
same flags as fetching the activations, and only when every onnxruntime call is one CKA batch."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import redaudit
from benchmarks.reference import raw_outputs, reduce_as_documented, reference_matrix
from redaudit.core.augment import augment
from redaudit.core.cka import batch_hsic, cka_from_hsic
from redaudit.core.grams import centred_gram, grams_in_graph
from redaudit.core.graph import GraphIndex
from redaudit.core.prepared import PreparedModel
from redaudit.core.tap import select_taps
from tests.models import residual_cnn

N = 48


def _layers() -> list[np.ndarray]:
    """Hard cases for centring and the constant/finite flags (as in test_cka.py)."""
    rng = np.random.default_rng(7)
    base = rng.normal(size=(N, 6))
    jitter = np.float32(0.1) + np.float32(2 ** -27) * rng.integers(-1, 2, size=(N, 3)).astype(np.float32)
    with_nan = rng.normal(size=(N, 4)).astype(np.float32)
    with_nan[5, 2] = np.nan
    with_inf = rng.normal(size=(N, 4)).astype(np.float32)
    with_inf[0, 0] = np.inf
    return [
        base.astype(np.float32),
        (1e3 + 1e-3 * (base @ rng.normal(size=(6, 5)))).astype(np.float32),  # far from zero, small spread
        rng.normal(size=(N, 2, 3, 4)).astype(np.float32),  # rank 4: flattened
        np.full((N, 4), 0.1),  # float64 constant whose mean is not exactly 0.1
        np.full((N, 2), 1e3, dtype=np.float32),
        jitter,  # constant up to float32 rounding
        np.zeros((N, 5), dtype=np.float32),
        np.hstack([np.full((N, 1), 1e3), 1e3 + 1e-3 * rng.normal(size=(N, 1))]),  # one column moves
        with_nan,
        with_inf,
        rng.normal(size=(N, 3)),  # float64, varying
    ]


def _identity_model(layers: list[np.ndarray]) -> onnx.ModelProto:
    """Inputs x_i → Identity → tap_i: each tap is exactly the given array."""
    types = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}
    inputs = [helper.make_tensor_value_info(f"x{i}", types[a.dtype], ["N", *a.shape[1:]]) for i, a in enumerate(layers)]
    outputs = [helper.make_tensor_value_info(f"tap{i}", types[a.dtype], ["N", *a.shape[1:]]) for i, a in enumerate(layers)]
    nodes = [helper.make_node("Identity", [f"x{i}"], [f"tap{i}"], name=f"id{i}") for i in range(len(layers))]
    model = helper.make_model(helper.make_graph(nodes, "identity", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_in_graph_grams_give_the_fetched_features_hsic_and_flags(estimator):
    layers = _layers()
    model = _identity_model(layers)
    index = GraphIndex.build(model)
    taps = select_taps(index, "op", tuple(f"tap{i}" for i in range(len(layers)))).points
    augmented = augment(model, index, list(taps), "flatten", grams=True)
    assert all(check is not None for check in augmented.gram_checks)
    session = ort.InferenceSession(augmented.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    checks = list(augmented.gram_checks)
    outputs = session.run([*augmented.fetch_names, *checks], {f"x{i}": a for i, a in enumerate(layers)})
    grams = [centred_gram(gram, check) for gram, check in zip(outputs[:len(layers)], outputs[len(layers):])]
    assert all(gram.matrix.shape == (N, N) and gram.matrix.dtype == np.float64 for gram in grams)

    with np.errstate(invalid="ignore", over="ignore"):
        found = batch_hsic(grams, estimator)
        expected = batch_hsic([a.reshape(N, -1) for a in layers], estimator)
    np.testing.assert_array_equal(found.constant, expected.constant)
    np.testing.assert_array_equal(found.finite, expected.finite)
    assert list(np.flatnonzero(expected.constant)) == [3, 4, 5, 6]  # the test can fail: flags do differ
    assert list(np.flatnonzero(~expected.finite)) == [8, 9]
    usable = np.isfinite(expected.hsic)
    np.testing.assert_array_equal(np.isfinite(found.hsic), usable)
    scale = np.abs(expected.hsic[usable]).max()
    assert np.abs(found.hsic[usable] - expected.hsic[usable]).max() <= 1e-12 * scale
    cka, reference = cka_from_hsic(found.hsic, np, found.constant), cka_from_hsic(expected.hsic, np, expected.constant)
    np.testing.assert_allclose(cka, reference, atol=1e-12)


def test_grams_only_when_each_call_is_one_cka_batch():
    assert grams_in_graph("flatten", 64, 64, None)
    assert grams_in_graph("flatten", 64, 64, 64)
    assert grams_in_graph("flatten", 64, 64, None, micro_batch=64)
    assert not grams_in_graph("pool", 64, 64, None)  # pooled taps are (N, C) already
    assert not grams_in_graph("flatten", 512, 256, None)  # one CKA batch over several calls
    assert not grams_in_graph("flatten", 64, 64, 8)  # a fixed batch axis chunks the call
    assert not grams_in_graph("flatten", 4, 4, 8)  # ... or pads it
    assert not grams_in_graph("flatten", 64, 64, None, micro_batch=16)  # micro-batches split it


def _scan(model, inputs, **options):
    prepared = PreparedModel.load(model)
    result = redaudit.scan(prepared, inputs=inputs, reduce="flatten", **options)
    used = any(key[-1] for key in prepared._augmented)  # the cache key ends with `grams`
    return result, used


def _reference(model, result, inputs, aggregate):
    samples = result.samples
    raw = raw_outputs(model, result.layer_names, {k: v[:samples] for k, v in inputs.items()})
    features = [reduce_as_documented(array, samples, None, reduce="flatten") for array in raw]
    return reference_matrix(features, result.config.cka_batch or samples, aggregate)


@pytest.mark.parametrize("aggregate", ["cka", "hsic"])
def test_flattened_scan_uses_grams_and_matches_the_float64_reference(aggregate):
    model = residual_cnn(blocks=4, channels=6, size=8)
    inputs = {"input": np.random.default_rng(3).normal(size=(160, 3, 8, 8)).astype(np.float32)}
    result, used = _scan(model, inputs, samples=160, cka_batch=32, aggregate=aggregate, level="block")
    assert used
    assert result.batches == 5 and len(result.layer_names) >= 4
    assert np.abs(result.similarity - _reference(model, result, inputs, aggregate)).max() <= 1e-9
    assert all(layer.reduced_axes == () for layer in result.layers)


def test_a_cka_batch_over_several_calls_fetches_the_taps_and_agrees():
    model = residual_cnn(blocks=3, channels=4, size=6)
    inputs = {"input": np.random.default_rng(5).normal(size=(300, 3, 6, 6)).astype(np.float32)}
    result, used = _scan(model, inputs, samples=300, cka_batch=None)  # one CKA batch = runs of 256 + 44
    assert not used
    assert np.abs(result.similarity - _reference(model, result, inputs, "cka")).max() <= 1e-9
    small, used_small = _scan(model, inputs, samples=200, cka_batch=None)  # one call holds every sample
    assert used_small
    assert np.abs(small.similarity - _reference(model, small, inputs, "cka")).max() <= 1e-9


@pytest.mark.parametrize("cka_batch, expect_grams", [(4, True), (8, False)])
def test_fixed_batch_axis_decides_and_both_ways_agree(cka_batch, expect_grams):
    model = residual_cnn(blocks=3, channels=4, size=6, batch=4)
    inputs = {"input": np.random.default_rng(9).normal(size=(64, 3, 6, 6)).astype(np.float32)}
    result, used = _scan(model, inputs, samples=64, cka_batch=cka_batch)
    assert used is expect_grams
    samples = result.samples
    raw = raw_outputs(model, result.layer_names, {"input": inputs["input"][:samples]}, chunk=4)
    features = [reduce_as_documented(array, samples, None, reduce="flatten") for array in raw]
    assert np.abs(result.similarity - reference_matrix(features, cka_batch)).max() <= 1e-9
