"""Job lifecycle through the API: invalid requests leave no job; cancel; check; prune."""
from __future__ import annotations

import time

import pytest

from tests.service.conftest import FAST_SPEC, HANG_GUARD_S


def _upload(service, model_file) -> str:
    response = service.upload(model_file)
    assert response.status_code == 201, response.text
    return response.json()["sha256"]


@pytest.mark.parametrize("spec, words", [({"samples": 0}, "samples"), ({"level": "planet"}, "unknown level"),
                                         ({"colour": 1}, "unknown scan option"), ({"epsilon": 3}, "epsilon"),
                                         ({"inputs": "/etc/passwd"}, "inputs"),
                                         ({"text": "/etc/passwd", "tokenizer": "/"}, "upload the token ids")])
def test_invalid_spec_is_400_and_leaves_no_job(make_service, sqlite_url, model_file, spec, words):
    service = make_service(sqlite_url)
    blob = _upload(service, model_file)
    response = service.client.post("/api/v1/scans", headers=service.headers(),
                                   json={"model": "net", "blob": blob, "spec": spec})
    assert response.status_code == 400 and words in response.json()["detail"], response.text
    assert "--" not in response.json()["detail"]  # the API names fields, not command-line flags
    assert service.state.jobs.list() == []


def test_unknown_blob_is_404_and_leaves_no_job(make_service, sqlite_url):
    service = make_service(sqlite_url)
    response = service.client.post("/api/v1/scans", headers=service.headers(),
                                   json={"model": "net", "blob": "a" * 64})
    assert response.status_code == 404 and "upload it" in response.json()["detail"]
    assert service.state.jobs.list() == []


def test_cancel_queued_and_running(make_service, sqlite_url, model_file):
    service = make_service(sqlite_url, start_workers=False)
    blob = _upload(service, model_file)
    queued = service.client.post("/api/v1/scans", headers=service.headers(),
                                 json={"model": "net", "blob": blob, "spec": FAST_SPEC}).json()
    cancelled = service.client.post(f"/api/v1/jobs/{queued['id']}/cancel", headers=service.headers())
    assert cancelled.json()["state"] == "cancelled"

    running = make_service(sqlite_url)  # same database, now with a worker
    job = running.client.post("/api/v1/scans", headers=running.headers(),
                              json={"model": "net", "blob": blob, "spec": {"samples": 2_000_000, "cka_batch": 32}}).json()
    # wait for the event "the worker has reported a batch" (its progress row); the deadline is only a
    # hang guard: a loaded machine may take long to start the worker, and cancelling before that
    # would test the queued case again, not a running scan
    deadline = time.monotonic() + HANG_GUARD_S
    while running.state.jobs.get(job["id"])["progress_done"] == 0:
        assert time.monotonic() < deadline, "the worker never reported progress"
        time.sleep(0.05)
    running.client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=running.headers())
    final = running.wait(job["id"])
    assert final["state"] == "cancelled" and 0 < final["progress_done"] < 2_000_000
    assert final["scan_id"] is None
    assert running.client.get(f"/api/v1/jobs/{job['id']}/result", headers=running.headers("read")).status_code == 409


def test_check_passes_then_fails_against_recorded_baseline(make_service, sqlite_url, tmp_path, model_file):
    import onnx

    from tests.models import residual_cnn

    service = make_service(sqlite_url)
    base = _upload(service, model_file)
    first = service.client.post("/api/v1/checks", headers=service.headers(),
                                json={"model": "net", "label": "v1", "blob": base, "spec": FAST_SPEC,
                                      "max_increase": 5}).json()
    first = service.wait(first["id"])
    assert first["state"] == "succeeded" and first["outcome"]["passed"] and first["scan_id"]
    redundant = tmp_path / "dup.onnx"
    onnx.save(residual_cnn(blocks=3, seed=1, duplicate_block=1), str(redundant))
    second = service.client.post("/api/v1/checks", headers=service.headers(),
                                 json={"model": "net", "label": "v2", "blob": _upload(service, redundant),
                                       "spec": FAST_SPEC, "max_increase": 5}).json()
    second = service.wait(second["id"])
    assert second["state"] == "succeeded", second
    outcome = second["outcome"]
    assert outcome["baseline_scan_id"] == first["scan_id"]
    assert outcome["passed"] is (outcome["increase_pct"] <= 5), outcome


def test_check_significant_is_stored_forwarded_and_judged(make_service, db_url, tmp_path, model_file):
    """The job stores ``significant`` (absent when not asked, as in jobs queued before it existed);
    the worker judges with the bootstrap interval of the increase and reports it."""
    import onnx

    from tests.models import residual_cnn

    service = make_service(db_url)
    spec = {"samples": 320, "cka_batch": 32}  # 10 batches: an interval exists (MIN_INTERVAL_BATCHES)
    plain = service.wait(service.client.post("/api/v1/checks", headers=service.headers(),
                                             json={"model": "net", "label": "v1", "blob": _upload(service, model_file),
                                                   "spec": spec, "max_increase": 5}).json()["id"])
    assert "significant" not in plain["options"] and plain["outcome"]["increase_ci"] is None
    redundant = tmp_path / "dup.onnx"
    onnx.save(residual_cnn(blocks=3, seed=1, duplicate_block=1), str(redundant))
    job = service.wait(service.client.post("/api/v1/checks", headers=service.headers(),
                                           json={"model": "net", "label": "v2", "blob": _upload(service, redundant),
                                                 "spec": spec, "max_increase": 5, "significant": True}).json()["id"])
    assert job["state"] == "succeeded" and job["options"]["significant"] is True, job
    outcome = job["outcome"]
    low, high = outcome["increase_ci"]
    assert low <= outcome["increase_pct"] <= high and "95% CI" in outcome["reason"]
    assert outcome["passed"] is not (outcome["increase_pct"] > 5 and low > 5), outcome
    # the recorded scan reads back with the interval and reading of the job's JSON report
    report = service.client.get(f"/api/v1/jobs/{job['id']}/result", headers=service.headers("read")).json()
    stored = service.client.get(f"/api/v1/scans/{job['scan_id']}", headers=service.headers("read")).json()
    assert stored["msrs_ci"] == report["msrs_ci"] and stored["reading"] == report["reading"]
    assert stored["summary"]["msrs_batches"] == report["msrs_batches"]
    versions = service.client.get("/api/v1/models/net", headers=service.headers("read")).json()["versions"]
    assert versions[-1]["scans"][-1]["msrs_ci"] == report["msrs_ci"]
    refused = service.client.post("/api/v1/checks", headers=service.headers(),
                                  json={"model": "net", "blob": _upload(service, redundant), "spec": spec,
                                        "max_msrs": 100, "significant": True})
    assert refused.status_code == 400 and "max_increase" in refused.json()["detail"], refused.text


def test_prune_list_and_removal_records_child_version(make_service, sqlite_url, tmp_path):
    import onnx

    from tests.models import residual_cnn

    service = make_service(sqlite_url)
    path = tmp_path / "dup.onnx"
    onnx.save(residual_cnn(blocks=3, seed=1, duplicate_block=1), str(path))
    blob = _upload(service, path)
    listed = service.wait(service.client.post("/api/v1/prunes", headers=service.headers(),
                                              json={"model": "net", "blob": blob, "spec": FAST_SPEC,
                                                    "list_only": True}).json()["id"])
    assert listed["state"] == "succeeded" and len(listed["outcome"]["candidates"]) >= 3
    removed = service.wait(service.client.post("/api/v1/prunes", headers=service.headers(),
                                               json={"model": "net", "label": "pruned", "blob": blob,
                                                     "spec": FAST_SPEC, "remove": 1}).json()["id"])
    assert removed["state"] == "succeeded", removed
    assert len(removed["outcome"]["removed"]) == 1 and removed["output_sha256"]
    versions = service.client.get("/api/v1/models/net/versions", headers=service.headers("read")).json()
    by_sha = {version["sha256"]: version for version in versions}
    child = by_sha[removed["output_sha256"]]
    assert child["label"] == "pruned" and child["parent_sha256"] == blob
    pruned_bytes = service.client.get(f"/api/v1/blobs/{removed['output_sha256']}", headers=service.headers("read"))
    assert onnx.load_from_string(pruned_bytes.content).graph.node


def test_prune_jobs_take_the_policy_and_healing(make_service, sqlite_url, tmp_path):
    """policy and heal reach the library (the choices are the library's own); healing is
    calibrated on the job's probe inputs and the outcome says so."""
    from typing import get_args

    import onnx

    from redaudit.prune.heal import HEAL_METHODS
    from redaudit.prune.policies import POLICIES
    from redaudit.service.api.jobs import PruneRequest
    from tests.models import residual_cnn

    assert set(get_args(get_args(PruneRequest.model_fields["policy"].annotation)[0])) == set(POLICIES)
    assert set(get_args(get_args(PruneRequest.model_fields["heal"].annotation)[0])) == set(HEAL_METHODS)
    service = make_service(sqlite_url)
    path = tmp_path / "dup.onnx"
    onnx.save(residual_cnn(blocks=3, seed=1, duplicate_block=1), str(path))
    blob = _upload(service, path)
    healed = service.wait(service.client.post("/api/v1/prunes", headers=service.headers(),
                                              json={"model": "net", "label": "healed", "blob": blob, "spec": FAST_SPEC,
                                                    "remove": 1, "policy": "cka", "heal": "linear"}).json()["id"])
    assert healed["state"] == "succeeded", healed
    assert healed["outcome"]["policy"]["name"] == "cka" and len(healed["outcome"]["healed"]) == 1
    assert any("calibrated on the probe inputs" in w for w in healed["outcome"]["warnings"])
    refused = service.client.post("/api/v1/prunes", headers=service.headers(),
                                  json={"model": "net", "blob": blob, "remove": 1, "heal": "quadratic"})
    assert refused.status_code == 422


def test_prune_of_a_model_with_external_data_stores_a_bundle(make_service, sqlite_url, tmp_path):
    """A pruned model written as .onnx + .data comes back as one bundle of both, which loads."""
    import io
    import tarfile

    import numpy as np
    import onnx
    import onnxruntime as ort

    from redaudit.service.archives import pack_bundle
    from tests.weights_models import wide_residual_mlp

    service = make_service(sqlite_url)
    folder = tmp_path / "source"
    folder.mkdir()
    # 147 KB matrices: above the size the loader reads inline, so they stay external
    onnx.save(wide_residual_mlp(width=192, blocks=3), str(folder / "dup.onnx"),
              save_as_external_data=True, size_threshold=0, location="dup.data")
    pack_bundle(folder / "dup.onnx", ["dup.data"], tmp_path / "dup.tar")
    response = service.upload(tmp_path / "dup.tar", "application/x-tar")
    assert response.status_code == 201, response.text
    blob = response.json()["sha256"]
    removed = service.wait(service.client.post("/api/v1/prunes", headers=service.headers(),
                                               json={"model": "net", "blob": blob, "spec": FAST_SPEC,
                                                     "remove": 1}).json()["id"])
    assert removed["state"] == "succeeded", removed
    stored = service.client.get(f"/api/v1/blobs/{removed['output_sha256']}", headers=service.headers("read"))
    assert stored.headers["x-redaudit-blob-kind"] == "bundle"
    out = tmp_path / "out"
    with tarfile.open(fileobj=io.BytesIO(stored.content)) as archive:
        assert sorted(archive.getnames()) == ["pruned.onnx", "pruned.onnx.data"]
        archive.extractall(out, filter="data")
    session = ort.InferenceSession(str(out / "pruned.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([d if isinstance(d, int) else 2 for d in i.shape], np.float32) for i in session.get_inputs()}
    assert session.run(None, feed)[0].shape[0] == 2
