from __future__ import annotations

import hashlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from redaudit.nas.data import load_dataset
from redaudit.nas.export import export_candidate, max_output_difference
from redaudit.nas.metrics import flop_count, latency_ms, parameter_count
from redaudit.nas.space import Architecture
from redaudit.nas.train import NasDependencyError, accuracy, require_torch, train_candidate

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def digits():
    return load_dataset(None, seed=0)


@pytest.mark.parametrize("arch", [Architecture("cnn", (2, 1), 8, 3, True),
                                  Architecture("cnn", (1, 2), 4, 5, False),
                                  Architecture("mlp", (1, 2), 8, 3, True)])
def test_exported_candidate_passes_checker_and_matches_torch(digits, arch):
    trained = train_candidate(arch, digits, epochs=2, seed=1)
    exported = export_candidate(trained)
    proto = onnx.load_from_string(exported.model_bytes)
    onnx.checker.check_model(proto, full_check=True)
    assert len(exported.taps) == 1 + sum(arch.depths)
    assert max_output_difference(exported, trained, digits.validation.x) < 1e-4
    # the batch axis is dynamic: one file serves any batch size
    session = ort.InferenceSession(exported.model_bytes, providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": digits.test.x[:3]})[0].shape == (3, 10)
    # tapped tensors exist in the graph and come out with (N, C[, H, W]) shapes
    produced = {out for node in proto.graph.node for out in node.output}
    assert set(exported.taps) <= produced
    assert accuracy(trained, digits.validation) > 0.3  # two epochs already beat chance (0.1)


def test_training_is_deterministic_for_a_seed(digits):
    arch = Architecture("cnn", (1, 1), 4, 3, True)
    first = export_candidate(train_candidate(arch, digits, epochs=1, seed=5)).model_bytes
    second = export_candidate(train_candidate(arch, digits, epochs=1, seed=5)).model_bytes
    third = export_candidate(train_candidate(arch, digits, epochs=1, seed=6)).model_bytes
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    assert first != third


def test_costs_of_a_known_mlp(digits):
    # stem 64->8, one block 8->8->8, head 8->10: MACs 512 + 64 + 64 + 80 = 720
    arch = Architecture("mlp", (1,), 8, 3, False)
    trained = train_candidate(arch, digits, epochs=1, seed=0)
    exported = export_candidate(trained)
    proto = onnx.load_from_string(exported.model_bytes)
    assert flop_count(proto) == 2 * 720
    torch_params = sum(p.numel() for p in trained.module.parameters())
    # the ONNX count adds BatchNorm running statistics (2 per channel, 3 BN layers of 8)
    assert parameter_count(proto) == torch_params + 3 * 2 * 8
    assert 0 < latency_ms(exported.model_bytes, digits.validation.x, repeats=5) < 100


def test_conv_flops_follow_kernel_and_width(digits):
    small = export_candidate(train_candidate(Architecture("cnn", (1, 1), 4, 1, False), digits, epochs=1, seed=0))
    wide = export_candidate(train_candidate(Architecture("cnn", (1, 1), 8, 1, False), digits, epochs=1, seed=0))
    big_kernel = export_candidate(train_candidate(Architecture("cnn", (1, 1), 4, 3, False), digits, epochs=1, seed=0))
    f_small, f_wide, f_kernel = (flop_count(onnx.load_from_string(e.model_bytes)) for e in (small, wide, big_kernel))
    assert 3.0 < f_wide / f_small < 4.0  # conv MACs scale with width², the stem and head linearly
    assert 6.0 < f_kernel / f_small < 9.0  # 3×3 vs 1×1 kernels: 9× on convolutions


def test_cnn_family_on_flat_data_is_a_user_error():
    from redaudit.errors import RedauditError
    from redaudit.nas.data import split_dataset

    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    data = split_dataset(x, np.repeat(np.arange(3), 20), name="flat")
    with pytest.raises(RedauditError, match="mlp"):
        train_candidate(Architecture("cnn", (1,), 4, 3, True), data, epochs=1, seed=0)


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(NasDependencyError, match=r"pip install 'redaudit\[nas\]'"):
        require_torch()
