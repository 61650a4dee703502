"""The ASGI app: routers under ``/api/v1``, one-line JSON errors, workers started with the app.

``create_app`` takes a ready :class:`ServiceState` so tests and ``serve`` build the same app;
``start_workers=False`` gives an API that only queues (jobs then wait for Celery workers or
another process's pool).
"""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from redaudit import __version__
from pydantic import BaseModel

from redaudit.errors import RedauditError
from redaudit.history.errors import (DatabaseUnavailableError, IncompatibleScansError, LabelInUseError,
                                     UnknownReferenceError)
from redaudit.service.api import history, jobs, uploads
from redaudit.service.state import ServiceState
from redaudit.service.storage import UploadError
from redaudit.service.workers import EmbeddedPool, Reaper

API_PREFIX = "/api/v1"


class ErrorOut(BaseModel):
    """Every error the service itself raises: one line that says what is wrong and what to do."""

    detail: str


ERRORS = {status: {"model": ErrorOut, "description": text} for status, text in {
    400: "invalid input (model, archive, inputs, or scan option)", 401: "missing, unknown or revoked token",
    403: "token lacks the needed scope", 404: "unknown job, blob, model, version or scan",
    409: "conflict (job not finished, label in use, incomparable scans)", 413: "upload above the size limit",
    415: "wrong content type", 503: "database unavailable"}.items()}


def _status(error: RedauditError) -> int:
    if isinstance(error, UploadError):
        return error.status
    if isinstance(error, UnknownReferenceError):
        return 404
    if isinstance(error, (LabelInUseError, IncompatibleScansError)):
        return 409
    if isinstance(error, DatabaseUnavailableError):
        return 503
    # 422 stays FastAPI's own (a body that does not fit the request schema, documented as such);
    # our errors — an invalid scan option included — are 400 with a one-line detail.
    return 400


def create_app(state: ServiceState, *, start_workers: bool = True) -> FastAPI:
    pool: EmbeddedPool | None = None
    reaper: Reaper | None = None
    settings = state.settings
    if start_workers and settings.broker is None and settings.workers > 0:
        pool = EmbeddedPool(settings, settings.workers)
        state.dispatch = lambda job_id, queue: pool.notify(job_id)
    elif settings.broker is not None:
        from redaudit.service.celery_app import dispatcher

        state.dispatch = dispatcher(settings.broker)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        nonlocal reaper
        if pool is not None:
            pool.start()
        if start_workers:
            reaper = Reaper(state.jobs, max(settings.poll_s, settings.lease_s / 4),
                            lambda job_id, queue: state.dispatch(job_id, queue), redispatch_after_s=settings.lease_s)
            reaper.start()
        try:
            yield
        finally:
            if reaper is not None:
                reaper.stop()
            if pool is not None:
                pool.stop()
            state.checks.shutdown()

    app = FastAPI(title="redaudit", version=__version__, lifespan=lifespan,
                  description="Structural-redundancy audits (RedTest / MSRS) of ONNX models, as a service.",
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs", redoc_url=None,
                  responses=ERRORS)
    app.state.service = state
    for router in (uploads.router, jobs.router, history.router):
        app.include_router(router, prefix=API_PREFIX)
    from redaudit.service.dashboard import mount

    mount(app)

    @app.exception_handler(RedauditError)
    async def _redaudit_error(_request: Request, error: RedauditError) -> JSONResponse:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return JSONResponse({"detail": message}, status_code=_status(error))

    @app.get(f"{API_PREFIX}/health", tags=["service"], summary="Liveness, and the job counts by state")
    def health() -> dict:
        return {"status": "ok", "version": __version__, "jobs": state.jobs.counts()}

    return app
