"""`redaudit push` of a lone .onnx whose weights are in external data files: packed with exactly
the files it references into a .tar bundle, uploaded, scanned like the file scanned locally."""
from __future__ import annotations

import io
import tarfile

import httpx
import onnx
import pytest
from click.testing import CliRunner

import redaudit
from redaudit.cli.main import cli
from tests.models import residual_cnn
from tests.service.test_serve_cli import served  # noqa: F401  (fixture: a real `redaudit serve`)

FAST = ["--samples", "64", "--cka-batch", "32"]


def _external_model(folder, location="weights.bin"):
    """net.onnx with every initializer in ``location`` beside it, and an unrelated file that must
    not be uploaded."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "net.onnx"
    onnx.save_model(residual_cnn(blocks=3, seed=4), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=location, size_threshold=0)
    (folder / "notes.txt").write_text("private: not referenced by the model")
    return path


def test_push_packs_the_referenced_files_and_scans_like_the_local_file(served, tmp_path, monkeypatch):  # noqa: F811
    base, secret, _process = served
    model = _external_model(tmp_path / "export")
    assert (tmp_path / "export" / "weights.bin").stat().st_size > model.stat().st_size  # weights really outside
    monkeypatch.setenv("REDAUDIT_TOKEN", secret)
    pushed = CliRunner().invoke(cli, ["push", str(model), "--server", base, "--name", "ext", "--label", "v1", *FAST])
    assert pushed.exit_code == 0, pushed.output
    assert "external data" in pushed.stderr and "bundle" in pushed.stderr

    headers = {"Authorization": f"Bearer {secret}"}
    [job] = httpx.get(f"{base}/api/v1/jobs", headers=headers).json()
    assert job["state"] == "succeeded", job
    blob = httpx.get(f"{base}/api/v1/blobs/{job['blob_sha256']}", headers=headers)
    assert blob.headers["x-redaudit-blob-kind"] == "bundle"
    with tarfile.open(fileobj=io.BytesIO(blob.content)) as archive:
        members = {member.name: member for member in archive.getmembers()}
        assert set(members) == {"net.onnx", "weights.bin"}  # not notes.txt
        assert all(member.isfile() for member in members.values())
        assert archive.extractfile("weights.bin").read() == (tmp_path / "export" / "weights.bin").read_bytes()

    local = redaudit.scan(model, samples=64, cka_batch=32)
    report = httpx.get(f"{base}/api/v1/jobs/{job['id']}/result", headers=headers).json()
    assert report["model"]["sha256"] == local.model.sha256  # the history identity: the .onnx file
    assert report["msrs"] == pytest.approx(float(local.msrs), rel=1e-6)
    assert f"MSRS {float(local.msrs):.4g}" in pushed.stdout


@pytest.mark.parametrize("location, words", [("missing.bin", "is missing"), ("../outside.bin", "outside")])
def test_push_refuses_references_the_server_would_refuse(served, tmp_path, monkeypatch, location, words):  # noqa: F811
    base, secret, _process = served
    model = _external_model(tmp_path / "export")
    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(model))
    (tmp_path / "outside.bin").write_bytes((tmp_path / "export" / "weights.bin").read_bytes())
    monkeypatch.setenv("REDAUDIT_TOKEN", secret)
    refused = CliRunner().invoke(cli, ["push", str(model), "--server", base, "--name", "ext", *FAST])
    assert refused.exit_code == 2 and words in refused.stderr, refused.output
    assert refused.stderr.count("\n") == 1
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{base}/api/v1/jobs", headers=headers).json() == []  # nothing uploaded, no job
