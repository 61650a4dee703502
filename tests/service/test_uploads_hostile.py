"""Hostile uploads: a 4xx with one clear line, nothing stored (no blob file, no row), no job."""
from __future__ import annotations

import io
import os
import tarfile
import zipfile

import numpy as np
import onnx
import pytest

from tests.models import residual_cnn


def _stored_files(service) -> list[str]:
    root = service.state.blobs.root
    return [str(p) for p in root.rglob("*") if p.is_file()]


def _assert_refused(service, response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and words in detail, detail
    assert _stored_files(service) == []
    with service.state.engine.connect() as connection:
        from sqlalchemy import text

        assert connection.execute(text("SELECT count(*) FROM service_blobs")).scalar() == 0
        assert connection.execute(text("SELECT count(*) FROM service_jobs")).scalar() == 0


def _post(service, body: bytes, content_type="application/octet-stream", what="model"):
    return service.client.post(f"/api/v1/uploads/{what}", content=body,
                                headers={**service.headers(), "content-type": content_type})


@pytest.fixture
def hostile(make_service, sqlite_url):
    return make_service(sqlite_url, max_upload_bytes=200_000)


def _model_bytes() -> bytes:
    return residual_cnn(blocks=2, seed=3).SerializeToString()


def test_oversized_model_is_cut_off(hostile):
    _assert_refused(hostile, _post(hostile, b"\0" * 300_000), 413, "limit")


def test_oversized_without_content_length_is_cut_off_while_streaming(hostile):
    def chunks():
        for _ in range(40):
            yield b"\0" * 10_000
    response = hostile.client.post("/api/v1/uploads/model", content=chunks(),
                                   headers={**hostile.headers(), "content-type": "application/octet-stream"})
    _assert_refused(hostile, response, 413, "limit")


def test_truncated_and_garbage_models(hostile):
    _assert_refused(hostile, _post(hostile, _model_bytes()[:-500]), 400, "not an ONNX model")
    _assert_refused(hostile, _post(hostile, b"GIF89a garbage"), 400, "not an ONNX model")
    _assert_refused(hostile, _post(hostile, b""), 400, "empty")


def test_wrong_content_type(hostile):
    _assert_refused(hostile, _post(hostile, _model_bytes(), "text/plain"), 415, "content type")
    _assert_refused(hostile, _post(hostile, b"x", "image/png", what="inputs"), 415, "content type")


def test_single_model_with_external_data_must_come_as_bundle(hostile, tmp_path):
    model = residual_cnn(blocks=2, seed=3)
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, size_threshold=0,
              location="m.data")
    _assert_refused(hostile, _post(hostile, (tmp_path / "m.onnx").read_bytes()), 400, "missing")


def _zip(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo("link.data")
            info.external_attr = (0o120777 << 16)
            archive.writestr(info, symlink)
    return buffer.getvalue()


def _tar(members: dict[str, bytes], link: tuple[str, str] | None = None, mode="w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            archive.addfile(info)
    return buffer.getvalue()


def test_zip_bomb_refused(hostile):
    bomb = _zip({"m.onnx": _model_bytes(), "weights.data": b"\0" * 50_000_000})
    assert len(bomb) < 200_000
    _assert_refused(hostile, _post(hostile, bomb, "application/zip"), 413, "archive bomb")


def test_tar_bomb_refused_while_unpacking(hostile):
    bomb = _tar({"m.onnx": _model_bytes(), "weights.data": b"\0" * 50_000_000})
    assert len(bomb) < 200_000
    _assert_refused(hostile, _post(hostile, bomb, "application/x-tar"), 413, "limit")


@pytest.mark.parametrize("name", ["../evil.onnx", "/etc/evil.onnx", "a/../../evil.onnx", "C:/evil.onnx"])
def test_traversal_names_refused(hostile, name):
    _assert_refused(hostile, _post(hostile, _zip({name: _model_bytes()}), "application/zip"), 400, "evil.onnx")
    _assert_refused(hostile, _post(hostile, _tar({name: _model_bytes()}), "application/x-tar"), 400, "evil.onnx")


def test_symlinks_in_archives_refused(hostile):
    _assert_refused(hostile, _post(hostile, _zip({"m.onnx": _model_bytes()}, symlink="/etc/passwd"),
                                   "application/zip"), 400, "link")
    _assert_refused(hostile, _post(hostile, _tar({"m.onnx": _model_bytes()}, link=("w.data", "/etc/passwd")),
                                   "application/x-tar"), 400, "link")


def test_bundle_must_hold_one_model(hostile):
    _assert_refused(hostile, _post(hostile, _zip({"a.onnx": _model_bytes(), "b.onnx": _model_bytes()}),
                                   "application/zip"), 400, "exactly one .onnx")
    _assert_refused(hostile, _post(hostile, b"PK\x03\x04 broken", "application/zip"), 415, "neither")


def test_pickled_npz_refused(hostile):
    buffer = io.BytesIO()
    np.savez(buffer, input=np.array([{"evil": 1}], dtype=object))
    _assert_refused(hostile, _post(hostile, buffer.getvalue(), what="inputs"), 400, "pickle")


def test_npz_bomb_refused(hostile):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, input=np.zeros((5_000, 1_000), np.float32))
    assert len(buffer.getvalue()) < 200_000
    _assert_refused(hostile, _post(hostile, buffer.getvalue(), what="inputs"), 413, "bomb")


def test_valid_bundle_with_external_data_is_accepted_and_scans(hostile, tmp_path):
    model = residual_cnn(blocks=2, seed=3)
    folder = tmp_path / "bundle"
    folder.mkdir()
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, size_threshold=0, location="m.data")
    body = _tar({name: (folder / name).read_bytes() for name in os.listdir(folder)})
    response = _post(hostile, body, "application/x-tar")
    assert response.status_code == 201, response.text
    blob = response.json()
    assert blob["kind"] == "bundle" and blob["model_sha256"] != blob["sha256"]
    job = hostile.client.post("/api/v1/scans", headers=hostile.headers(),
                              json={"model": "ext", "blob": blob["sha256"], "spec": {"samples": 32, "cka_batch": 16}})
    assert hostile.wait(job.json()["id"])["state"] == "succeeded"
