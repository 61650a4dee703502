"""Admin operations over the API: tokens (create, list, revoke) and cancelling anyone's job.

Only an admin token may use them: no token is 401, read and write tokens are 403 — also with
--public-read. A created token's secret is returned once and stored only as its sha256.
"""
from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from redaudit.service.auth import create_token
from redaudit.service.models import ApiToken
from tests.service.conftest import FAST_SPEC
from tests.service.test_auth import _routes


@pytest.mark.parametrize("public", [False, True])
def test_admin_operations_need_an_admin_token(make_service, sqlite_url, public):
    service = make_service(sqlite_url, public_read=public, workers=0)
    operations = list(_routes(service.client.app, write=None, admin=True))
    assert {path for _, path in operations} >= {"/api/v1/tokens", "/api/v1/tokens/1/revoke"}
    assert {method for method, _ in operations} == {"GET", "POST"}
    for method, path in operations:
        body = {"name": "x", "scope": "read"} if method == "POST" else None
        assert service.client.request(method, path, json=body).status_code == 401, (method, path)
        for scope in ("read", "write"):
            refused = service.client.request(method, path, json=body, headers=service.headers(scope))
            assert refused.status_code == 403 and "'admin'" in refused.json()["detail"], (method, path, scope)
    with service.state.engine.connect() as connection:  # nothing was created or revoked
        rows = connection.execute(select(ApiToken.name, ApiToken.revoked_at)).all()
    assert sorted(rows) == [("test-admin", None), ("test-read", None), ("test-write", None)]


def test_create_list_revoke_over_the_api(make_service, sqlite_url):
    service = make_service(sqlite_url, workers=0)
    admin = service.headers("admin")
    created = service.client.post("/api/v1/tokens", json={"name": "ci-resnet", "scope": "write"}, headers=admin)
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    token = created.json()
    secret = token["secret"]
    assert secret.startswith("rdt_") and token["prefix"] == secret[:10] and token["scope"] == "write"
    with service.state.engine.connect() as connection:
        stored = connection.execute(select(ApiToken.secret_sha256, ApiToken.name, ApiToken.prefix)
                                    .where(ApiToken.id == token["id"])).one()
        every_value = " ".join(str(value) for row in connection.execute(select(ApiToken)).all() for value in row)
    assert stored.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest() and stored.name == "ci-resnet"
    assert secret not in every_value

    new = {"Authorization": f"Bearer {secret}"}
    assert service.client.get("/api/v1/jobs", headers=new).status_code == 200
    assert service.client.get("/api/v1/tokens", headers=new).status_code == 403  # write is not admin

    listing = service.client.get("/api/v1/tokens", headers=admin)
    assert listing.status_code == 200 and secret not in listing.text and "secret" not in listing.text
    assert {item["name"]: item["scope"] for item in listing.json()} == \
        {"test-read": "read", "test-write": "write", "test-admin": "admin", "ci-resnet": "write"}

    revoked = service.client.post(f"/api/v1/tokens/{token['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert service.client.get("/api/v1/jobs", headers=new).status_code == 401  # at once
    again = service.client.post(f"/api/v1/tokens/{token['id']}/revoke", headers=admin)
    assert again.status_code == 409 and "already revoked" in again.json()["detail"]
    assert service.client.post("/api/v1/tokens/99999/revoke", headers=admin).status_code == 404
    me = next(item["id"] for item in listing.json() if item["name"] == "test-admin")
    assert service.client.post(f"/api/v1/tokens/{me}/revoke", headers=admin).status_code == 409
    assert service.client.get("/api/v1/tokens", headers=admin).status_code == 200  # still works

    bad = service.client.post("/api/v1/tokens", json={"name": "x", "scope": "root"}, headers=admin)
    assert bad.status_code == 422
    assert service.client.post("/api/v1/tokens", json={"name": "", "scope": "read"}, headers=admin).status_code == 422


def test_only_the_submitter_or_an_admin_cancels_a_job(make_service, sqlite_url, model_file):
    service = make_service(sqlite_url, start_workers=False)
    other = {"Authorization": f"Bearer {create_token(service.state.engine, 'other', 'write')[1]}"}
    blob = service.upload(model_file).json()["sha256"]

    def submit() -> str:
        job = service.client.post("/api/v1/scans", headers=service.headers(),
                                  json={"model": "net", "blob": blob, "spec": FAST_SPEC})
        assert job.status_code == 202
        return job.json()["id"]
    first, second = submit(), submit()
    owner = service.client.get(f"/api/v1/jobs/{first}", headers=service.headers("read")).json()["token_id"]
    with service.state.engine.connect() as connection:
        writer = connection.execute(select(ApiToken.id).where(ApiToken.name == "test-write")).scalar()
    assert owner == writer

    refused = service.client.post(f"/api/v1/jobs/{first}/cancel", headers=other)
    assert refused.status_code == 403 and "another token" in refused.json()["detail"]
    assert service.state.jobs.get(first)["state"] == "queued"
    mine = service.client.post(f"/api/v1/jobs/{first}/cancel", headers=service.headers())
    assert mine.status_code == 200 and mine.json()["state"] == "cancelled"
    by_admin = service.client.post(f"/api/v1/jobs/{second}/cancel", headers=service.headers("admin"))
    assert by_admin.status_code == 200 and by_admin.json()["state"] == "cancelled"
