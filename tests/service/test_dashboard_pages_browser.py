"""Dashboard pages as a newcomer sees them in Chromium at 1280×800 (issue 24 items 6-8): ε stays
ε, MSRS and its interval stay on one line, the eight cards fill two rows of four, the chart's
labels are inside the picture and its ticks share one precision, every warning of a scan is on
its page, and no change is written as -0.000."""
from __future__ import annotations

import re

import onnx
import pytest

from redaudit.report.numbers import percent, signed
from tests.models import mlp, residual_cnn
from tests.service.dashboard_server import MODEL, SPEC, _push, start

LONG_LABEL = "v3-api-healed-after-distillation"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pages")
    service = start(folder)
    plain, third = folder / "plain.onnx", folder / "v3.onnx"
    onnx.save(mlp(seed=1), str(plain))
    onnx.save(residual_cnn(blocks=4, seed=3), str(third))
    with service.api("write") as client:
        service.jobs["v3"] = _push(client, third, "scans", {"label": LONG_LABEL})
        upload = client.post("/uploads/model", content=plain.read_bytes(), params={"filename": plain.name},
                             headers={"content-type": "application/octet-stream"}).json()
        job = client.post("/scans", json={"model": "plain", "blob": upload["sha256"], "spec": SPEC}).json()
        from tests.service.dashboard_server import _wait

        service.jobs["plain"] = _wait(client, job["id"])
    yield service
    service.stop()


@pytest.fixture(scope="module")
def page(browser, live):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(live.base + "/ui/")
    page.fill("#token", live.tokens["read"])
    page.click("button[type=submit]")
    page.wait_for_url(live.base + "/ui/")
    yield page
    context.close()


def test_scan_cards_keep_epsilon_one_line_and_two_full_rows(page, live):
    """No card sits alone on a row (issue 24 item 7): ten cards, two full rows of five at 1280 px."""
    page.goto(live.base + f"/ui/scans/{live.jobs['v2']['scan_id']}")
    label = page.inner_text("#pairs-above-label")  # innerText is the rendered text: uppercase applied
    assert "ε" in label and "Ε" not in label, label
    for selector in ("#msrs", "#msrs-ci"):
        lines = page.eval_on_selector(selector, """element => {
            const range = document.createRange(); range.selectNodeContents(element);
            return new Set([...range.getClientRects()].map(rect => Math.round(rect.top))).size; }""")
        fits = page.eval_on_selector(selector, "element => element.scrollWidth <= element.clientWidth")
        assert lines == 1 and fits, (selector, lines, fits)
    rows = page.eval_on_selector_all(".cards .card", "cards => cards.map(card => card.offsetTop)")
    assert len(rows) == 10 and sorted({top: rows.count(top) for top in rows}.values()) == [5, 5], rows


def test_every_warning_of_a_scan_is_on_its_page(page, live):
    job = live.jobs["plain"]
    report = live.api().get(f"/jobs/{job['id']}/result").json()
    assert any("no residual blocks found" in warning for warning in report["warnings"]), report["warnings"]
    page.goto(live.base + f"/ui/scans/{job['scan_id']}")
    shown = page.locator("#warnings li").all_inner_texts()
    assert shown == report["warnings"]


def test_model_chart_labels_inside_and_ticks_alike(page, live):
    page.goto(live.base + f"/ui/models/{MODEL}")
    width = float(page.get_attribute("svg.chart", "width"))
    boxes = page.eval_on_selector_all("svg.chart text.x-label", """texts => texts.map(text => {
        const box = text.getBBox(); return [box.x, box.x + box.width, text.textContent]; })""")
    assert len(boxes) == 4 and LONG_LABEL[:10] in boxes[-1][2]  # v1, v2, v2-pruned, v3
    assert all(left >= 0 and right <= width for left, right, _ in boxes), (width, boxes)
    ticks = page.eval_on_selector_all("svg.chart text.y-tick", "texts => texts.map(text => text.textContent)")
    decimals = {len(tick.partition(".")[2]) for tick in ticks}
    assert len(ticks) >= 3 and len(decimals) == 1, ticks


def test_a_change_that_rounds_to_zero_has_no_sign():
    assert signed(-0.0001) == signed(0.0001) == "0.000" and signed(-0.0004, "+.3f") == "0.000"
    assert signed(-0.012) == "-0.012" and signed(0.5) == "+0.500"
    assert percent(-0.04) == "0.0%" and percent(-1.25) == "-1.2%"


def test_diff_page_writes_no_negative_zero(page, live):
    page.goto(live.base + f"/ui/models/{MODEL}/diff?before=v2&after=v2-pruned")
    assert not re.search(r"[-+]0\.0+(?!\d)", page.inner_text("main") if page.locator("main").count() else
                         page.inner_text("body"))
