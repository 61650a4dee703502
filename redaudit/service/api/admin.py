"""What an operator does over HTTP with an ``admin`` token: create, list and revoke API tokens.

The same operations as ``redaudit token create|list|revoke`` (``service.auth``), for operators
without a shell on the database's machine. A created token's secret is in the response body
once (``Cache-Control: no-store``) and stored only as its sha256; it never appears in a URL, a
log line or a listing. Cancelling any job (not only one's own) is the other admin operation, on
``POST /jobs/{id}/cancel``; listing every job is ``GET /jobs``.
"""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from redaudit.service.api.deps import get_state, require_admin
from redaudit.service.auth import TokenInfo, create_token, list_tokens, revoke_token
from redaudit.service.state import ServiceState

router = APIRouter(tags=["admin"])
TOKEN_ID = Path(ge=1, le=2**31 - 1, description="a token id (see GET /tokens)")


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="who or what uses it, e.g. 'ci-resnet'")
    scope: Literal["read", "write", "admin"] = Field("read", description="read < write < admin")


class TokenOut(BaseModel):
    id: int
    name: str
    scope: str
    prefix: str = Field(description="the secret's first characters, to tell tokens apart")
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    secret: str = Field(description="the token; shown only in this response, stored only as a sha256")


def _out(info: TokenInfo) -> TokenOut:
    return TokenOut(id=info.id, name=info.name, scope=info.scope, prefix=info.prefix, created_at=info.created_at,
                    revoked_at=info.revoked_at)


@router.post("/tokens", status_code=201, response_model=TokenCreated,
             summary="Create an API token (admin); its secret is in this response only")
def create(request: TokenRequest, state: ServiceState = Depends(get_state),
           _admin: TokenInfo = Depends(require_admin)) -> JSONResponse:
    info, secret = create_token(state.engine, request.name, request.scope)
    body = TokenCreated(**_out(info).model_dump(), secret=secret)
    return JSONResponse(body.model_dump(mode="json"), status_code=201, headers={"Cache-Control": "no-store"})


@router.get("/tokens", response_model=list[TokenOut], summary="Every API token, revoked ones included (admin)")
def listing(state: ServiceState = Depends(get_state), _admin: TokenInfo = Depends(require_admin)) -> list[TokenOut]:
    return [_out(info) for info in list_tokens(state.engine)]


@router.post("/tokens/{token_id}/revoke", response_model=TokenOut,
             summary="Revoke an API token (admin); it stops working on its next request")
def revoke(token_id: int = TOKEN_ID, state: ServiceState = Depends(get_state),
           admin: TokenInfo = Depends(require_admin)) -> TokenOut:
    if token_id == admin.id:
        raise HTTPException(409, "that is the token making this request; revoke it with another admin token "
                                 "or `redaudit token revoke` (so no one locks themselves out by mistake)")
    if not revoke_token(state.engine, token_id):
        known = {info.id: info for info in list_tokens(state.engine)}
        if token_id in known:
            raise HTTPException(409, f"token {token_id} is already revoked")
        raise HTTPException(404, f"no token {token_id}; see GET /tokens")
    return next(_out(info) for info in list_tokens(state.engine) if info.id == token_id)
