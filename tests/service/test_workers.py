"""Embedded workers are child processes of ``serve`` (the API's GIL is left to requests), and a
job whose spec leaves ``threads`` open gets the worker's share of the cores."""
from __future__ import annotations

import json
import os

import pytest

from redaudit.core.cores import usable_cores
from tests.service.conftest import FAST_SPEC


@pytest.mark.parametrize("workers, spec_threads", [(1, None), (2, None), (2, 1)])
def test_jobs_run_in_child_processes_with_a_share_of_the_cores(make_service, sqlite_url, model_file,
                                                               workers, spec_threads):
    service = make_service(sqlite_url, workers=workers)
    blob = service.upload(model_file).json()["sha256"]
    spec = {**FAST_SPEC, **({"threads": spec_threads} if spec_threads else {})}
    job = service.client.post("/api/v1/scans", headers=service.headers(),
                              json={"model": "net", "blob": blob, "spec": spec}).json()
    job = service.wait(job["id"])
    assert job["state"] == "succeeded", job
    worker_pid = int(job["worker"].split(":")[1].split("/")[0])
    assert worker_pid != os.getpid() and "/embedded-" in job["worker"]
    report = json.loads(service.client.get(f"/api/v1/jobs/{job['id']}/result", headers=service.headers()).text)
    expected = spec_threads or max(1, (usable_cores() - 1) // workers)  # usable cores but one, shared
    assert report["config"]["threads"] == expected
    assert job["spec"].get("threads") == spec_threads  # the stored spec is the request's
