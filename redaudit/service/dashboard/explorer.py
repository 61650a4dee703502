"""The scan page's Model Explorer downloads: ``/ui/scans/{id}/model-explorer/{metric}.json``.

The node ids come from the ONNX adapter's conversion of the scanned file, so the file must be on
this server: an uploaded ``.onnx`` is kept under its sha256 (the version's identity). A model
uploaded as an archive (external data) is not kept as one file; the page then says how to export
from the command line instead. Needs the ``explorer`` extra on the server.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from redaudit.errors import RedauditError
from redaudit.service import history_io
from redaudit.service.api.deps import get_state
from redaudit.service.auth import TokenInfo
from redaudit.service.state import ServiceState


class ModelFileMissing(RedauditError):
    """The scanned model's file is not kept on this server."""


def _model_file(state: ServiceState, sha256: str, recorded_path: str) -> Path:
    for candidate in (state.blobs.path(sha256) if state.blobs.exists(sha256) else None, Path(recorded_path)):
        if candidate is not None and candidate.is_file():
            return candidate
    raise ModelFileMissing("the model file of this scan is not on this server (uploaded as an archive, or "
                           "removed); run `redaudit export model-explorer SCAN_ID --model PATH` where the file is")


def node_data(state: ServiceState, scan_id: int, metric: str) -> tuple[str, bytes]:
    """(file name, JSON bytes) of one metric's node data for a recorded scan."""
    from redaudit.integrations import require
    from redaudit.integrations.explorer_export import scan_files
    from redaudit.integrations.model_explorer import (
        METRICS,
        OverlayError,
        ScannedLayers,
    )

    if metric not in dict(METRICS):
        raise OverlayError(f"unknown metric {metric[:40]!r}; one of {', '.join(key for key, _ in METRICS)}")
    require("model_explorer_onnx", "explorer", "the Model Explorer download")
    stored = history_io.stored_scan(state.engine, scan_id)
    files = scan_files(ScannedLayers.from_stored(stored), _model_file(state, stored.version.sha256, stored.version.path))
    if metric not in files:
        raise OverlayError(f"scan {scan_id} has no {metric} values (no removable block with both sides tapped)")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stored.model_name)[:60] or "model"
    return f"{stem}-scan{scan_id}.{metric}.json", (json.dumps(files[metric], indent=1) + "\n").encode("utf-8")


def install(viewer, prefix: str, error_page: Callable[[RedauditError, str], Response]) -> APIRouter:
    """The route, with the dashboard's own login rule (``viewer``), path prefix and error page
    (``error_page(error, back)``): the dashboard's routes pass them in, this module imports
    nothing of theirs."""
    router = APIRouter(include_in_schema=False)

    @router.get(prefix + "/scans/{scan_id}/model-explorer/{metric}.json")
    def download(scan_id: int, metric: str, state: ServiceState = Depends(get_state),
                 who: TokenInfo | None = Depends(viewer)) -> Response:
        try:
            name, body = node_data(state, scan_id, metric)
        except RedauditError as error:
            return error_page(error, f"{prefix}/scans/{scan_id}")
        return Response(body, media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}"',
                                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
    return router
