"""The ASGI app: routers under ``/api/v1``, one-line JSON errors, workers started with the app.

``create_app`` takes a ready :class:`ServiceState` so tests and ``serve`` build the same app;
``start_workers=False`` gives an API that only queues (jobs then wait for Celery workers or
another process's pool).
"""
from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from redaudit.core.version import __version__
from pydantic import BaseModel

from redaudit.errors import RedauditError
from redaudit.history.errors import (DatabaseUnavailableError, IncompatibleScansError, LabelInUseError,
                                     UnknownReferenceError)
from redaudit.service.api import admin, history, jobs, uploads
from redaudit.service.state import ServiceState
from redaudit.service.storage import UploadError
from redaudit.service.wording import for_api
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


class ServerTiming:
    """ASGI middleware: a ``Server-Timing: app;dur=MS`` header on every response, the time from
    the request reaching the app to its response starting. Comparing it with what a client
    measures separates the service's own time from waiting for a core or a connection (how the
    read latency under load was profiled: benchmarks/service_load.py reports both)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed_send(message) -> None:
            if message["type"] == "http.response.start":
                duration = f"app;dur={1000 * (time.perf_counter() - began):.2f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", duration)]}
            await send(message)
        await self.app(scope, receive, timed_send)


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

    # The API docs (Swagger UI at /docs, ReDoc at /redoc) come from the package, not from a CDN:
    # fastapi-offline ships Swagger UI's and ReDoc's bundles and serves them from this server,
    # so the docs work on a machine without the internet (FastAPI's own pages load jsDelivr).
    from fastapi_offline import FastAPIOffline

    app = FastAPIOffline(title="redaudit", version=__version__, lifespan=lifespan,
                         description="Structural-redundancy audits (RedTest / MSRS) of ONNX models, as a service.",
                         openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs",
                         redoc_url=f"{API_PREFIX}/redoc", static_url=f"{API_PREFIX}/docs-static",
                         responses=ERRORS)
    app.state.service = state

    @app.middleware("http")
    async def _docs_stay_here(request: Request, call_next):
        """ReDoc's page shows a "by Redocly" logo from their CDN: the docs pages may load
        nothing but this server's files (and their inline scripts and styles)."""
        response = await call_next(request)
        if request.url.path in (f"{API_PREFIX}/docs", f"{API_PREFIX}/redoc"):
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                "img-src 'self' data:; worker-src 'self' blob:; font-src 'self' data:")
        return response
    app.add_middleware(ServerTiming)
    for router in (uploads.router, jobs.router, history.router, admin.router):
        app.include_router(router, prefix=API_PREFIX)
    from redaudit.service.dashboard import mount

    mount(app)

    @app.exception_handler(RedauditError)
    async def _redaudit_error(_request: Request, error: RedauditError) -> JSONResponse:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return JSONResponse({"detail": for_api(message)}, status_code=_status(error))

    @app.get(f"{API_PREFIX}/health", tags=["service"], summary="Liveness, and the job counts by state")
    def health() -> dict:
        return {"status": "ok", "version": __version__, "jobs": state.jobs.counts()}

    return app
