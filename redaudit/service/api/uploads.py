"""Uploads (model, bundle, probe inputs) and blob download for remote workers.

Bodies are the raw file bytes (no multipart): the body is streamed to disk under the size limit
while it is hashed, then checked exactly as the CLI checks a file (protobuf parse, ONNX checker,
external-data policy; ``.npz`` without pickle) before it is accepted — in the check processes of
``service.checks``, off the API's interpreter. A refused upload leaves no file and no row.
"""
from __future__ import annotations

from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from redaudit.service.api.deps import get_state, require_read, require_write
from redaudit.service.checks import check_inputs, check_model
from redaudit.service.state import ServiceState
from redaudit.service.storage import Staged, UploadError

router = APIRouter(tags=["uploads"])


async def _store(function, *args):
    """Run ``function`` (file the blob, write its row) in a worker thread: it blocks — the row
    may wait for SQLite's write lock — and on the event loop it would stall every other request
    for as long as it waits (tests/service/test_event_loop.py)."""
    return await anyio.to_thread.run_sync(function, *args)


MODEL_TYPES = {"application/octet-stream": "model", "application/onnx": "model",
               "application/zip": "bundle", "application/x-zip-compressed": "bundle",
               "application/x-tar": "bundle", "application/gzip": "bundle", "application/x-gtar": "bundle"}
INPUT_TYPES = ("application/octet-stream", "application/zip", "application/x-npz")


class BlobOut(BaseModel):
    sha256: str
    kind: str
    size_bytes: int
    filename: str
    model_sha256: str | None = None


def _body(types) -> dict:
    return {"requestBody": {"required": True, "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                                            for t in types}}}


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _receive(request: Request, state: ServiceState, what: str) -> Staged:
    declared = request.headers.get("content-length")
    limit = state.settings.max_upload_bytes
    if declared and declared.isdigit() and int(declared) > limit:
        raise UploadError(f"{what} is {int(declared):,} bytes, above the server's limit of {limit:,}; "
                          "raise serve --max-upload-size if you trust it", 413)
    return await state.blobs.receive(request.stream(), limit, what)


@router.post("/uploads/model", status_code=201, response_model=BlobOut, openapi_extra=_body(MODEL_TYPES),
             summary="Upload a model (.onnx) or a bundle (.zip/.tar of a model and its external data)")
async def upload_model(request: Request, filename: str = Query("model.onnx", max_length=255),
                       kind: str = Query("model", pattern="^(model|pruned)$"),
                       state: ServiceState = Depends(get_state), _token=Depends(require_write)) -> BlobOut:
    content_type = _content_type(request)
    if content_type not in MODEL_TYPES:
        raise UploadError(f"content type {content_type or 'missing'!r} is not a model; send .onnx bytes as "
                          "application/octet-stream or a bundle as application/zip or application/x-tar", 415)
    blob_kind = MODEL_TYPES[content_type] if kind == "model" else kind
    staged = await _receive(request, state, "the model")

    def store(model_sha: str):
        state.blobs.commit(staged)
        return state.jobs.add_blob(staged.sha256, blob_kind, staged.size_bytes, Path(filename).name, model_sha)

    try:
        model_sha = await state.checks.run(check_model, staged.path, blob_kind, filename, state.limits)
        blob = await _store(store, model_sha)
    except BaseException:  # refused, or the client went away: nothing stays behind
        state.blobs.discard(staged)
        raise
    return BlobOut(sha256=blob.sha256, kind=blob.kind, size_bytes=blob.size_bytes, filename=blob.filename,
                   model_sha256=blob.model_sha256)


@router.post("/uploads/inputs", status_code=201, response_model=BlobOut, openapi_extra=_body(INPUT_TYPES),
             summary="Upload probe inputs (.npz, one array per model input; never pickled)")
async def upload_inputs(request: Request, filename: str = Query("inputs.npz", max_length=255),
                        state: ServiceState = Depends(get_state), _token=Depends(require_write)) -> BlobOut:
    content_type = _content_type(request)
    if content_type not in INPUT_TYPES:
        raise UploadError(f"content type {content_type or 'missing'!r} is not an .npz; send it as "
                          "application/octet-stream", 415)
    staged = await _receive(request, state, "the inputs archive")

    def store():
        state.blobs.commit(staged)
        return state.jobs.add_blob(staged.sha256, "inputs", staged.size_bytes, Path(filename).name, None)

    try:
        await state.checks.run(check_inputs, staged.path, state.limits)
        blob = await _store(store)
    except BaseException:  # refused, or the client went away: nothing stays behind
        state.blobs.discard(staged)
        raise
    return BlobOut(sha256=blob.sha256, kind=blob.kind, size_bytes=blob.size_bytes, filename=blob.filename)


@router.head("/blobs/{sha256}", include_in_schema=False)
@router.get("/blobs/{sha256}", response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}},
            summary="Download a stored blob by sha256 (how remote workers get models)")
def get_blob(sha256: str, state: ServiceState = Depends(get_state), _token=Depends(require_read)):
    blob = state.jobs.blob(sha256) if len(sha256) == 64 else None
    if blob is None or not state.blobs.exists(sha256):
        raise UploadError(f"no blob {sha256[:64]!r} on this server", 404)
    return FileResponse(state.blobs.path(sha256), media_type="application/octet-stream",
                        headers={"x-redaudit-blob-kind": blob.kind})
