"""redaudit's numbers where people already look: Model Explorer node data, MLflow runs, Markdown
for pull requests. Each module imports its third-party package only when called, so a plain
``redaudit scan`` never pays for (or needs) any of them."""
from __future__ import annotations

import importlib.util

from redaudit.errors import RedauditError


class MissingExtraError(RedauditError):
    """An optional integration was asked for but its package is not installed."""


def require(module: str, extra: str, what: str) -> None:
    """Refuse early, without importing ``module``: one line naming the extra to install."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(f"{what} needs the {extra} extra: pip install 'redaudit[{extra}]'")
