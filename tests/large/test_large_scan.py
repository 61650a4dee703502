"""A model past protobuf's 2 GB (weights in external data) scans end to end with the defaults,
and its similarity matrix equals a plain float64 CKA of plain onnxruntime's outputs.

The 2.25 GiB model is written in the test (seconds, see builders.py) and deleted after. The
scan runs as a real ``redaudit scan`` process; the reference reads the same tensors through a
second .onnx beside the same data file, opened by path as any onnxruntime user would.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.reference import unbiased_cka
from tests.large.builders import residual_mlp_external, with_outputs

pytestmark = pytest.mark.large

ROOT = Path(__file__).resolve().parents[2]
SAMPLES, CKA_BATCH = 64, 32
CLI = "import sys; from redaudit.cli.main import main; sys.argv = ['redaudit', *sys.argv[1:]]; main()"
#: Only a hang guard, never a verdict on speed: the 2.25 GiB prune took 294 s in one loaded run and over 900 s at
#: load 12 on 2 cores, so the bound sits far above any loaded run.
HANG_GUARD_S = 3600


@pytest.fixture(scope="module")
def large_mlp(tmp_path_factory):
    """Built once for the module (2.25 GiB on disk), removed after its last test."""
    built = residual_mlp_external(tmp_path_factory.mktemp("large") / "model")
    yield built
    built.remove()


def _files_sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def _plain_outputs(model: Path, names: list[str], inputs: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(with_outputs(model, names)), providers=["CPUExecutionProvider"])
    parts = [session.run(names, {"x": inputs[start:start + CKA_BATCH]}) for start in range(0, len(inputs), CKA_BATCH)]
    return [np.concatenate([part[i] for part in parts]) for i in range(len(names))]


def test_scan_past_2gb_matches_plain_onnxruntime(large_mlp, tmp_path):
    assert large_mlp.data_bytes > 2**31  # past what one protobuf can hold
    inputs = np.random.default_rng(1).standard_normal((SAMPLES, 4096)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=inputs)
    report = tmp_path / "scan.json"
    done = subprocess.run([sys.executable, "-c", CLI, "scan", str(large_mlp.model), "--inputs", str(tmp_path / "inputs.npz"),
                           "--samples", str(SAMPLES), "--cka-batch", str(CKA_BATCH), "--device", "cpu",
                           "--json", str(report), "--quiet"],
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    names = [layer["name"] for layer in result["layers"]]
    assert names == large_mlp.stream  # every residual block, in order
    assert result["model"]["size_bytes"] > 2**31
    assert result["model"]["sha256"] == _files_sha256(large_mlp.model, large_mlp.data)

    features = [output.astype(np.float64) for output in _plain_outputs(large_mlp.model, names, inputs)]
    expected = np.zeros((len(names), len(names)))
    for start in range(0, SAMPLES, CKA_BATCH):
        for i in range(len(names)):
            for j in range(len(names)):
                expected[i, j] += unbiased_cka(features[i][start:start + CKA_BATCH],
                                               features[j][start:start + CKA_BATCH]) / (SAMPLES // CKA_BATCH)
    np.testing.assert_allclose(np.asarray(result["similarity"], dtype=np.float64), expected, atol=1e-6)


def test_service_accepts_a_bundle_past_2gb_within_its_upload_limit(large_mlp, tmp_path):
    """The upload check (run in the service's check processes) on a .tar of the model and its
    data: accepted under a 3 GiB limit, never loading the weights, with the CLI's identity."""
    from redaudit.service.archives import ArchiveLimits, pack_bundle
    from redaudit.service.checks import check_model
    from redaudit.service.storage import UploadError

    bundle = tmp_path / "model.tar"
    pack_bundle(large_mlp.model, ["model.data"], bundle)
    try:
        identity = check_model(bundle, "bundle", "model.tar", ArchiveLimits(3 * 1024**3, 1000, 200.0))
        assert identity == _files_sha256(large_mlp.model, large_mlp.data)
        with pytest.raises(UploadError, match="limit"):
            check_model(bundle, "bundle", "model.tar", ArchiveLimits(2 * 1024**3, 1000, 200.0))
    finally:
        bundle.unlink(missing_ok=True)
