"""The HTML pages in a real browser (Debian's Chromium driven by Playwright): heatmap labels of
60+ layers are readable and no two label boxes overlap, the diff's heatmaps sit side by side,
and every full layer name is in a table. Screenshots go to test-artifacts/ (git-ignored) or
$REDAUDIT_TEST_ARTIFACTS. CI sets REDAUDIT_REQUIRE_BROWSER=1, so a missing browser fails there."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from redaudit.history import record_scan
from redaudit.history import diff_references
from redaudit.history.render import write_diff_html
from redaudit.report.html import write_html
from tests.history.conftest import make_result

CHROMIUM = Path(os.environ.get("REDAUDIT_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("REDAUDIT_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
MIN_LABEL_PX = 8.0  # rendered label height below which a label is not readable

_BOXES = """svg => {
  const box = e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  return {svg: box(svg), image: box(svg.querySelector('image')),
          labels: [...svg.querySelectorAll('text.label')].map(e => ({...box(e),
            text: [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join(''),
                                                                     kind: e.classList[1]}))};
}"""


def _overlap(a: dict, b: dict, tolerance: float = 0.25) -> bool:
    return (min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"]) > tolerance
            and min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"]) > tolerance)


def _check_heatmaps(page, layer_counts: list[int]) -> list[dict]:
    figures = [handle.evaluate(_BOXES) for handle in page.query_selector_all("svg.heatmap")]
    assert len(figures) == len(layer_counts)
    for figure, count in zip(figures, layer_counts):
        labels = figure["labels"]
        rows = [label for label in labels if label["kind"] == "row"]
        assert rows and int(rows[-1]["text"]) >= count - (count // len(rows)) - 1  # labels reach the end
        for i, first in enumerate(labels):
            height = first["h"] if first["kind"] == "row" else first["w"]  # column labels are rotated
            assert height >= MIN_LABEL_PX, first
            assert not _overlap(first, figure["image"]), ("label over the matrix", first)
            for second in labels[i + 1:]:
                assert not _overlap(first, second), (first, second)
    return figures


def _open(browser, path: Path, width: int, shot: str):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(path.as_uri())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    return page


def _names(count: int, tag: str) -> list[str]:
    return [f"/model/encoder/layer.{i}/{tag}/feed_forward/output/LayerNorm_output_0" for i in range(count)]


@pytest.mark.parametrize("width", [1280, 800])
def test_diff_page_heatmaps_side_by_side_and_labels_apart(browser, tmp_path, width):
    db = f"sqlite:///{tmp_path / 'history.db'}"
    before = make_result(72, [(3, 4)], file_tag="v1", names=_names(72, "ffn"))
    after = make_result(64, [(3, 4), (10, 11)], file_tag="v2", names=_names(60, "ffn") + _names(4, "new"), seed=1)
    record_scan(db, before, "net", label="v1")
    record_scan(db, after, "net", label="v2")
    page_path = write_diff_html(diff_references(db, "net", "v1", "v2"), tmp_path / "diff.html")
    page = _open(browser, page_path, width, f"diff-{width}px.png")
    figures = _check_heatmaps(page, [72, 64])
    left, right = figures[0]["svg"], figures[1]["svg"]
    if width >= 1200:  # side by side, same row
        assert abs(left["y"] - right["y"]) < 1 and right["x"] >= left["x"] + left["w"]
    cells = page.eval_on_selector_all("table.layers td.name", "tds => tds.map(td => td.textContent)")
    assert set(cells) == set(_names(72, "ffn")) | set(_names(4, "new"))
    assert page.query_selector("link, script") is None  # self-contained
    assert page.evaluate("getComputedStyle(document.querySelector('table')).borderCollapse") == "collapse"


def test_scan_and_diff_pages_share_the_stylesheet(browser, tmp_path):
    scan_path = write_html(make_result(130, [(5, 6)], names=_names(130, "ffn")), tmp_path / "scan.html")
    page = _open(browser, scan_path, 1280, "scan-130-layers.png")
    _check_heatmaps(page, [130])
    scan_css = page.eval_on_selector("style", "s => s.textContent")
    db = f"sqlite:///{tmp_path / 'history.db'}"
    record_scan(db, make_result(6, file_tag="a"), "m", label="a")
    record_scan(db, make_result(6, file_tag="b", seed=2), "m", label="b")
    diff_page = _open(browser, write_diff_html(diff_references(db, "m", "a", "b"), tmp_path / "d.html"), 1280,
                      "diff-6-layers.png")
    assert diff_page.eval_on_selector("style", "s => s.textContent") == scan_css
    assert (diff_page.evaluate("getComputedStyle(document.body).fontFamily")
            == page.evaluate("getComputedStyle(document.body).fontFamily"))
    _check_heatmaps(diff_page, [6, 6])


def test_scan_page_shows_the_reading_and_interval_of_its_json(browser, tmp_path):
    """What a reader sees beside MSRS (interval, pairs above ε, sentence) is the JSON report's."""
    import json

    from redaudit.core.bootstrap import MeanInterval
    from redaudit.report.json_report import write_json
    from redaudit.report.numbers import interval_text, share

    result = make_result(8, [(1, 2), (2, 3), (5, 6)])
    factors = (0.9, 1.1, 1.0, 0.95, float("nan"), 1.05, 0.97, 1.02, 0.99, 1.01, 0.93)
    result = replace(result, msrs_batches=np.array([result.msrs * f for f in factors]))
    data = json.loads(write_json(result, tmp_path / "scan.json").read_text())
    page = _open(browser, write_html(result, tmp_path / "scan.html"), 1280, "scan-reading.png")
    ci = data["msrs_ci"]
    assert ci["low"] is not None and ci["batches"] == 10
    shown = MeanInterval(ci["low"], ci["high"], ci["level"], ci["batches"], ci["resamples"])
    assert page.inner_text("#msrs-ci").strip() == interval_text(shown)
    reading = data["reading"]
    assert page.inner_text("#msrs-reading").strip() == reading["sentence"]
    assert reading["sentence"].startswith("3 of 28 layer pairs")
    assert page.inner_text("#pairs-above").strip() == (f"{reading['pairs_above_epsilon']} of {reading['max_pairs']} "
                                                       f"{share(reading['fraction_above_epsilon'])}")
    # the interval fits its card at 1280 px: no text runs past the card's box
    assert page.eval_on_selector("#msrs-ci", "e => e.scrollWidth <= e.clientWidth")
