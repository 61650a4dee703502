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


def _require(scope: str):
    def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
              state: ServiceState = Depends(get_state)) -> TokenInfo | None:
        if scope == "read" and state.settings.public_read and credentials is None:
            return None
        secret = credentials.credentials if credentials is not None else None
        if secret is None and scope == "read":
            secret = request.cookies.get(TOKEN_COOKIE)
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
    return check


require_read = _require("read")
require_write = _require("write")
require_admin = _require("admin")
