"""Leases and fencing on a real database: a worker presumed dead cannot record, a job whose
workers keep dying fails instead of staying "running", a job is recorded once."""
from __future__ import annotations

import time

from sqlalchemy import text

import redaudit
from redaudit.service import history_io
from redaudit.service.jobs import JobStore, LeaseLost
from tests.service.conftest import FAST_SPEC, open_service

import pytest


def _submit(jobs: JobStore, state, model_file) -> str:
    sha, size = state.blobs.put_file(model_file)
    jobs.add_blob(sha, "model", size, "net.onnx", sha)
    from redaudit.core.spec import ScanSpec

    return jobs.submit(kind="scan", queue="cpu", model_name="net", label=None, blob_sha256=sha,
                       inputs_sha256=None, spec_json=ScanSpec.from_dict(FAST_SPEC).to_json(), options={},
                       record=True, token_id=None)


def test_stale_worker_cannot_record_and_job_is_recorded_once(tmp_path, db_url, model_file):
    state, _ = open_service(tmp_path, db_url)
    jobs = JobStore(state.engine, lease_s=0.2, max_attempts=3)
    job_id = _submit(jobs, state, model_file)
    first = jobs.claim("worker-a")
    assert first is not None and jobs.claim("worker-b") is None  # one claim wins
    time.sleep(0.3)
    assert jobs.reap() == [job_id]
    second = jobs.claim("worker-b", job_id=job_id)
    assert second is not None and second.attempt == 2
    with pytest.raises(LeaseLost):
        jobs.heartbeat(first)
    result = redaudit.scan(model_file, **FAST_SPEC)

    def record(session):
        return history_io.record_in_session(session, result, "net", None)
    assert jobs.finish(first, result="{}", outcome=None, record=record) is False  # fenced off
    jobs.lease_s = 60  # the new owner is alive
    jobs.heartbeat(second)
    assert jobs.finish(second, result="{}", outcome=None, record=record) is True
    assert jobs.finish(second, result="{}", outcome=None, record=record) is False  # no second completion
    with state.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM scans")).scalar() == 1
    assert jobs.get(job_id)["state"] == "succeeded" and jobs.get(job_id)["scan_id"] is not None
    state.engine.dispose()


def test_job_whose_workers_keep_dying_fails_not_stuck(tmp_path, db_url, model_file):
    state, _ = open_service(tmp_path, db_url)
    jobs = JobStore(state.engine, lease_s=0.1, max_attempts=2)
    job_id = _submit(jobs, state, model_file)
    for _ in range(2):
        assert jobs.claim("doomed", job_id=job_id) is not None
        time.sleep(0.2)
        jobs.reap()
    job = jobs.get(job_id)
    assert job["state"] == "failed" and "stopped answering" in job["error"]
    assert jobs.claim("late", job_id=job_id) is None
    state.engine.dispose()


def test_cancel_of_a_job_whose_worker_died(tmp_path, sqlite_url, model_file):
    state, _ = open_service(tmp_path, sqlite_url)
    jobs = JobStore(state.engine, lease_s=0.1, max_attempts=5)
    job_id = _submit(jobs, state, model_file)
    jobs.claim("doomed")
    assert jobs.cancel(job_id) == "running"  # asked to stop; the worker is gone
    time.sleep(0.2)
    assert jobs.reap() == [] and jobs.get(job_id)["state"] == "cancelled"
    state.engine.dispose()
