"""A model past protobuf's 2 GB is pruned and healed by the CLI: written as .onnx + one data file,
loadable by plain onnxruntime, and what it computes is what the in-memory pruned model computed.

The 2.25 GiB model (144 residual layers of 2048²: a 2048-wide healing map is fitted in seconds,
a 4096-wide one in minutes) is written in the test and deleted after, with the pruned copy.
"In-memory result": the agreement prune measured between the original and the pruned model it
held in memory (weightless graph + the source's data files + the healing maps inline) must
equal the agreement plain onnxruntime measures between the two files.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from redaudit.core.weights import ALIGNMENT, is_external, tensor_array
from tests.large.builders import residual_mlp_external

pytestmark = pytest.mark.large

ROOT = Path(__file__).resolve().parents[2]
SAMPLES, CKA_BATCH, LAYERS, WIDTH = 64, 32, 144, 2048
CLI = "import sys; from redaudit.cli.main import main; sys.argv = ['redaudit', *sys.argv[1:]]; main()"
#: Only a hang guard, never a verdict on speed: the 2.25 GiB prune took 294 s in one loaded run and over 900 s at
#: load 12 on 2 cores, so the bound sits far above any loaded run.
HANG_GUARD_S = 3600


@pytest.fixture(scope="module")
def large_mlp(tmp_path_factory):
    built = residual_mlp_external(tmp_path_factory.mktemp("large-prune") / "model", layers=LAYERS, width=WIDTH)
    yield built
    built.remove()


def _outputs(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Plain onnxruntime, by path, one batch at a time; the session is gone when this returns."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": inputs[start:start + CKA_BATCH]})[0]
                           for start in range(0, len(inputs), CKA_BATCH)]).astype(np.float64)


def test_prune_and_heal_past_2gb_writes_a_model_plain_onnxruntime_runs(large_mlp, tmp_path):
    assert large_mlp.data_bytes > 2**31
    inputs = np.random.default_rng(1).standard_normal((SAMPLES, WIDTH)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=inputs)
    out = tmp_path / "out" / "pruned.onnx"
    done = subprocess.run([sys.executable, "-c", CLI, "prune", str(large_mlp.model), "--remove", "2", "--heal", "linear",
                           "--inputs", str(tmp_path / "inputs.npz"), "--samples", str(SAMPLES),
                           "--cka-batch", str(CKA_BATCH), "--device", "cpu", "--no-latency", "--json", "-o", str(out)],
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["removed"]) == 2 and report["healed"]
    assert sorted(os.listdir(out.parent)) == ["pruned.onnx", "pruned.onnx.data"]
    assert out.stat().st_size < 1024**2  # the graph; every weight is in the data file
    onnx.checker.check_model(str(out))

    written = onnx.load(str(out), load_external_data=False)
    source = {t.name: t for t in onnx.load(str(large_mlp.model), load_external_data=False).graph.initializer}
    kept = [t for t in written.graph.initializer if t.name in source]
    assert len(kept) == LAYERS - 2 and all(is_external(t) for t in written.graph.initializer)
    for tensor in (kept[0], kept[len(kept) // 2], kept[-1]):  # copied byte for byte, at aligned offsets
        offset = next(int(entry.value) for entry in tensor.external_data if entry.key == "offset")
        assert offset % ALIGNMENT == 0
        assert np.array_equal(tensor_array(tensor, out.parent), tensor_array(source[tensor.name], large_mlp.model.parent))

    original, pruned = _outputs(large_mlp.model, inputs), _outputs(out, inputs)
    measured = report["agreement"][0]
    cosines = np.einsum("ij,ij->i", original, pruned) / (np.linalg.norm(original, axis=1) * np.linalg.norm(pruned, axis=1))
    assert abs(float(cosines.mean()) - measured["cosine_mean"]) < 1e-6
    assert abs(float(np.abs(pruned - original).max()) - measured["max_abs_error"]) < 1e-4 * max(1.0, measured["max_abs_error"])
    shutil_free(out.parent)


def shutil_free(folder: Path) -> None:
    """The pruned copy is as large as the model: free its disk space at once."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
