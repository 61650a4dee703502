"""The node data in the real viewer: Model Explorer served offline from its package (no network:
one Google web font fails to load and falls back) with the ONNX adapter, our overlay files
loaded through ``--node_data_paths``, in Debian's Chromium. The viewer's "Node data" table lists
the graph's nodes in the adapter's order with each file's value: the valued rows must be
exactly our nodes with our numbers, and the gradient must colour the most redundant one red.
The server's own readiness line is the synchronisation point (no sleeps)."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import redaudit
from redaudit.core.spec import ScanSpec
from redaudit.integrations.explorer_export import export_scan
from redaudit.report.json_report import write_json
from tests import models
from tests.conftest import CHROMIUM

pytest.importorskip("model_explorer")
pytest.importorskip("model_explorer_onnx")
portpicker = pytest.importorskip("portpicker")
READY = "Starting Model Explorer server at:"


@pytest.fixture
def gl_browser():
    """Chromium with software WebGL (the viewer draws the graph with three.js); skipped like
    the other browser tests, failed in CI (REDAUDIT_REQUIRE_BROWSER=1) when missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed"
    else:
        missing = None if CHROMIUM.exists() else f"no Chromium at {CHROMIUM}"
    if missing:
        if os.environ.get("REDAUDIT_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader"])
        yield browser
        browser.close()


def _serve(model: Path, node_data: list[Path]):
    """Start the viewer; return (process, url) once it printed its address."""
    port = portpicker.pick_unused_port()
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "model_explorer", str(model), "--extensions=model_explorer_onnx",
         f"--node_data_paths={','.join(map(str, node_data))}", "--no_open_in_browser",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    while True:
        line = lines.get(timeout=300)  # a bound on a hung server, not a synchronisation
        if line is None:
            raise AssertionError("model explorer exited: " + "".join(seen))
        seen.append(line)
        if len(seen) >= 2 and seen[-2].startswith(READY):
            return process, line.strip()


def test_viewer_shows_the_overlay_values(gl_browser, tmp_path, save_model):
    from model_explorer_onnx.main import ONNXAdapter

    path = save_model(models.residual_cnn(blocks=3, zero_branch=1))
    result = redaudit.scan(str(path), ScanSpec(samples=256, cka_batch=64))
    write_json(result, tmp_path / "r.json")
    exported = export_scan(tmp_path / "r.json", tmp_path / "overlay.json")
    graph = ONNXAdapter().convert(str(path), {})["graphs"][0]
    ours = [json.loads(file.read_text())[graph.id]["results"] for file in exported.files]
    process, url = _serve(path, list(exported.files))
    try:
        page = gl_browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.locator("table.results td.value-col").first.wait_for(state="attached", timeout=120_000)
        rows = page.evaluate("""() => [...document.querySelectorAll('table.results tbody tr')].map(tr => {
            const cells = [...tr.querySelectorAll('td')];
            return {index: Number(cells[0].textContent), label: cells[1].textContent.trim(),
                    values: cells.slice(2).map(td => [td.textContent.trim(), td.style.backgroundColor])}; })""")
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert [row["index"] for row in rows] == list(range(len(graph.nodes)))
    for row, node in zip(rows, graph.nodes):
        assert row["label"] == node.label
        for column, results in enumerate(ours):
            shown, _ = row["values"][column]
            if node.id in results:
                assert float(shown) == pytest.approx(results[node.id]["value"], rel=1e-12), node.id
            else:
                assert shown == "-", node.id
    redundancy = ours[0]
    top = max(redundancy, key=lambda node: redundancy[node]["value"])
    low = min(redundancy, key=lambda node: redundancy[node]["value"])
    position = {node.id: i for i, node in enumerate(graph.nodes)}
    assert rows[position[top]]["values"][0][1] == "rgb(215, 25, 28)"  # the gradient's top stop
    assert rows[position[low]]["values"][0][1] == "rgb(244, 248, 251)"  # its bottom stop
    assert top in ("block0/relu2", "block1/relu2")  # the zeroed branch makes these two alike
