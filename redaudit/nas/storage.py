"""Where studies live: Optuna's RDB storage in the same SQL database as the scan history.

Optuna's RDB storage is the distributed engine: every ``redaudit nas run --study NAME``
process, on one machine or many, asks the database for its next trial, so workers share one
study without a coordinator of ours. SQLite is the default (one machine); a PostgreSQL URL
serves many machines. The URL rule is the history's: ``--db URL``, else ``$REDAUDIT_DB``,
else ``history.db`` in the user data folder.

Trial models (ONNX) go to an Optuna artifact store, a folder (``--artifacts DIR``,
``$REDAUDIT_NAS_ARTIFACTS``, default ``nas-artifacts`` beside the database's default folder);
the database keeps the artifact id and the file's sha256. On a machine without that folder,
``nas export`` re-trains the trial deterministically from its stored parameters and seed and
says whether the result is bit-identical to the recorded model.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from redaudit.errors import RedauditError


class NasStudyError(RedauditError):
    """The study does not exist, or exists with a different configuration."""


def _user_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("redaudit"))


def resolve_db_url(url: str | None = None) -> str:
    """``url``, else ``$REDAUDIT_DB``, else SQLite ``history.db`` in the user data folder.

    Same rule as the scan history, so NAS trials and scans share one database.
    """
    try:  # prefer the history package's resolver when it is installed alongside
        from redaudit.history.db import resolve_url  # type: ignore[import-not-found]
    except ImportError:
        resolve_url = None
    if resolve_url is not None:
        return str(resolve_url(url))
    if url:
        return url
    env = os.environ.get("REDAUDIT_DB")
    if env:
        return env
    folder = _user_data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'history.db'}"


def resolve_artifact_dir(path: str | Path | None = None) -> Path:
    """``path``, else ``$REDAUDIT_NAS_ARTIFACTS``, else ``nas-artifacts`` in the user data folder."""
    chosen = Path(path) if path else (Path(os.environ["REDAUDIT_NAS_ARTIFACTS"])
                                     if os.environ.get("REDAUDIT_NAS_ARTIFACTS")
                                     else _user_data_dir() / "nas-artifacts")
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise RedauditError("redaudit nas needs Optuna: pip install 'redaudit[nas]'") from None
    # Optuna's log level and its ExperimentalWarning (heartbeats, metric names) are the
    # application's to set: the CLI quiets them in cli/nas.py; a library caller keeps its own.
    return optuna


_CREATION_RACE = ("already exists", "UNIQUE constraint", "duplicate key", "database is locked")


def open_storage(url: str | None = None) -> Any:
    """An Optuna RDBStorage on the resolved URL, with heartbeats.

    Heartbeats let any worker mark a trial FAILED when the process running it died without
    saying so (killed, machine lost), so the study never keeps phantom RUNNING trials.
    SQLite gets a long busy timeout because several local workers write to one file.
    """
    optuna = require_optuna()
    resolved = resolve_db_url(url)
    engine_kwargs: dict[str, Any] = {}
    if resolved.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(resolved, engine_kwargs=engine_kwargs,
                                              heartbeat_interval=30, grace_period=120)
        except Exception as exc:  # sqlalchemy raises many types for a bad URL or server
            # Workers started together on a fresh database race to create Optuna's tables and
            # its version row; the loser sees one of these and succeeds once the winner committed.
            if any(marker in str(exc) for marker in _CREATION_RACE) and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise RedauditError(f"cannot open the study database {_redact(resolved)}: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _redact(url: str) -> str:
    """Hide a password in a database URL before it reaches an error message."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


def load_existing_study(name: str, storage: Any) -> Any:
    """Load ``name`` or raise :class:`NasStudyError` listing the studies that do exist."""
    optuna = require_optuna()
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
        known = ", ".join(names) if names else "none yet; create one with: redaudit nas run --study NAME"
        raise NasStudyError(f"no NAS study named {name!r} in this database (studies: {known})") from None
