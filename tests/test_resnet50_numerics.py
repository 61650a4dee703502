"""ResNet-50 layout (bottleneck blocks 3-4-6-3, random weights, BN statistics): every block IR is
kept and the similarity matrix equals an independent per-pair float64 computation.

Globally pooled post-ReLU maps of this network vary across samples by about 1 % of their mean;
uncentred Gram terms then cancel in the unbiased HSIC, which once made 14 of the 17 block IRs
look "constant". The reference here shares no code with redaudit: it adds the block outputs to
the graph itself, runs onnxruntime, pools with NumPy and computes CKA pair by pair through
U-centred Gram matrices (Székely & Rizzo), a different formula from redaudit's.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import redaudit  # noqa: E402
from benchmarks.resnet import export_resnet50  # noqa: E402

IMAGE_SIZE = 160
SAMPLES = 128
BATCH = 64  # small batches and large images make the uncentred cancellation worst


def _u_centred(gram: np.ndarray) -> np.ndarray:
    n = gram.shape[0]
    gram = gram.copy()
    np.fill_diagonal(gram, 0.0)
    rows = gram.sum(axis=1) / (n - 2)
    total = gram.sum() / ((n - 1) * (n - 2))
    centred = gram - rows[:, None] - rows[None, :] + total
    np.fill_diagonal(centred, 0.0)
    return centred


def _reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased linear CKA in float64 from features centred in float64."""
    x = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    y = y.astype(np.float64) - y.astype(np.float64).mean(axis=0)
    kx, ky = _u_centred(x @ x.T), _u_centred(y @ y.T)
    return float((kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum()))


def _pooled_block_outputs(path: str, names: list[str], inputs: np.ndarray) -> list[np.ndarray]:
    model = onnx.load(path)
    present = {output.name for output in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    parts = [session.run(names, {"input": inputs[start:start + BATCH]}) for start in range(0, len(inputs), BATCH)]
    return [np.concatenate([part[i] for part in parts]).mean(axis=(2, 3)) for i in range(len(names))]


@pytest.mark.slow
def test_resnet50_layout_keeps_every_block_and_matches_float64_reference(tmp_path):
    path = str(export_resnet50(tmp_path / "resnet50.onnx", IMAGE_SIZE))
    inputs = np.random.default_rng(0).standard_normal((SAMPLES, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    result = redaudit.scan(path, inputs={"input": inputs}, samples=SAMPLES, cka_batch=BATCH,
                           device="cpu", backend="numpy")
    names = [layer.name for layer in result.layers]
    assert len(names) == 17, names
    assert result.layer_issues == {}
    assert np.isfinite(result.msrs)

    features = _pooled_block_outputs(path, names, inputs)
    # The regime of the bug: across-sample variation small next to the mean.
    spread = [float(np.linalg.norm(f.std(axis=0)) / np.linalg.norm(f.mean(axis=0))) for f in features]
    assert np.median(spread) < 0.1
    batches = []
    for start in range(0, SAMPLES, BATCH):
        chunk = [f[start:start + BATCH] for f in features]
        batches.append([[_reference_cka(a, b) for b in chunk] for a in chunk])
    expected = np.mean(batches, axis=0)
    assert np.abs(result.similarity - expected).max() < 1e-6
