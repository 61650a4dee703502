"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real
service (uvicorn on 127.0.0.1, SQLite, versions pushed through the API): every page loads and
shows the API's numbers written as the CLI writes them, the jobs page updates itself, the token
stays in an HttpOnly cookie, and no request leaves 127.0.0.1. Screenshots of each page go to
test-artifacts/dashboard/ (git-ignored) or $REDAUDIT_TEST_ARTIFACTS. CI sets
REDAUDIT_REQUIRE_BROWSER=1, so a missing browser fails there instead of skipping."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from redaudit.core.bootstrap import MeanInterval
from redaudit.report.numbers import fmt, interval_bounds, interval_text, msrs_text, share, signed
from tests.service.dashboard_server import MODEL, start

CHROMIUM = Path(os.environ.get("REDAUDIT_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("REDAUDIT_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "test-artifacts")) / "dashboard"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    service = start(tmp_path_factory.mktemp("dashboard"))
    yield service
    service.stop()


class Recorder:
    """Every request the pages make (documents, styles, scripts, fetches, images), and every
    console error (a Content-Security-Policy violation or a script error shows up there)."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.errors: list[str] = []

    def __call__(self, request) -> None:
        self.urls.append(request.url)

    def console(self, message) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def outside(self) -> list[str]:
        return [url for url in self.urls
                if not (url.startswith("data:") or urlsplit(url).hostname == "127.0.0.1")]


@pytest.fixture(scope="module")
def session(browser, live):
    """A browser context logged in once through the form, with every request recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    recorder = Recorder()
    context.on("request", recorder)
    page = context.new_page()
    page.on("console", recorder.console)
    page.on("pageerror", lambda error: recorder.errors.append(str(error)))
    page.goto(live.base + "/ui/")
    assert urlsplit(page.url).path == "/ui/login"  # reads need a token: the form comes first
    page.fill("#token", live.tokens["read"])
    page.click("button[type=submit]")
    page.wait_for_url(live.base + "/ui/")
    yield context, page, recorder
    context.close()


@pytest.fixture(autouse=True)
def _stays_local(request):
    yield
    if "session" in request.fixturenames:
        _, _, recorder = request.getfixturevalue("session")
        assert recorder.urls and not recorder.outside(), recorder.outside()
        assert not recorder.errors, recorder.errors


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def interval_of(data: dict) -> MeanInterval:
    """A MeanInterval from its JSON (``msrs_ci`` of the API and the scan report)."""
    nan = float("nan")
    return MeanInterval(nan if data["low"] is None else data["low"], nan if data["high"] is None else data["high"],
                        data["level"], data["batches"], data["resamples"], data["undefined_reason"])


def _cells(page, selector: str) -> list[str]:
    return [text.strip() for text in page.locator(selector).all_inner_texts()]


def test_token_stays_in_an_httponly_cookie(session, live):
    context, page, recorder = session
    [cookie] = [c for c in context.cookies() if c["name"] == "redaudit_token"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it
    assert not [url for url in recorder.urls if live.tokens["read"] in url]


def test_wrong_token_is_refused_without_echo(browser, live):
    context = browser.new_context()
    page = context.new_page()
    page.goto(live.base + "/ui/jobs")
    page.fill("#token", "rdt_not-a-real-token")
    page.click("button[type=submit]")
    assert "unknown or revoked" in page.inner_text("#error")
    assert "rdt_not-a-real-token" not in page.content()
    assert not context.cookies()
    context.close()


def test_models_page(session, live):
    _, page, _ = session
    [model] = live.api().get("/models").json()
    page.goto(live.base + "/ui/")
    row = page.locator(f'tr[data-model="{MODEL}"]')
    assert row.locator("td.msrs").inner_text().strip() == msrs_text(model["latest_msrs"], spread=False)
    assert row.locator("svg.spark polyline").count() == 1
    _shot(page, "models")


def test_model_page_versions_lineage_checks(session, live):
    _, page, _ = session
    history = live.api().get(f"/models/{MODEL}").json()
    page.goto(live.base + f"/ui/models/{MODEL}")
    shown = _cells(page, "#versions td.msrs")
    assert shown == [msrs_text(v["scans"][-1]["msrs"], v["scans"][-1]["msrs_std"]) for v in history["versions"]]
    assert _cells(page, "#versions td.ci") == [interval_bounds(interval_of(v["scans"][-1]["msrs_ci"]))
                                               for v in history["versions"]]
    assert _cells(page, "#scans td.ci") == [interval_bounds(interval_of(s["msrs_ci"]))
                                            for v in history["versions"] for s in v["scans"]]
    assert [v["label"] for v in history["versions"]] == ["v1", "v2", "v2-pruned"]
    assert history["versions"][2]["parent_sha256"] == history["versions"][1]["sha256"]
    lineage = page.locator("#lineage li")
    assert lineage.nth(2).get_attribute("class") == "depth-1" and "pruned" in lineage.nth(2).inner_text()
    assert _cells(page, "#versions .badge") == ["PASS", "PASS"]  # v1 and v2 were checked; the prune was not
    assert page.locator("svg.chart circle").count() == 3
    _shot(page, "model")


def test_scan_page_layers_pairs_and_prune_candidates(session, live):
    _, page, _ = session
    scan_id = live.jobs["v2"]["scan_id"]
    stored = live.api().get(f"/scans/{scan_id}").json()
    page.goto(live.base + f"/ui/scans/{scan_id}")
    assert page.inner_text("#msrs").strip() == msrs_text(stored["summary"]["msrs"], stored["summary"]["msrs_std"])
    assert _cells(page, "#layers td.name:nth-child(2)") == [layer["name"] for layer in stored["layers"]]
    assert _cells(page, "#layers td.redundancy") == [fmt(layer["redundancy"], ".2f") for layer in stored["layers"]]
    report = live.api().get(f"/jobs/{live.jobs['v2']['id']}/result").json()
    # the reading: the API's, the scan's JSON report's, and the page's are one
    assert stored["reading"] == report["reading"] and stored["msrs_ci"] == report["msrs_ci"]
    assert report["msrs_ci"]["low"] is not None  # several batches: an interval exists
    assert page.inner_text("#msrs-ci").strip() == interval_text(interval_of(report["msrs_ci"]))
    assert page.inner_text("#msrs-reading").strip() == report["reading"]["sentence"]
    reading = report["reading"]
    assert page.inner_text("#pairs-above").strip() == (f"{reading['pairs_above_epsilon']} of {reading['max_pairs']} "
                                                       f"{share(reading['fraction_above_epsilon'])}")
    assert page.inner_text("#log2-msrs").strip() == fmt(reading["log2_msrs"], ".2f")
    assert [[a.strip() for a in pair] for pair in page.locator("#pairs tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.innerText))")] == \
        [[pair["a"], pair["b"], fmt(pair["cka"], ".3f")] for pair in report["top_pairs"]]
    assert page.evaluate("document.querySelector('#heatmap').naturalWidth") > 100
    removed = live.jobs["prune"]["outcome"]["removed"]
    assert removed and page.locator("table.candidates").count() == 1
    assert removed[0] in page.locator("table.candidates").inner_text()
    _shot(page, "scan")


@pytest.mark.parametrize("before,after", [("v1", "v2"), ("v2", "v2-pruned")])
def test_diff_page_matches_the_api(session, live, before, after):
    _, page, _ = session
    diff = live.api().get(f"/models/{MODEL}/diff", params={"before": before, "after": after}).json()
    page.goto(live.base + f"/ui/models/{MODEL}/diff?before={quote(before)}&after={quote(after)}")
    assert page.inner_text("#msrs-before") == fmt(diff["before"]["msrs"])
    assert page.inner_text("#msrs-after") == fmt(diff["after"]["msrs"])
    assert page.inner_text("#msrs-delta") == signed(diff["msrs_delta"], "+.4g")
    rows = page.locator("#diff-layers tbody tr")
    shown = {rows.nth(i).get_attribute("data-layer"): rows.nth(i).locator("td.delta").inner_text().strip()
             for i in range(rows.count())}
    for change in diff["redundancy_changes"]:
        assert shown[change["layer"]] == signed(change["delta"])
    for name in diff["layers_removed"]:
        assert page.locator(f'#diff-layers tr.removed[data-layer="{name}"]').count() == 1
    assert len(shown) == len(diff["redundancy_changes"]) + len(diff["layers_added"]) + len(diff["layers_removed"])
    if after == "v2-pruned":
        assert diff["layers_removed"]  # the prune took a block out: the aligned table shows the gap
    _shot(page, f"diff-{before}-{after}")


def test_jobs_page_updates_live(session, live):
    _, page, recorder = session
    page.goto(live.base + "/ui/jobs")
    assert page.locator("#jobs tbody tr").count() == 3
    with live.api("write") as client:
        blob = live.jobs["v1"]["blob_sha256"]
        job = client.post("/scans", json={"model": MODEL, "blob": blob, "label": "v1", "record": False,
                                          "spec": {"samples": 64, "cka_batch": 32}}).json()
    # no reload: the page's own polling must bring the new job in and see it finish
    page.wait_for_selector(f'tr[data-job="{job["id"]}"] .state.succeeded', timeout=30_000)
    assert any(urlsplit(url).path == "/api/v1/jobs" for url in recorder.urls)
    assert "updated" in page.inner_text("#live")
    _shot(page, "jobs")
