"""Request dependencies: the service state, and who may call what.

Writes always need a token with the ``write`` scope; reads need ``read`` unless the service
runs with ``--public-read``. Failures say what is missing, never which token was sent.

A read may also carry the token in the dashboard's login cookie (``HttpOnly``, ``SameSite=Strict``),
so the jobs page can poll the API. Writes never accept the cookie: a browser attaches cookies to
requests other sites make it send, headers it does not, so only the header can authorise a write.
"""
from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from redaudit.service.auth import TokenInfo, verify_token
from redaudit.service.state import ServiceState

#: The dashboard's cookie holding the API token (set by ``POST /ui/login``).
TOKEN_COOKIE = "redaudit_token"
bearer = HTTPBearer(auto_error=False, description="an API token from `redaudit token create`")


async def get_state(request: Request) -> ServiceState:
    """Async on purpose: a plain attribute read, which as a sync dependency would cost every
    request a hop through the thread pool (and a wait for a free thread under load)."""
    return request.app.state.service


def authorize(state: ServiceState, scope: str, header_secret: str | None,
              cookie_secret: str | None) -> TokenInfo | None:
    """The caller's token if it allows ``scope`` (None for an anonymous read under
    ``--public-read``); raises 401/403 otherwise. Blocking (one database read): call it from a
    worker thread — the hot read endpoints do, together with their own read, in one trip."""
    if scope == "read" and state.settings.public_read and header_secret is None:
        return None
    secret = header_secret if header_secret is not None else (cookie_secret if scope == "read" else None)
    if secret is None:
        raise HTTPException(401, f"this request needs an API token with the {scope!r} scope: send "
                                 "'Authorization: Bearer TOKEN' (create one with `redaudit token create`)",
                            headers={"WWW-Authenticate": "Bearer"})
    token = verify_token(state.engine, secret)
    if token is None:
        raise HTTPException(401, "the API token is unknown or revoked; create a new one with "
                                 "`redaudit token create`", headers={"WWW-Authenticate": "Bearer"})
    if not token.allows(scope):
        raise HTTPException(403, f"the API token has the {token.scope!r} scope; this request needs "
                                 f"{scope!r}")
    return token


class Caller:
    """Who is calling, not yet verified: what an async endpoint passes to :func:`authorize` in
    the same worker-thread trip as its own database read."""

    def __init__(self, header_secret: str | None, cookie_secret: str | None) -> None:
        self.header_secret, self.cookie_secret = header_secret, cookie_secret

    def authorize(self, state: ServiceState, scope: str) -> TokenInfo | None:
        return authorize(state, scope, self.header_secret, self.cookie_secret)


async def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:
    """Async: reads headers only (the verification is the endpoint's, off the event loop)."""
    return Caller(credentials.credentials if credentials is not None else None, request.cookies.get(TOKEN_COOKIE))


def _require(scope: str):
    def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
              state: ServiceState = Depends(get_state)) -> TokenInfo | None:
        return authorize(state, scope, credentials.credentials if credentials is not None else None,
                         request.cookies.get(TOKEN_COOKIE))
    return check


require_read = _require("read")
require_write = _require("write")
require_admin = _require("admin")
