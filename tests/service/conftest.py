"""Fixtures for the service tests: a real app on a real database (SQLite file or PostgreSQL
schema), real tokens, small generated models; no mocks."""
from __future__ import annotations

import time
from pathlib import Path

import onnx
import pytest
from fastapi.testclient import TestClient

from redaudit.service.app import create_app
from redaudit.service.auth import create_token
from redaudit.service.settings import ServiceSettings
from redaudit.service.state import ServiceState
from tests.history.conftest import pg_schema_url  # noqa: F401  (fixture)
from tests.models import residual_cnn

#: Small enough to scan in well under a second, big enough for 2 batches of the unbiased CKA.
FAST_SPEC = {"samples": 64, "cka_batch": 32}
#: The deadline of every wait for an event (a server up, a worker's first progress, a job done,
#: children gone): only a hang guard, never a verdict, so a loaded machine cannot fail a test.
HANG_GUARD_S = 600


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "net.onnx"
    onnx.save(residual_cnn(blocks=3, seed=1), str(path))
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'service.db'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'service.db'}"


class Service:
    """A running app (TestClient) with tokens of each scope."""

    def __init__(self, client: TestClient, state: ServiceState, tokens: dict[str, str]) -> None:
        self.client, self.state, self.tokens = client, state, tokens

    def headers(self, scope: str = "write") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}

    def upload(self, path: Path, content_type: str = "application/octet-stream", scope: str = "write"):
        return self.client.post("/api/v1/uploads/model", content=path.read_bytes(),
                                params={"filename": path.name},
                                headers={**self.headers(scope), "content-type": content_type})

    def wait(self, job_id: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/api/v1/jobs/{job_id}", headers=self.headers("read")).json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


def open_service(tmp_path: Path, db: str, **options) -> tuple[ServiceState, dict[str, str]]:
    settings = ServiceSettings(db=db, data_dir=tmp_path / "data", poll_s=0.05, **options)
    state = ServiceState.open(settings)
    tokens = {scope: create_token(state.engine, f"test-{scope}", scope)[1] for scope in ("read", "write", "admin")}
    return state, tokens


@pytest.fixture
def make_service(tmp_path):
    opened = []

    def make(db: str, start_workers: bool = True, **options) -> Service:
        state, tokens = open_service(tmp_path, db, **options)
        client = TestClient(create_app(state, start_workers=start_workers))
        client.__enter__()
        opened.append((client, state))
        return Service(client, state, tokens)

    yield make
    for client, state in opened:
        client.__exit__(None, None, None)
        state.engine.dispose()


@pytest.fixture
def service(make_service, db_url) -> Service:
    return make_service(db_url)
