"""No server path reaches a client (issue 24 items 10-11): refused uploads name the file as the
client sent it, inputs say "the inputs archive", versions carry no ``path``, a job's report names
the uploaded file; and the size refusal is grammatical."""
from __future__ import annotations

import io
import json
import os
import tempfile

import numpy as np
import onnx

from tests.models import residual_cnn
from tests.service.conftest import FAST_SPEC


def _server_paths(service) -> list[str]:
    return [str(service.state.blobs.root), tempfile.gettempdir(), os.getcwd(), str(service.state.blobs.root.parent)]


def _assert_no_server_path(service, text: str) -> None:
    for path in _server_paths(service):
        assert path not in text, (path, text)


def test_refused_uploads_name_the_clients_file(make_service, sqlite_url):
    service = make_service(sqlite_url, max_upload_bytes=200_000)
    response = service.client.post("/api/v1/uploads/model", content=b"GIF89a garbage", params={"filename": "notonnx.onnx"},
                                   headers={**service.headers(), "content-type": "application/octet-stream"})
    detail = response.json()["detail"]
    assert response.status_code == 400 and detail.startswith("notonnx.onnx is not an ONNX model"), detail
    _assert_no_server_path(service, detail)
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}], dtype=object))
    response = service.client.post("/api/v1/uploads/inputs", content=buffer.getvalue(),
                                   headers={**service.headers(), "content-type": "application/octet-stream"})
    detail = response.json()["detail"]
    assert response.status_code == 400 and "the inputs archive" in detail and "staging" not in detail, detail
    _assert_no_server_path(service, detail)


def test_size_refusal_is_grammatical(make_service, sqlite_url):
    service = make_service(sqlite_url, max_upload_bytes=1000)
    response = service.client.post("/api/v1/uploads/inputs", content=b"\0" * 5000,
                                   headers={**service.headers(), "content-type": "application/octet-stream"})
    detail = response.json()["detail"]
    assert response.status_code == 413 and detail.startswith("the inputs archive is "), detail
    assert "the inputs is" not in detail


def test_versions_scans_and_reports_carry_no_server_path(make_service, sqlite_url, tmp_path):
    service = make_service(sqlite_url)
    path = tmp_path / "net.onnx"
    onnx.save(residual_cnn(blocks=3, seed=1), str(path))
    blob = service.upload(path).json()["sha256"]
    job = service.wait(service.client.post("/api/v1/scans", headers=service.headers(),
                                           json={"model": "net", "blob": blob, "spec": FAST_SPEC}).json()["id"])
    assert job["state"] == "succeeded", job
    read = service.headers("read")
    history = service.client.get("/api/v1/models/net", headers=read).json()
    assert all("path" not in version for version in history["versions"])
    versions = service.client.get("/api/v1/models/net/versions", headers=read).json()
    assert all("path" not in version for version in versions)
    scan = service.client.get(f"/api/v1/scans/{job['scan_id']}", headers=read).json()
    assert "path" not in scan["version"]
    report = service.client.get(f"/api/v1/jobs/{job['id']}/result", headers=read).json()
    assert report["model"]["path"] == "net.onnx"
    for text in (json.dumps(history), json.dumps(versions), json.dumps(scan), json.dumps(report)):
        _assert_no_server_path(service, text)
        assert "redaudit-job-" not in text


def test_job_errors_keep_folders_out():
    from redaudit.service.wording import for_api

    assert for_api("/tmp/redaudit-job-x1/bundle/model.onnx: tensor 'w' is missing") == \
        "model.onnx: tensor 'w' is missing"
