"""API tokens: created once (the secret is shown once), stored as a sha256, checked per request.

Scopes are levels: ``read`` < ``write`` < ``admin``; a token allows its level and those below.
The secret only ever travels in the ``Authorization: Bearer`` header — never in a URL, a log
line or an error message (a refused token is described by its absence, not echoed back).
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from redaudit.errors import ConfigError
from redaudit.history.db import translated_errors
from redaudit.history.records import utc
from redaudit.history.store import unit_of_work
from redaudit.service.models import ApiToken

SCOPES = ("read", "write", "admin")
TOKEN_PREFIX = "rdt_"


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    prefix: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


_COLUMNS = (ApiToken.id, ApiToken.name, ApiToken.prefix, ApiToken.scopes, ApiToken.created_at, ApiToken.revoked_at)


def _info(row) -> TokenInfo:
    return TokenInfo(row.id, row.name, row.prefix, row.scopes, utc(row.created_at),
                     utc(row.revoked_at) if row.revoked_at is not None else None)


def create_token(engine: Engine, name: str, scope: str) -> tuple[TokenInfo, str]:
    """A new token; returns its record and the secret (shown once, stored only as a hash)."""
    if scope not in SCOPES:
        raise ConfigError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if not name or len(name) > 200:
        raise ConfigError("a token needs a name of 1-200 characters (who or what uses it)")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with unit_of_work(engine, write=True) as session:
        row = ApiToken(name=name, prefix=secret[:10], secret_sha256=_hash(secret), scopes=scope,
                       created_at=datetime.now(timezone.utc))
        session.add(row)
        session.flush()
        return _info(row), secret


def list_tokens(engine: Engine) -> list[TokenInfo]:
    with unit_of_work(engine) as session:
        return [_info(row) for row in session.scalars(select(ApiToken).order_by(ApiToken.id))]


def revoke_token(engine: Engine, token_id: int) -> bool:
    with unit_of_work(engine, write=True) as session:
        return session.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                               .values(revoked_at=datetime.now(timezone.utc))
                               .execution_options(synchronize_session=False)).rowcount == 1


def verify_token(engine: Engine, secret: str) -> TokenInfo | None:
    """The live token whose secret this is, or None (unknown or revoked)."""
    if not secret or len(secret) > 200:
        return None
    # A Core select on a pooled connection, no ORM session: this runs on every request, and the
    # session's identity map and unit of work cost more than the query.
    with translated_errors(engine), engine.connect() as connection:
        row = connection.execute(select(*_COLUMNS).where(ApiToken.secret_sha256 == _hash(secret))).first()
    if row is None or row.revoked_at is not None:
        return None
    return TokenInfo(row.id, row.name, row.prefix, row.scopes, utc(row.created_at), row.revoked_at)
