"""A scan's heatmap is drawn once and served from then on (issue 24 item 8): scan pages took
125-230 ms for the picture while other pages took 3-10 ms. The page's inline picture and
GET /scans/{id}/heatmap.png are the same bytes."""
from __future__ import annotations

import base64
import re

from tests.service.conftest import FAST_SPEC


def test_scan_page_and_api_share_one_drawing(make_service, sqlite_url, model_file):
    service = make_service(sqlite_url)
    blob = service.upload(model_file).json()["sha256"]
    job = service.wait(service.client.post("/api/v1/scans", headers=service.headers(),
                                           json={"model": "net", "blob": blob, "spec": FAST_SPEC}).json()["id"])
    scan_id = job["scan_id"]
    service.client.cookies.set("redaudit_token", service.tokens["read"])
    pages = [service.client.get(f"/ui/scans/{scan_id}") for _ in range(3)]
    png = service.client.get(f"/api/v1/scans/{scan_id}/heatmap.png", headers=service.headers("read")).content
    assert all(page.status_code == 200 for page in pages)
    inline = {re.search(r'id="heatmap"[^>]*src="data:image/png;base64,([^"]+)"', page.text).group(1) for page in pages}
    assert len(inline) == 1 and base64.b64decode(inline.pop()) == png and png.startswith(b"\x89PNG")
    cache = service.state.heatmaps
    assert (cache.misses, cache.hits) == (1, 3)
