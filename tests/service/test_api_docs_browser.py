"""The API docs render offline (issue 24 item 9): /api/v1/docs (Swagger UI) and /api/v1/redoc
(ReDoc) in Chromium with every request outside 127.0.0.1 refused — FastAPI's own pages were blank
there (`SwaggerUIBundle is not defined`: the bundle came from a CDN). The dashboard links both."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.service.dashboard_server import start


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    service = start(tmp_path_factory.mktemp("docs"), public_read=True)
    yield service
    service.stop()


@pytest.fixture
def offline_page(browser):
    """A page on a machine without the internet: any request that leaves 127.0.0.1 is aborted."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    outside: list[str] = []

    def route(route):
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith("data:") or host == "127.0.0.1":
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()
    context.route("**/*", route)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page, outside, errors
    context.close()


def test_swagger_ui_renders_every_operation_offline(offline_page, live):
    page, outside, errors = offline_page
    page.goto(live.base + "/api/v1/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = set(page.locator(".opblock-summary-path").all_inner_texts())
    assert {"/api/v1/uploads/model", "/api/v1/jobs/{job_id}", "/api/v1/scans/{scan_id}/check"} <= \
        {path.replace("\u200b", "") for path in paths}
    assert not outside and not errors, (outside, errors)


def test_redoc_renders_and_sends_nothing_outside(browser, live):
    """ReDoc draws a "by Redocly" logo from their CDN, unconditionally; the page's policy blocks
    it in the browser (the request never leaves: ERR_BLOCKED_BY_CSP), so the page needs and tells
    nothing outside this server."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    failed, finished, errors = {}, [], []
    page.on("requestfailed", lambda request: failed.__setitem__(request.url, request.failure))
    page.on("requestfinished", lambda request: finished.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live.base + "/api/v1/redoc")
    page.locator("h2", has_text="Queue a check").first.wait_for(timeout=30_000)
    context.close()
    assert all(urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")) for url in finished), finished
    assert all(failure in ("csp", "net::ERR_BLOCKED_BY_CSP") for failure in failed.values()), failed
    assert not errors, errors


def test_the_dashboard_links_the_docs(offline_page, live):
    page, _outside, _errors = offline_page
    page.goto(live.base + "/ui/")
    hrefs = page.eval_on_selector_all("header a", "links => links.map(link => link.getAttribute('href'))")
    assert "/api/v1/docs" in hrefs and "/api/v1/redoc" in hrefs
