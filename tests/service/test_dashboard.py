"""The dashboard without a browser: who may see it, where the token may travel, that hostile
names are escaped, and that its numbers are the CLI's own text for the same history."""
from __future__ import annotations

import base64
import html
import re

import onnx
import pytest
from click.testing import CliRunner

from redaudit.cli.main import cli
from redaudit.service.auth import revoke_token, verify_token
from tests.models import residual_cnn
from tests.service.conftest import FAST_SPEC


#: Ten CKA batches: the fewest with an MSRS interval (MIN_INTERVAL_BATCHES).
TEN_BATCH_SPEC = {"samples": 320, "cka_batch": 32}


def _push(service, tmp_path, name: str, label: str, seed: int, spec: dict | None = None) -> dict:
    path = tmp_path / f"m{seed}.onnx"
    onnx.save(residual_cnn(blocks=3, seed=seed), str(path))
    blob = service.upload(path).json()["sha256"]
    job = service.client.post("/api/v1/scans", headers=service.headers(),
                              json={"model": name, "label": label, "blob": blob, "spec": spec or FAST_SPEC})
    assert job.status_code == 202, job.text
    done = service.wait(job.json()["id"])
    assert done["state"] == "succeeded", done
    return done


def _login(service, scope: str = "read"):
    response = service.client.post("/ui/login", data={"token": service.tokens[scope], "next": "/ui/jobs"},
                                   follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/jobs"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    return response


@pytest.fixture
def sqlite_service(make_service, sqlite_url):
    return make_service(sqlite_url)


def test_pages_need_a_token_unless_reads_are_public(make_service, sqlite_url, tmp_path):
    private = make_service(sqlite_url)
    for path in ("/ui/", "/ui/jobs", "/ui/models/x", "/ui/scans/1", "/ui/models/x/diff?before=a&after=b"):
        response = private.client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/ui/login?next=%2Fui%2F")
    public = make_service(f"sqlite:///{tmp_path / 'public.db'}", public_read=True)
    page = public.client.get("/ui/")
    assert page.status_code == 200 and "Models" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_cookie_authorises_reads_never_writes(sqlite_service):
    _login(sqlite_service, "write")  # even a write token, once in a cookie, only reads
    client = sqlite_service.client
    assert client.get("/api/v1/jobs").status_code == 200
    refused = client.post("/api/v1/scans", json={"model": "m", "blob": "0" * 64})
    assert refused.status_code == 401 and sqlite_service.tokens["write"] not in refused.text
    assert client.get("/ui/jobs").status_code == 200
    token = verify_token(sqlite_service.state.engine, sqlite_service.tokens["write"])
    revoke_token(sqlite_service.state.engine, token.id)  # a revoked token's cookie opens nothing
    assert client.get("/ui/jobs", follow_redirects=False).status_code == 303
    assert client.get("/api/v1/jobs").status_code == 401


def test_login_refuses_bad_tokens_and_foreign_redirects(sqlite_service):
    client = sqlite_service.client
    bad = client.post("/ui/login", data={"token": "rdt_wrong", "next": "/ui/"}, follow_redirects=False)
    assert bad.status_code == 401 and "rdt_wrong" not in bad.text and "set-cookie" not in bad.headers
    for target in ("//evil.example/ui/", "https://evil.example/", "/api/v1/jobs", "/ui\\@evil.example"):
        response = client.post("/ui/login", data={"token": sqlite_service.tokens["read"], "next": target},
                               follow_redirects=False)
        assert response.headers["location"] == "/ui/", target
    out = client.post("/ui/logout", follow_redirects=False)
    assert out.status_code == 303 and 'redaudit_token=""' in out.headers["set-cookie"]


def test_hostile_names_are_escaped(sqlite_service, tmp_path):
    name = '<script>alert("x")</script>'
    _push(sqlite_service, tmp_path, name, "<b>v1</b>", seed=1)
    _login(sqlite_service)
    for path in ("/ui/", "/ui/jobs"):
        text = sqlite_service.client.get(path).text
        assert "&lt;script&gt;" in text and "<script>alert" not in text and "<b>v1" not in text


def test_numbers_are_the_cli_text(sqlite_service, tmp_path):
    first = _push(sqlite_service, tmp_path, "net", "v1", seed=1, spec=TEN_BATCH_SPEC)
    second = _push(sqlite_service, tmp_path, "net", "v2", seed=2, spec=TEN_BATCH_SPEC)
    _login(sqlite_service)
    db = str(sqlite_service.state.settings.db)
    runner = CliRunner()
    scans = runner.invoke(cli, ["history", "net", "--scans", "--db", db])
    assert scans.exit_code == 0, scans.output
    page = sqlite_service.client.get("/ui/models/net").text
    shown = re.findall(r'<td class="num">(\d+\.\d{3} ±\d+\.\d{3})</td>', page)
    assert len(shown) == 2
    for text in shown:  # the every-scan table: the same "1.234 ±0.056" as `history --scans`
        assert text in scans.output
    intervals = re.findall(r'<td class="num ci">([^<]+)</td>', page)
    assert len(intervals) == 2 + 2 and all(interval.startswith("[") for interval in intervals)
    for text in intervals:  # and the same "[1.100, 1.300]" interval
        assert text in scans.output
    few = _push(sqlite_service, tmp_path, "few", "v1", seed=3)  # 2 batches: no interval, on both sides
    few_scans = runner.invoke(cli, ["history", "few", "--scans", "--db", db])
    assert re.findall(r'<td class="num ci">([^<]+)</td>', sqlite_service.client.get("/ui/models/few").text) == \
        ["2 batches", "2 batches"] and "2 batches" in few_scans.output
    assert "no CI (2 batches; needs 10)" in sqlite_service.client.get(f"/ui/scans/{few['scan_id']}").text
    diff = runner.invoke(cli, ["diff", "net", "v1", "v2", "--db", db])
    assert diff.exit_code == 0, diff.output
    page = sqlite_service.client.get("/ui/models/net/diff", params={"before": "v1", "after": "v2"}).text
    before, after, delta, change = (re.search(rf'id="{key}">([^<]+)<', page).group(1)
                                    for key in ("msrs-before", "msrs-after", "msrs-delta", "msrs-change"))
    assert f"MSRS {before} → {after} ({delta}, {change}" in diff.output
    scan = sqlite_service.client.get(f"/ui/scans/{second['scan_id']}").text
    inline = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', scan).group(1))
    api_png = sqlite_service.client.get(f"/api/v1/scans/{second['scan_id']}/heatmap.png").content
    assert inline == api_png  # the same picture as the API's endpoint
    assert first["scan_id"] != second["scan_id"]


def test_scan_recorded_by_the_cli_reads_as_its_report(make_service, db_url, tmp_path):
    """A scan the CLI recorded has no JSON report in the service: its page and ``GET /scans/{id}``
    read the stored matrix and per-batch MSRS, and say what the scan's own report says."""
    import json

    from redaudit.cli.main import cli as main_cli
    from redaudit.report.numbers import interval_text

    service = make_service(db_url)
    path = tmp_path / "m.onnx"
    onnx.save(residual_cnn(blocks=3, seed=1, duplicate_block=1), str(path))
    report = tmp_path / "scan.json"
    scanned = CliRunner().invoke(main_cli, ["scan", str(path), "--samples", "320", "--cka-batch", "32", "--quiet",
                                            "--record", "cli-net", "--db", str(service.state.settings.db),
                                            "--json", str(report)])
    assert scanned.exit_code == 0, scanned.output
    data = json.loads(report.read_text())
    history = service.client.get("/api/v1/models/cli-net", headers=service.headers("read")).json()
    scan_id = history["versions"][0]["scans"][0]["scan_id"]
    stored = service.client.get(f"/api/v1/scans/{scan_id}", headers=service.headers("read")).json()
    assert stored["msrs_ci"] == data["msrs_ci"] and stored["reading"]["sentence"] == data["reading"]["sentence"]
    assert data["micro_batch"] > 0 and data["unit"]  # kept by --record (revision 0005), as the report says
    assert (stored["settings"]["micro_batch"], stored["settings"]["unit"]) == (data["micro_batch"], data["unit"])
    _login(service)
    page = service.client.get(f"/ui/scans/{scan_id}").text
    assert f'id="micro-batch">{data["micro_batch"]}<' in page and f'id="unit">{data["unit"]}<' in page
    assert html.escape(data["reading"]["sentence"], quote=False) in page
    from redaudit.core.bootstrap import MeanInterval

    ci = data["msrs_ci"]
    assert ci["batches"] == 10 and ci["low"] is not None
    assert interval_text(MeanInterval(ci["low"], ci["high"], ci["level"], ci["batches"], ci["resamples"])) in page


def test_unknown_things_are_one_line_pages(sqlite_service):
    _login(sqlite_service)
    missing = sqlite_service.client.get("/ui/models/nope")
    assert missing.status_code == 404 and "no model named 'nope'" in html.unescape(missing.text)
    assert sqlite_service.client.get("/ui/scans/999").status_code == 404
