"""A prune job's progress and outcome (issue 24 items 3-4): progress counts while it prunes and
reads complete once it succeeded; the outcome's MSRS before/after and recorded scan id are those
of the scans the history recorded."""
from __future__ import annotations

import json
import threading

import onnx
import onnxruntime as ort
import pytest

from redaudit.service import runner
from redaudit.service.blob_access import LocalBlobs
from redaudit.service.jobs import JobStore
from redaudit.service.models import CANCELLED
from tests.models import residual_cnn
from tests.service.conftest import FAST_SPEC


@pytest.fixture
def duplicated(tmp_path):
    path = tmp_path / "dup.onnx"
    onnx.save(residual_cnn(blocks=3, seed=1, duplicate_block=1), str(path))
    return path


def _submit(service, path, **body):
    blob = service.upload(path).json()["sha256"]
    response = service.client.post("/api/v1/prunes", headers=service.headers(),
                                   json={"model": "net", "label": "pruned", "blob": blob, "spec": FAST_SPEC, **body})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_succeeded_prune_reads_complete_with_its_msrs_and_scan(make_service, sqlite_url, duplicated):
    service = make_service(sqlite_url)
    job = service.wait(_submit(service, duplicated, remove=1))
    assert job["state"] == "succeeded", job
    assert job["progress_total"] and job["progress_done"] == job["progress_total"]
    outcome = job["outcome"]
    assert outcome["recorded_scan_id"] == job["scan_id"] is not None
    read = service.headers("read")
    after = service.client.get(f"/api/v1/scans/{job['scan_id']}", headers=read).json()
    versions = service.client.get("/api/v1/models/net", headers=read).json()["versions"]
    parent = next(v for v in versions if v["sha256"] == outcome["source_sha256"])
    assert outcome["msrs"]["after"] == after["summary"]["msrs"]
    assert outcome["msrs"]["before"] == parent["scans"][-1]["msrs"]
    assert None not in outcome["msrs"].values() and "msrs_before" not in outcome


def test_a_prune_reports_counted_steps_while_it_prunes(make_service, sqlite_url, duplicated, tmp_path):
    """The job's progress callback, as the heartbeat publishes it: every stage has a count."""
    service = make_service(sqlite_url, start_workers=False)
    job_id = _submit(service, duplicated, remove=1)
    jobs = service.state.jobs
    claim = jobs.claim("test-worker", job_id=job_id)
    job = jobs.get(job_id)
    seen = []
    spec = runner.ScanSpec.from_json(job["spec"])
    workdir = tmp_path / "work"
    workdir.mkdir()
    assert runner._prune(jobs, LocalBlobs(service.state.blobs, jobs), claim, job, spec,
                         service.state.blobs.path(job["blob_sha256"]), workdir, seen.append, lambda: False)
    counted = [(event.stage, event.done, event.total) for event in seen]
    steps = [event for event in counted if event[0].startswith("prune: ")]
    assert [stage for stage, _, _ in steps] == [f"prune: {name}" for name in runner.PRUNE_STEPS]
    assert [(done, total) for _, done, total in steps] == [(k, 7) for k in range(7)]
    assert counted[:7] == steps  # every stage of the prune itself carries a count
    assert any(total for stage, _, total in counted if stage.startswith("msrs after/"))  # the scans' batches
    assert any(stage.startswith("msrs before/") for stage, _, _ in counted)
    assert any(stage.startswith("msrs after/") for stage, _, _ in counted)
    assert json.dumps(jobs.get(job_id)["outcome"])  # finished by the call above


def test_a_cancel_stops_a_running_prune_job_at_its_next_onnxruntime_run(make_service, sqlite_url, duplicated,
                                                                       monkeypatch):
    """A cancelled prune job used to run to its end (its cancel was read once prune_model had
    returned). The worker (run_claimed, with its real heartbeat thread, on the real job store) is
    held at the prune's first onnxruntime run until the heartbeat has read the cancel request from
    the database and handed it to the job; the next run never starts, and the job ends cancelled
    as a scan job does, with no pruned model stored. Synchronised on events, never on a sleep."""
    service = make_service(sqlite_url, start_workers=False, lease_s=0.9)  # a heartbeat every 0.3 s
    jobs = service.state.jobs
    job_id = _submit(service, duplicated, remove=1)
    claim = jobs.claim("test-worker", job_id=job_id)
    answers: list[bool] = []
    cancel_handed_over = threading.Event()
    heartbeat = JobStore.heartbeat

    def watched_heartbeat(self, *args, **kwargs):
        if answers and answers[-1]:  # the beat thread stored its last answer (cancel) before beating again
            cancel_handed_over.set()
        answers.append(heartbeat(self, *args, **kwargs))
        return answers[-1]
    monkeypatch.setattr(JobStore, "heartbeat", watched_heartbeat)
    runs = 0
    run = ort.InferenceSession.run

    def counted_run(session, *args, **kwargs):
        nonlocal runs
        runs += 1
        if runs == 1:
            assert jobs.cancel(job_id) == "running"  # asked to stop while it runs
            assert cancel_handed_over.wait(timeout=60), "the heartbeat never read the cancel request"
        return run(session, *args, **kwargs)
    monkeypatch.setattr(ort.InferenceSession, "run", counted_run)
    blobs_before = sorted(service.state.settings.blob_dir.rglob("*"))
    ended = runner.run_claimed(jobs, LocalBlobs(service.state.blobs, jobs), claim, service.state.limits)
    job = jobs.get(job_id)
    assert ended == CANCELLED and runs == 1, (ended, runs, job["error"])
    assert job["state"] == "cancelled" and job["error"] == "cancelled while running"
    assert job["output_sha256"] is None and job["scan_id"] is None and job["outcome"] is None
    assert sorted(service.state.settings.blob_dir.rglob("*")) == blobs_before  # no pruned model stored


def test_a_failed_prune_advises_job_fields_that_work(make_service, sqlite_url, duplicated):
    """Issue 24 item 5: the error named `--heal linear` and `--force`; an API client sets fields."""
    service = make_service(sqlite_url)
    failed = service.wait(_submit(service, duplicated, remove=2, min_cosine=1.0))
    assert failed["state"] == "failed", failed
    error = failed["error"]
    assert "--" not in error and "min_cosine 1" in error
    assert 'heal="linear"' in error and "force=true" in error
    forced = service.wait(_submit(service, duplicated, remove=2, min_cosine=1.0, force=True))
    assert forced["state"] == "succeeded" and forced["options"]["force"] is True, forced


def test_api_wording_turns_flags_into_fields():
    from redaudit.service.wording import for_api

    assert for_api("give --max-msrs X and/or --against NAME --max-increase PCT") == \
        "give max_msrs X and/or against NAME max_increase PCT"
    assert for_api("try --heal linear, or pass --force; x--y and -- stay") == \
        'try heal="linear", or pass force=true; x--y and -- stay'
