"""Uploads (model, bundle, probe inputs) and blob download for remote workers.

Bodies are the raw file bytes (no multipart): the body is streamed to disk under the size limit
while it is hashed, then checked exactly as the CLI checks a file (protobuf parse, ONNX checker,
external-data policy; ``.npz`` without pickle) before it is accepted. A refused upload leaves no
file and no row.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import os

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from redaudit.errors import RedauditError
from redaudit.service.api.deps import get_state, require_read, require_write
from redaudit.service.archives import check_npz_archive, extract_bundle
from redaudit.service.state import ServiceState
from redaudit.service.storage import Staged, UploadError

router = APIRouter(tags=["uploads"])

#: Uploads whose checks (protobuf parse, ONNX checker, archive walk) run at once. The checks are
#: CPU work: fifty of them in the default thread pool (40 threads) would leave the cheap reads —
#: status polls — queueing for a thread behind them; beyond one per core they only add waiting.
_CHECKS = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))


async def _off_loop(function, *args):
    """Run ``function`` in a worker thread under the check limiter: everything an upload does
    after receiving its bytes blocks (checks, the file move, the blob's row, which may wait for
    SQLite's write lock) and must never run on the event loop, where it would stall every
    other request for as long as it waits."""
    return await anyio.to_thread.run_sync(function, *args, limiter=_CHECKS)

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


def _check_model(staged: Staged, kind: str, state: ServiceState, filename: str) -> str:
    """Validate the staged model or bundle; returns the model's sha256 (the .onnx file's)."""
    from redaudit.core.model import load_model

    with tempfile.TemporaryDirectory(prefix="redaudit-upload-") as folder:
        root = Path(folder)
        if kind == "bundle":
            files = extract_bundle(staged.path, root, state.limits)
            models = [file for file in files if file.suffix == ".onnx"]
            if len(models) != 1:
                raise UploadError(f"a bundle must hold exactly one .onnx file (found {len(models)}); "
                                  "pack one model with its external data")
            return load_model(models[0], max_bytes=state.settings.max_upload_bytes).sha256
        single = root / (Path(filename).name or "model.onnx")
        shutil.copyfile(staged.path, single)  # alone in a folder: external data must come as a bundle
        return load_model(single, max_bytes=state.settings.max_upload_bytes).sha256


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

    def check_and_store():
        model_sha = _check_model(staged, blob_kind, state, filename)
        state.blobs.commit(staged)
        return state.jobs.add_blob(staged.sha256, blob_kind, staged.size_bytes, Path(filename).name, model_sha)

    try:
        blob = await _off_loop(check_and_store)
    except RedauditError:
        state.blobs.discard(staged)
        raise
    return BlobOut(sha256=blob.sha256, kind=blob.kind, size_bytes=blob.size_bytes, filename=blob.filename,
                   model_sha256=blob.model_sha256)


def _check_inputs(staged: Staged, state: ServiceState) -> None:
    from redaudit.core.npz import read_npz

    check_npz_archive(staged.path, state.limits)
    arrays = read_npz(staged.path, rows=1).arrays  # every header checked, one row decompressed
    if not arrays:
        raise UploadError("the inputs archive holds no arrays; save one array per model input with numpy.savez")


@router.post("/uploads/inputs", status_code=201, response_model=BlobOut, openapi_extra=_body(INPUT_TYPES),
             summary="Upload probe inputs (.npz, one array per model input; never pickled)")
async def upload_inputs(request: Request, filename: str = Query("inputs.npz", max_length=255),
                        state: ServiceState = Depends(get_state), _token=Depends(require_write)) -> BlobOut:
    content_type = _content_type(request)
    if content_type not in INPUT_TYPES:
        raise UploadError(f"content type {content_type or 'missing'!r} is not an .npz; send it as "
                          "application/octet-stream", 415)
    staged = await _receive(request, state, "the inputs")

    def check_and_store():
        _check_inputs(staged, state)
        state.blobs.commit(staged)
        return state.jobs.add_blob(staged.sha256, "inputs", staged.size_bytes, Path(filename).name, None)

    try:
        blob = await _off_loop(check_and_store)
    except RedauditError:
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
