"""Memory bounded independently of the CKA batch: onnxruntime runs micro-batches sized by the
estimate, the IRs of one CKA batch are joined before CKA, so every number equals the
unconstrained run's; only a scan whose single sample cannot fit is refused."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import models
import prune_models as pm
import redaudit
from redaudit.cli.main import cli
from redaudit.core.liveness import live_peak, tensor_sizes
from redaudit.core.memory import MemoryLimitError, check_memory, estimate_scan_memory, session_weight_bytes
from redaudit.core.session_memory import micro_batch_for
from redaudit.core.spec import ScanSpec
from redaudit.prune import prune_model
from redaudit.prune.calibrate import outputs_only
from redaudit.prune.verify import Evaluator

PLENTY = 64 * 1024**3  # "available" for estimates that must not depend on this machine
SPEC = ScanSpec(samples=512, device="cpu", backend="numpy")
#: A thread count set by the user keeps one CKA batch in flight (no lanes: lanes.fit_lanes),
#: so the parts are those of the micro-batch rule alone.
ONE_LANE = SPEC.with_options(threads=1)


@pytest.fixture
def cnn_path(save_model):
    """~0.8 MB of activations per sample: 256 at once need ~200 MB, a 40 MB budget fits ~20."""
    return save_model(models.residual_cnn(blocks=3, channels=16, size=32), "cnn.onnx")


def _fixed_parts(estimate) -> int:
    return sum(estimate.parts[name] for name in ("weights", "probe", "features", "gram"))


def test_micro_batch_is_the_largest_that_fits_the_budget(cnn_path):
    prepared = redaudit.prepare(cnn_path, device="cpu")
    free = estimate_scan_memory(prepared, ONE_LANE, available=PLENTY)  # parts of one batch in flight
    assert free.run_batch == 256
    per_sample = free.parts["activations"] // free.run_batch
    budget = _fixed_parts(free) + 37 * per_sample + per_sample // 2
    bounded = estimate_scan_memory(prepared, SPEC.with_options(max_memory_bytes=budget), available=PLENTY)
    assert bounded.run_batch == (budget - _fixed_parts(free)) // per_sample == 37
    assert bounded.scan_bytes <= budget < free.scan_bytes
    tighter = estimate_scan_memory(prepared, SPEC.with_options(max_memory_bytes=budget - per_sample),
                                   available=PLENTY)
    assert tighter.run_batch == 36
    # the budget never exceeds what is available
    assert estimate_scan_memory(prepared, SPEC.with_options(max_memory_bytes=PLENTY), available=budget).run_batch == 37


def test_a_small_budget_gives_the_unconstrained_matrix(cnn_path):
    budget = 40 * 1024**2
    prepared = redaudit.prepare(cnn_path, device="cpu")
    assert estimate_scan_memory(prepared, SPEC, available=PLENTY).parts["activations"] > budget
    free = redaudit.scan(cnn_path, SPEC.with_options(max_memory_bytes=PLENTY))
    bounded = redaudit.scan(cnn_path, SPEC.with_options(max_memory_bytes=budget))
    expected = estimate_scan_memory(prepared, SPEC.with_options(max_memory_bytes=budget)).run_batch
    assert free.micro_batch == 256 and 1 <= bounded.micro_batch == expected < 256
    assert bounded.batches == free.batches == 2 and bounded.samples == free.samples
    np.testing.assert_array_equal(bounded.similarity, free.similarity)
    np.testing.assert_array_equal(bounded.msrs_batches, free.msrs_batches)
    assert bounded.msrs == free.msrs and bounded.input_hash == free.input_hash


def test_cka_batch_all_and_micro_batches(cnn_path):
    """--cka-batch all: chunks of 256 samples, each run as micro-batches, joined into one batch."""
    spec = SPEC.with_options(samples=300, cka_batch=None)
    free = redaudit.scan(cnn_path, spec.with_options(max_memory_bytes=PLENTY))
    bounded = redaudit.scan(cnn_path, spec.with_options(max_memory_bytes=30 * 1024**2))
    assert bounded.micro_batch < 256 and bounded.batches == free.batches == 1
    np.testing.assert_array_equal(bounded.similarity, free.similarity)


def test_cli_max_memory_scans_in_micro_batches(runner, cnn_path, tmp_path):
    free = redaudit.scan(cnn_path, SPEC.with_options(max_memory_bytes=PLENTY))
    out = tmp_path / "scan.json"
    result = runner.invoke(cli, ["scan", str(cnn_path), "--samples", "512", "--device", "cpu", "--backend", "numpy",
                                 "--max-memory", "40M", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert 1 <= report["micro_batch"] < 256 and report["config"]["max_memory_bytes"] == 40 * 1024**2
    np.testing.assert_array_equal(np.array(report["similarity"], dtype=np.float64), free.similarity)
    shown = runner.invoke(cli, ["scan", str(cnn_path), "--samples", "512", "--device", "cpu",
                                "--max-memory", "40M"])
    assert f"onnxruntime micro-batch {report['micro_batch']}" in shown.output


def test_refused_only_when_one_sample_cannot_fit(runner, cnn_path):
    result = runner.invoke(cli, ["scan", str(cnn_path), "--device", "cpu", "--max-memory", "2M"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert result.stderr.startswith("error: this scan needs about ") and "with one sample" in result.stderr
    assert "but 2.0 MB is available" in result.stderr
    bad = runner.invoke(cli, ["scan", str(cnn_path), "--max-memory", "lots"])
    assert bad.exit_code == 2 and "--max-memory" in bad.stderr and bad.stderr.count("\n") == 1


def test_spec_validates_max_memory():
    with pytest.raises(redaudit.errors.ConfigError, match="--max-memory"):
        ScanSpec(max_memory_bytes=0)
    spec = ScanSpec(max_memory_bytes=5 * 1024**2)
    assert ScanSpec.from_json(spec.to_json()) == spec and ScanSpec().max_memory_bytes is None


@pytest.fixture
def cnn_prune_path(tmp_path):
    path = tmp_path / "prune_cnn.onnx"
    onnx.save(pm.residual_cnn(blocks=4, zero_block=2), str(path))
    return path


def test_prune_verification_and_calibration_under_a_small_budget(cnn_prune_path):
    """Micro-batched verification, calibration and cosine scoring change neither the blocks
    chosen, the healing maps nor the measured agreement."""
    options = {"samples": 512, "remove": 1, "heal": "linear", "latency": False, "measure_msrs": False,
               "device": "cpu", "backend": "numpy"}
    prepared = redaudit.prepare(cnn_prune_path, device="cpu")
    arrays = {"img": np.zeros((512, 3, 8, 8), np.float32)}
    sizes, _ = tensor_sizes(prepared.proto, prepared.index.activations, {})
    per_sample = 2 * live_peak(prepared.proto.graph, sizes)  # the first run's arena and the memory pattern
    held = 2 * 512 * sizes["features"] + 64 * 2 * sizes["layer1.out"]  # verification's outputs, one calibration batch
    budget = session_weight_bytes(prepared.proto) + held + 20 * per_sample
    evaluator = Evaluator(prepared, arrays, 256, max_memory_bytes=budget)
    assert 20 <= evaluator.micro_batch < 256
    cut = outputs_only(prepared.proto, ["layer1.out", "layer2.out"])
    assert 1 <= micro_batch_for(cut, {"img": arrays["img"][:64]}, budget, 64, held_samples=64) < 64
    free = prune_model(cnn_prune_path, max_memory_bytes=PLENTY, **options)
    bounded = prune_model(cnn_prune_path, max_memory_bytes=budget, **options)
    assert bounded.removed == free.removed
    assert bounded.healed == free.healed
    assert bounded.agreement == free.agreement
    assert bounded.model.SerializeToString() == free.model.SerializeToString()
    np.testing.assert_allclose([c.similarity for c in bounded.candidates], [c.similarity for c in free.candidates],
                               rtol=0, atol=1e-12)


def test_on_cuda_the_device_memory_sizes_the_micro_batch(cnn_path):
    """With onnxruntime on CUDA the activations live on the GPU: its free memory (a share of it)
    sizes the micro-batch, and the host budget only has to hold what stays on the host."""
    prepared = redaudit.prepare(cnn_path, device="cpu")
    free = estimate_scan_memory(prepared, ONE_LANE, available=PLENTY)  # CUDA runs one batch at a time
    per_sample = free.parts["activations"] // free.run_batch
    room = 2 * (free.parts["weights"] + 40 * per_sample)  # the default share (half) leaves 40 samples
    on_gpu = estimate_scan_memory(prepared, SPEC, device_runtime=True, available=PLENTY, device_available=lambda: room)
    assert on_gpu.run_batch == 40 and on_gpu.device_bytes == free.parts["weights"] + 40 * per_sample
    host_only = free.scan_bytes - free.parts["activations"]
    small_host = SPEC.with_options(max_memory_bytes=host_only)  # no room for a single activation on the host
    assert estimate_scan_memory(prepared, small_host, device_runtime=True, available=PLENTY,
                                device_available=lambda: room).run_batch == 40
    def tiny() -> int:  # half of it cannot hold the weights and one sample
        return free.parts["weights"]

    refused = estimate_scan_memory(prepared, SPEC, device_runtime=True, available=PLENTY, device_available=tiny)
    assert refused.run_batch == 0
    with pytest.raises(MemoryLimitError, match=r"of GPU memory with one sample per onnxruntime run but"):
        check_memory(refused, device_available=tiny)
