"""The dashboard's routes under ``/ui``, its login, and how it is mounted on the service's app.

Reads follow the API's rules: with ``--public-read`` anyone may look; otherwise a browser gives
an API token once, on the login form, and gets it back as an ``HttpOnly``, ``SameSite=Strict``
cookie (never in a URL, never logged: uvicorn logs request lines, and the token only travels in
a POST body and the cookie header). The API accepts that cookie for reads only (the jobs page
polls ``/api/v1/jobs`` with it); every write still needs the ``Authorization`` header, so a
cross-site form cannot make a logged-in browser write anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from redaudit.core.version import __version__
from redaudit.errors import RedauditError
from redaudit.history.errors import IncompatibleScansError, UnknownReferenceError
from redaudit.report import numbers
from redaudit.service.dashboard.svg import short_label
from redaudit.service import history_io
from redaudit.service.api.deps import TOKEN_COOKIE, get_state
from redaudit.service.auth import TokenInfo, verify_token
from redaudit.service.dashboard import views
from redaudit.service.state import ServiceState

PREFIX = "/ui"
HERE = Path(__file__).resolve().parent
#: Nothing outside this server: styles and scripts from /ui/static, images inline (data:).
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
                                      "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                                      "base-uri 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}

templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
templates.globals.update(prefix=PREFIX, version=__version__, fmt=numbers.fmt, share=numbers.share,
                         interval_text=numbers.interval_text, short_label=short_label, quote=lambda text: quote(str(text), safe=""))


class LoginRequired(Exception):
    """A page was asked for without a valid token cookie (and reads are not public)."""

    def __init__(self, target: str) -> None:
        self.target = target


def viewer(request: Request, state: ServiceState = Depends(get_state)) -> TokenInfo | None:
    """Who is looking: None with ``--public-read``, else the cookie's live token."""
    if state.settings.public_read:
        return None
    secret = request.cookies.get(TOKEN_COOKIE)
    token = verify_token(state.engine, secret) if secret else None
    if token is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return token


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(template).render(**context), status_code=status, headers=HEADERS)


def _error(error: RedauditError, back: str) -> HTMLResponse:
    status = 404 if isinstance(error, UnknownReferenceError) else 409 if isinstance(error, IncompatibleScansError) \
        else 400
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return page("error.html", status, title="Not shown", message=message, back=back)


def _safe_next(target: str | None) -> str:
    """Only a path on this dashboard (no scheme, no ``//host``): an open redirect would let a
    link send a freshly logged-in user anywhere."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX + "/"


router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/login")
def login_form(next: str | None = Query(None, max_length=2000), state: ServiceState = Depends(get_state)):
    return page("login.html", title="Log in", next=_safe_next(next), message=None,
                public=state.settings.public_read)


@router.post("/login")
async def login(request: Request, state: ServiceState = Depends(get_state)):
    form = await request.form()
    secret = str(form.get("token") or "").strip()
    target = _safe_next(str(form.get("next") or ""))
    if not secret or await run_in_threadpool(verify_token, state.engine, secret) is None:  # off the loop
        return page("login.html", 401, title="Log in", next=target, public=state.settings.public_read,
                    message="That token is unknown or revoked; create one with `redaudit token create`.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(TOKEN_COOKIE, secret, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout():
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(TOKEN_COOKIE, path="/")
    return response


@router.get("/")
def models(state: ServiceState = Depends(get_state), who: TokenInfo | None = Depends(viewer)):
    return page("models.html", title="Models", who=who, rows=views.models_page(state))


@router.get("/models/{name}")
def model(name: str, state: ServiceState = Depends(get_state), who: TokenInfo | None = Depends(viewer)):
    try:
        data = views.model_page(state, name)
    except RedauditError as error:
        return _error(error, f"{PREFIX}/")
    return page("model.html", title=name, who=who, model=data)


@router.get("/models/{name}/diff")
def diff(name: str, before: str = Query(..., min_length=1, max_length=200),
         after: str = Query(..., min_length=1, max_length=200), force: bool = False,
         state: ServiceState = Depends(get_state), who: TokenInfo | None = Depends(viewer)):
    try:
        result = history_io.diff(state.engine, name, before, after, force=force)
    except RedauditError as error:
        return _error(error, f"{PREFIX}/models/{quote(name, safe='')}")
    return page("diff.html", title=f"{name}: diff", who=who, name=name, diff=result,
                summary=views.diff_summary(result), rows=views.diff_rows(result))


@router.get("/scans/{scan_id}")
def scan(scan_id: int, state: ServiceState = Depends(get_state), who: TokenInfo | None = Depends(viewer)):
    try:
        data = views.scan_page(state, scan_id)
    except RedauditError as error:
        return _error(error, f"{PREFIX}/")
    return page("scan.html", title=f"scan {scan_id}", who=who, page=data)


@router.get("/jobs")
def jobs(state: ServiceState = Depends(get_state), who: TokenInfo | None = Depends(viewer)):
    return page("jobs.html", title="Jobs", who=who, jobs=state.jobs.list(limit=100))


def mount(app: FastAPI) -> None:
    """Add the dashboard (pages, static files, login redirect, ``/`` → ``/ui/``) to ``app``."""
    app.include_router(router)
    from redaudit.service.dashboard import explorer  # the scan page's Model Explorer downloads

    app.include_router(explorer.install(viewer, PREFIX, _error))
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @app.exception_handler(LoginRequired)
    async def _login(_request: Request, error: LoginRequired) -> Response:
        return RedirectResponse(f"{PREFIX}/login?next={quote(error.target, safe='')}", status_code=303)
