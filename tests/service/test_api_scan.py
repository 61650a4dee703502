"""Upload → scan job → result, on SQLite and PostgreSQL, with numbers equal to a direct scan."""
from __future__ import annotations

import json

import numpy as np

import redaudit
from tests.service.conftest import FAST_SPEC


def test_upload_scan_result_equals_library_scan(service, model_file):
    uploaded = service.upload(model_file)
    assert uploaded.status_code == 201, uploaded.text
    blob = uploaded.json()
    import hashlib

    assert blob["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest() == blob["model_sha256"]
    submitted = service.client.post("/api/v1/scans", headers=service.headers(),
                                    json={"model": "net", "label": "v1", "blob": blob["sha256"], "spec": FAST_SPEC})
    assert submitted.status_code == 202, submitted.text
    job = service.wait(submitted.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["progress_done"] == job["progress_total"] == 64
    report = service.client.get(f"/api/v1/jobs/{job['id']}/result", headers=service.headers("read")).json()
    direct = redaudit.scan(model_file, **FAST_SPEC)
    assert report["msrs"] == direct.msrs
    assert [layer["name"] for layer in report["layers"]] == direct.layer_names
    np.testing.assert_array_equal(np.array(report["similarity"], dtype=float), direct.similarity)

    history = service.client.get("/api/v1/models/net", headers=service.headers("read")).json()
    [version] = history["versions"]
    assert version["sha256"] == blob["sha256"] and version["label"] == "v1"
    assert [scan["scan_id"] for scan in version["scans"]] == [job["scan_id"]]
    stored = service.client.get(f"/api/v1/scans/{job['scan_id']}", headers=service.headers("read")).json()
    assert stored["summary"]["msrs"] == direct.msrs

    png = service.client.get(f"/api/v1/jobs/{job['id']}/heatmap.png", headers=service.headers("read"))
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    html = service.client.get(f"/api/v1/jobs/{job['id']}/report.html", headers=service.headers("read"))
    assert html.status_code == 200 and direct.layer_names[0] in html.text
