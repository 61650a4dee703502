"""``redaudit token create|list|revoke``: API tokens for the service, in the history database."""
from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from redaudit.cli.common import user_errors
from redaudit.cli.history import db_option
from redaudit.cli.params import count
from redaudit.errors import ConfigError


def _engine(db):
    from redaudit.history.db import make_engine
    from redaudit.history.schema import ensure_schema

    engine = make_engine(db)
    ensure_schema(engine, create=True)
    return engine


@click.group("token")
def token_group() -> None:
    """Create, list and revoke API tokens (scopes: read < write < admin)."""


@token_group.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["read", "write", "admin"]), default="read", show_default=True)
@db_option
@user_errors
def create_command(name, scope, db) -> None:
    """Create a token named NAME; prints the secret once (only its hash is stored)."""
    from redaudit.service.auth import create_token

    info, secret = create_token(_engine(db), name, scope)
    click.echo(f"created token {info.id} ({info.name}, {info.scope}); it is shown only now:", err=True)
    click.echo(secret)


@token_group.command("list")
@db_option
@user_errors
def list_command(db) -> None:
    """List tokens (id, name, scope, prefix, created, revoked); secrets are never shown."""
    from redaudit.service.auth import list_tokens

    table = Table("id", "name", "scope", "prefix", "created", "revoked")
    for info in list_tokens(_engine(db)):
        table.add_row(str(info.id), info.name, info.scope, info.prefix + "…",
                      info.created_at.strftime("%Y-%m-%d %H:%M"),
                      info.revoked_at.strftime("%Y-%m-%d %H:%M") if info.revoked_at else "")
    Console().print(table)


@token_group.command("revoke")
@click.argument("token_id", type=count(1, 2**63 - 1))
@db_option
@user_errors
def revoke_command(token_id, db) -> None:
    """Revoke token TOKEN_ID (see `redaudit token list`); it stops working at once."""
    from redaudit.service.auth import revoke_token

    if not revoke_token(_engine(db), token_id):
        raise ConfigError(f"no live token {token_id}; see `redaudit token list`")
    click.echo(f"revoked token {token_id}")
