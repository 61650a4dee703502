"""The reaper's wake-ups for a job that stays queued are bounded (issue 24 item 12): before, every
sweep re-sent one for each job queued longer than the lease, and each became a "skipped" task
once the job had run (11-12 per recovery). Sweeps are called directly: no clock, no sleep."""
from __future__ import annotations

from redaudit.service.workers import MAX_REDISPATCHES, Reaper
from tests.service.conftest import FAST_SPEC


def test_a_waiting_job_gets_a_bounded_number_of_wake_ups(make_service, sqlite_url, model_file):
    service = make_service(sqlite_url, start_workers=False)
    blob = service.upload(model_file).json()["sha256"]
    job_id = service.client.post("/api/v1/scans", headers=service.headers(),
                                 json={"model": "net", "blob": blob, "spec": FAST_SPEC}).json()["id"]
    sent: list[str] = []
    reaper = Reaper(service.state.jobs, every=3600, dispatch=lambda job, queue: sent.append(job),
                    redispatch_after_s=0.0)  # every queued job counts as stale at once
    for _ in range(10):
        reaper.sweep()
    assert sent == [job_id] * MAX_REDISPATCHES
    claim = service.state.jobs.claim("test", job_id=job_id)  # it runs: the reaper forgets it
    assert claim is not None
    reaper.sweep()
    assert job_id not in reaper.redispatched and sent == [job_id] * MAX_REDISPATCHES
