"""The scan page's Model Explorer download: the JSON of a recorded scan's node data, keyed by the
ONNX adapter's node ids of the uploaded file, behind the dashboard's login."""
from __future__ import annotations

import onnx
import pytest

from tests.models import residual_cnn
from tests.service.conftest import FAST_SPEC

pytest.importorskip("model_explorer_onnx")


def test_scan_page_offers_the_node_data(make_service, tmp_path):
    from model_explorer_onnx.main import ONNXAdapter

    service = make_service(f"sqlite:///{tmp_path / 'h.db'}", public_read=True)
    path = tmp_path / "cnn.onnx"
    onnx.save(residual_cnn(blocks=3, zero_branch=1), str(path))
    blob = service.upload(path).json()["sha256"]
    job = service.client.post("/api/v1/scans", headers=service.headers(),
                              json={"model": "cnn", "label": "v1", "blob": blob, "spec": FAST_SPEC})
    assert job.status_code == 202, job.text
    done = service.wait(job.json()["id"])
    assert done["state"] == "succeeded", done
    scan_id = done["scan_id"]

    page = service.client.get(f"/ui/scans/{scan_id}")
    assert f'href="/ui/scans/{scan_id}/model-explorer/redundancy.json"' in page.text
    response = service.client.get(f"/ui/scans/{scan_id}/model-explorer/redundancy.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f'attachment; filename="cnn-scan{scan_id}.redundancy.json"'
    graph = ONNXAdapter().convert(str(path), {})["graphs"][0]
    data = response.json()
    assert set(data) == {graph.id}
    assert set(data[graph.id]["results"]) == {"stem/relu", "block0/relu2", "block1/relu2", "block2/relu2"}
    assert set(data[graph.id]["results"]) <= {node.id for node in graph.nodes}
    prune = service.client.get(f"/ui/scans/{scan_id}/model-explorer/prune-cka.json").json()[graph.id]["results"]
    assert prune["block1/relu2"]["value"] > 0.99  # the zeroed branch: output = input

    unknown = service.client.get(f"/ui/scans/{scan_id}/model-explorer/other.json")
    assert unknown.status_code == 400 and "unknown metric" in unknown.text
    missing = service.client.get("/ui/scans/999/model-explorer/redundancy.json")
    assert missing.status_code == 404


def test_download_needs_the_login(make_service, tmp_path):
    private = make_service(f"sqlite:///{tmp_path / 'p.db'}")
    response = private.client.get("/ui/scans/1/model-explorer/redundancy.json", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login")
