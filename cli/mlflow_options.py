"""``--mlflow`` and its options, shared by scan, check and prune.

The options are parsed and the extra checked before any work (a missing ``mlflow`` fails in the
first second, not after a long scan); ``mlflow`` itself is imported only when logging.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from redaudit.cli.common import err_console
from redaudit.errors import ConfigError

_OPTIONS = [
    click.option("--mlflow", "mlflow", is_flag=True,
                 help="Log params, metrics and reports to MLflow (pip install 'redaudit[mlflow]'); into the "
                      "active run if there is one."),
    click.option("--mlflow-uri", metavar="URI", default=None,
                 help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's default)."),
    click.option("--mlflow-experiment", metavar="NAME", default=None, help="MLflow experiment (default: Default)."),
    click.option("--mlflow-run-name", metavar="NAME", default=None, help="MLflow run name."),
]


def mlflow_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def mlflow_target(options: dict[str, Any]) -> Any:
    """Pop the MLflow options; an ``MlflowTarget`` when ``--mlflow`` is given, else None.
    Refuses the other options without ``--mlflow`` and a missing extra, before any work."""
    enabled = options.pop("mlflow")
    uri, experiment, run_name = (options.pop("mlflow_uri"), options.pop("mlflow_experiment"),
                                 options.pop("mlflow_run_name"))
    if not enabled:
        given = [name for name, value in (("--mlflow-uri", uri), ("--mlflow-experiment", experiment),
                                          ("--mlflow-run-name", run_name)) if value is not None]
        if given:
            raise ConfigError(f"{given[0]} has no effect without --mlflow")
        return None
    from redaudit.integrations import require
    from redaudit.integrations.mlflow import MlflowTarget

    require("mlflow", "mlflow", "--mlflow")
    import logging

    import mlflow  # noqa: F401 - configures its logger on import; then the application quiets it

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no INFO lines about creating tables
    return MlflowTarget(tracking_uri=uri or os.environ.get("MLFLOW_TRACKING_URI") or None,
                        experiment=experiment, run_name=run_name)


def logged_line(run: Any) -> None:
    """One line on stderr naming the run (stdout stays for --json and --quiet's MSRS line)."""
    where = "active run" if run.active else "run"
    err_console.print(f"logged to MLflow {where} {run.run_id} ({run.tracking_uri})", highlight=False,
                      soft_wrap=True, markup=False)
