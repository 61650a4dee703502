"""Every write needs a write token; reads need a token unless --public-read; tokens are hashed."""
from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from redaudit.cli.main import cli
from redaudit.service.models import ApiToken


def _routes(app, write: bool | None, admin: bool = False):
    """Every operation the served OpenAPI spec documents (the spec is the API's contract):
    writes or reads (``write``, None for both), of the admin tag or of all the others."""
    for path, operations in app.openapi()["paths"].items():
        if path.endswith("/health"):
            continue
        for method, operation in operations.items():
            if ("admin" in operation.get("tags", ())) != admin:
                continue
            if (write is None or (method != "get") == write) and method != "head":
                yield method.upper(), path.replace("{job_id}", "0" * 32).replace("{sha256}", "0" * 64) \
                    .replace("{name}", "net").replace("{scan_id}", "1").replace("{token_id}", "1")


def test_every_write_needs_a_write_token(make_service, sqlite_url):
    service = make_service(sqlite_url)
    writes = list(_routes(service.client.app, write=True))
    assert len(writes) >= 6  # uploads x2, scans, checks, prunes, cancel
    for method, path in writes:
        anonymous = service.client.request(method, path, json={})
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        reader = service.client.request(method, path, json={}, headers=service.headers("read"))
        assert reader.status_code == 403, (method, path, reader.text)
        assert service.tokens["read"] not in reader.text
        bogus = service.client.request(method, path, json={}, headers={"Authorization": "Bearer rdt_nope"})
        assert bogus.status_code == 401 and "rdt_nope" not in bogus.text
    assert service.state.jobs.list() == []


@pytest.mark.parametrize("public", [False, True])
def test_reads_need_a_token_unless_public_read(make_service, sqlite_url, public):
    service = make_service(sqlite_url, public_read=public)
    reads = list(_routes(service.client.app, write=False))
    assert len(reads) >= 8
    for method, path in reads:
        anonymous = service.client.request(method, path)
        assert (anonymous.status_code != 401) if public else (anonymous.status_code == 401), (path, anonymous.text)
        assert service.client.request(method, path, headers=service.headers("read")).status_code != 401


def test_token_cli_stores_only_hashes_and_revokes(tmp_path, make_service):
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    runner = CliRunner()
    created = runner.invoke(cli, ["token", "create", "ci", "--scope", "write", "--db", url])
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("rdt_")
    service = make_service(url)
    with service.state.engine.connect() as connection:
        stored = connection.execute(select(ApiToken.secret_sha256, ApiToken.name)).all()
    assert (hashlib.sha256(secret.encode()).hexdigest(), "ci") in stored
    assert all(secret not in str(row) for row in stored)
    listing = runner.invoke(cli, ["token", "list", "--db", url])
    assert "ci" in listing.output and secret not in listing.output
    headers = {"Authorization": f"Bearer {secret}"}
    assert service.client.get("/api/v1/jobs", headers=headers).status_code == 200
    token_id = [row for row in listing.output.splitlines() if " ci " in row][0].split("│")[1].strip()
    assert runner.invoke(cli, ["token", "revoke", token_id, "--db", url]).exit_code == 0
    assert service.client.get("/api/v1/jobs", headers=headers).status_code == 401
    again = runner.invoke(cli, ["token", "revoke", token_id, "--db", url])
    assert again.exit_code == 2 and "no live token" in again.stderr
