"""GET /scans/{id}/check: `redaudit check`'s gate on a recorded scan, without scanning again.

The verdicts are compared with the library's ``check_result`` on the fresh ScanResult and with
a check job's outcome on the same scan (the job scanned; the endpoint only reads)."""
from __future__ import annotations

import onnx
import pytest

import redaudit
from redaudit.history.check import check_result
from redaudit.history.store import record_scan
from tests.models import residual_cnn
from tests.service.conftest import FAST_SPEC

#: Ten batches: an interval of the increase needs MIN_INTERVAL_BATCHES per scan to be computed.
GATE_SPEC = {"samples": 320, "cka_batch": 32}


@pytest.fixture
def recorded(make_service, db_url, tmp_path, model_file):
    """A service whose history holds net v1 (3 blocks) and net v2 (5 blocks: MSRS about 3x)."""
    service = make_service(db_url, workers=0)
    duplicated = tmp_path / "deeper.onnx"
    onnx.save(residual_cnn(blocks=5, seed=1), str(duplicated))
    first = redaudit.scan(model_file, **GATE_SPEC)
    second = redaudit.scan(duplicated, **GATE_SPEC)
    ids = (record_scan(service.state.engine, first, "net", "v1"), record_scan(service.state.engine, second, "net", "v2"))
    return service, (first, second), ids


def _check(service, scan_id, scope="read", **params):
    return service.client.get(f"/api/v1/scans/{scan_id}/check", params=params, headers=service.headers(scope))


def test_max_msrs_gate_matches_the_library_on_the_fresh_result(recorded):
    service, (_first, second), (_id1, id2) = recorded
    for bound in (0.0, float(second.msrs) * 0.999, float(second.msrs) * 1.001, 1e6):
        expected = check_result(second, max_msrs=bound)
        response = _check(service, id2, max_msrs=bound)
        assert response.status_code == 200, response.text
        verdict = response.json()
        assert (verdict["passed"], verdict["reason"]) == (expected.passed, expected.reason)
        assert verdict["msrs"] == pytest.approx(float(second.msrs), rel=1e-12)
        assert verdict["baseline_scan_id"] is None and verdict["scan_id"] == id2


def test_max_increase_compares_with_the_scan_recorded_before(recorded, model_file):
    service, (first, second), (id1, id2) = recorded
    change = 100.0 * (float(second.msrs) - float(first.msrs)) / float(first.msrs)
    assert change > 1  # the deeper model must show, or this test shows nothing
    for limit, passes in ((change + 1, True), (max(change - 1, 0), False)):
        verdict = _check(service, id2, against="net", max_increase=limit).json()
        assert verdict["baseline_scan_id"] == id1, verdict
        assert verdict["increase_pct"] == pytest.approx(change, rel=1e-6)
        assert verdict["passed"] is passes and ("limit +" in verdict["reason"])
    # A newer scan of the model does not change a recorded scan's verdict: still vs v1.
    record_scan(service.state.engine, redaudit.scan(model_file, **GATE_SPEC), "net", "v3")
    assert _check(service, id2, against="net", max_increase=change + 1).json()["baseline_scan_id"] == id1
    # The first scan has nothing before it to compare with.
    nothing = _check(service, id1, against="net", max_increase=5)
    assert nothing.status_code == 404 and "before scan" in nothing.json()["detail"]


def test_refusals_are_one_line_4xx(recorded):
    service, _results, (_id1, id2) = recorded
    no_limit = _check(service, id2)
    assert no_limit.status_code == 400 and "max_msrs" in no_limit.json()["detail"] and "--" not in no_limit.json()["detail"]
    half = _check(service, id2, against="net")
    assert half.status_code == 400 and "go together" in half.json()["detail"]
    assert _check(service, 999_999, max_msrs=1).status_code == 404
    assert _check(service, id2, against="nobody", max_increase=5).status_code == 404
    assert service.client.get(f"/api/v1/scans/{id2}/check", params={"max_msrs": 1}).status_code == 401


def test_incomparable_baseline_is_409_unless_forced(recorded, model_file):
    service, (_first, second), _ids = recorded
    other = redaudit.scan(model_file, samples=64, cka_batch=64)  # another cka_batch: other numbers
    other_id = record_scan(service.state.engine, other, "other", "v1")
    later = record_scan(service.state.engine, second, "net", "again")  # recorded after "other"
    refused = _check(service, later, against="other", max_increase=5)
    assert refused.status_code == 409 and "cka_batch" in refused.json()["detail"]
    forced = _check(service, later, against="other", max_increase=5, force=True).json()
    assert forced["baseline_scan_id"] == other_id


def test_same_verdict_as_the_check_job_that_recorded_the_scan(make_service, sqlite_url, model_file, tmp_path):
    service = make_service(sqlite_url)
    duplicated = tmp_path / "deeper.onnx"
    onnx.save(residual_cnn(blocks=5, seed=1), str(duplicated))  # MSRS about 3x: the gate fails
    jobs = []
    for label, path in (("v1", model_file), ("v2", duplicated)):
        blob = service.upload(path).json()["sha256"]
        job = service.client.post("/api/v1/checks", headers=service.headers(),
                                  json={"model": "net", "label": label, "blob": blob, "spec": FAST_SPEC,
                                        "max_increase": 5}).json()
        jobs.append(service.wait(job["id"]))
    job = jobs[1]
    assert job["state"] == "succeeded", job
    verdict = _check(service, job["scan_id"], against="net", max_increase=5).json()
    outcome = job["outcome"]
    assert outcome["passed"] is False and outcome["increase_pct"] > 5
    assert (verdict["passed"], verdict["reason"], verdict["baseline_scan_id"]) == \
        (outcome["passed"], outcome["reason"], outcome["baseline_scan_id"])
    assert verdict["increase_pct"] == pytest.approx(outcome["increase_pct"], rel=1e-9)


def test_significant_uses_the_stored_batches_as_the_library_does_on_fresh_results(recorded, tmp_path):
    """The history keeps MSRS per batch, so a recorded scan can be gated beyond batch noise: the
    verdict, reason and interval equal `check --significant` on the fresh results (against a
    history that holds only the earlier scan, as the endpoint sees it)."""
    service, (first, second), (id1, id2) = recorded
    change = 100.0 * (float(second.msrs) - float(first.msrs)) / float(first.msrs)
    limit = max(change - 1, 0)
    only_first = f"sqlite:///{tmp_path / 'before.db'}"
    record_scan(only_first, first, "net", "v1")
    expected = check_result(second, against="net", max_increase=limit, significant=True, db=only_first)
    assert expected.increase_interval is not None and expected.increase_interval.defined
    verdict = _check(service, id2, against="net", max_increase=limit, significant=True).json()
    assert (verdict["passed"], verdict["reason"]) == (expected.passed, expected.reason)
    assert verdict["increase_ci"] == pytest.approx([expected.increase_interval.low, expected.increase_interval.high])
    assert "CI" in verdict["reason"]
    refused = _check(service, id2, max_msrs=1, significant=True)
    assert refused.status_code == 400 and "max_increase" in refused.json()["detail"] and "--" not in refused.json()["detail"]


def test_the_same_file_on_a_smaller_probe_is_not_called_a_regression(recorded, model_file):
    """Issue 24: the same file pushed with fewer samples "failed" against a baseline scanned with
    more, and --significant "confirmed" it with an interval from 2 batches. Now the gate refuses
    to compare across probes unless asked, and with any_probe it says the batches are too few."""
    service, (first, _second), (id1, _id2) = recorded
    small = record_scan(service.state.engine, redaudit.scan(model_file, **FAST_SPEC), "net", "v1-small")
    refused = _check(service, small, against="net", max_increase=5)
    assert refused.status_code == 409, refused.text
    assert "was measured on this probe" in refused.json()["detail"] and "64 samples" in refused.json()["detail"]
    verdict = _check(service, small, against="net", max_increase=5, any_probe=True, significant=True).json()
    assert "on another probe (baseline inputs" in verdict["reason"] and "320 samples" in verdict["reason"]
    assert "the new scan: too few batches to tell (2;" in verdict["reason"] and verdict["increase_ci"] is None
