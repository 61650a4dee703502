"""Log scans, checks and prune outcomes to MLflow.

Everything goes through an ``MlflowClient`` bound to the target's tracking URI, never through
``mlflow.set_tracking_uri``/``set_experiment`` (process-wide state the library leaves alone).
Inside an active MLflow run (the caller's ``with mlflow.start_run():``) the numbers go to that
run; otherwise a run is created in the named experiment and ended (FAILED if logging raised).

What a scan logs: the ScanSpec as params (``spec.*``); MSRS, its std and 95 % interval, and
counts as metrics; per layer (step = layer position) ``layer_redundancy`` and
``layer_most_similar_cka``, and ``consecutive_cka`` (step l = CKA of layers l and l+1, the
pruning signal); the JSON report, HTML report and heatmap as artifacts under ``redaudit/``.
Non-finite values are left out (MLflow would store NaN, which its charts draw as gaps anyway).

``mlflow`` is imported inside these functions only: ``redaudit[mlflow]`` is optional.
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redaudit.errors import RedauditError
from redaudit.integrations import require

#: MLflow's limit on a param value (longer ones are refused by the tracking store).
PARAM_LIMIT = 6000
#: log_batch accepts at most 1000 metrics and 100 params per call.
METRIC_BATCH, PARAM_BATCH = 1000, 100


class MlflowLogError(RedauditError):
    """The tracking store refused or could not be reached."""


@dataclass(frozen=True)
class MlflowTarget:
    """Where to log. ``tracking_uri`` None: ``$MLFLOW_TRACKING_URI``, else MLflow's default;
    ``experiment`` None: MLflow's Default experiment; ``run_name`` None: MLflow picks one."""

    tracking_uri: str | None = None
    experiment: str | None = None
    run_name: str | None = None


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    tracking_uri: str
    active: bool  # logged into the caller's active run (not created here)


def _clean_key(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in key)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


class _Batch:
    """Metrics, params and tags gathered, then sent in MLflow's batch sizes."""

    def __init__(self) -> None:
        self.metrics: list[tuple[str, float, int]] = []
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}

    def metric(self, key: str, value: Any, step: int = 0) -> None:
        number = _finite(value)
        if number is not None:
            self.metrics.append((_clean_key(key), number, step))

    def param(self, key: str, value: Any) -> None:
        text = "" if value is None else str(value)
        self.params[_clean_key(key)] = text if len(text) <= PARAM_LIMIT else text[:PARAM_LIMIT - 1] + "…"

    def send(self, client: Any, run_id: str) -> None:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        metrics = [Metric(key, value, now, step) for key, value, step in self.metrics]
        params = [Param(key, value) for key, value in self.params.items()]
        for start in range(0, len(params), PARAM_BATCH):
            client.log_batch(run_id, params=params[start:start + PARAM_BATCH])
        for start in range(0, len(metrics), METRIC_BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + METRIC_BATCH])
        if self.tags:
            client.log_batch(run_id, tags=[RunTag(key, value) for key, value in self.tags.items()])


def _experiment_id(client: Any, name: str | None) -> str:
    from mlflow.exceptions import MlflowException

    name = name or "Default"
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created by a concurrent logger in between
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@contextmanager
def open_run(target: MlflowTarget = MlflowTarget()) -> Iterator[tuple[Any, LoggedRun]]:
    """(client, run) to log into: the active run if there is one, else a new run in
    ``target.experiment`` that is ended when the block exits."""
    require("mlflow", "mlflow", "logging to MLflow")
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = target.tracking_uri
    try:
        active = mlflow.active_run()
        if active is not None:
            uri = mlflow.get_tracking_uri()
            yield MlflowClient(uri), LoggedRun(active.info.run_id, uri, True)
            return
        client = MlflowClient(uri)
        uri = client.tracking_uri
        run = client.create_run(_experiment_id(client, target.experiment), run_name=target.run_name)
        logged = LoggedRun(run.info.run_id, uri, False)
        try:
            yield client, logged
        except BaseException:
            client.set_terminated(logged.run_id, "FAILED")
            raise
        client.set_terminated(logged.run_id, "FINISHED")
    except (MlflowException, OSError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise MlflowLogError(f"cannot log to MLflow at {uri or 'the default tracking URI'}: {first[:300]}") from None


def _scan_batch(result: Any, batch: _Batch) -> None:
    for key, value in result.config.to_dict().items():
        batch.param(f"spec.{key}", value)
    batch.tags.update({"redaudit.model_path": str(result.model.path), "redaudit.model_sha256": result.model.sha256,
                       "redaudit.version": str(result.redaudit_version)})
    interval = result.msrs_interval
    for key, value in (("msrs", result.msrs), ("msrs_std", result.msrs_std),
                       ("msrs_ci_low", interval.low if interval.defined else None),
                       ("msrs_ci_high", interval.high if interval.defined else None),
                       ("log2_msrs", result.log2_msrs), ("layers", len(result.layers)),
                       ("samples", result.samples), ("batches", result.batches),
                       ("nan_batches", result.nan_batches), ("parameters", result.model.parameter_count)):
        batch.metric(key, value)
    for row in result.layer_rows():
        batch.metric("layer_redundancy", row.redundancy, row.position)
        batch.metric("layer_most_similar_cka", row.most_similar_cka, row.position)
    for step, value in enumerate(result.consecutive_similarity()):
        batch.metric("consecutive_cka", value, step)


def _scan_artifacts(result: Any, client: Any, run_id: str) -> None:
    from redaudit.report.heatmap import default_title, heatmap_png_bytes
    from redaudit.report.html import render_html
    from redaudit.report.json_report import dumps

    with tempfile.TemporaryDirectory(prefix="redaudit-mlflow-") as folder:
        files = {"scan.json": (dumps(result) + "\n").encode("utf-8"),
                 "scan.html": render_html(result).encode("utf-8")}
        if result.layers:
            files["heatmap.png"] = heatmap_png_bytes(result.similarity, result.layer_names, default_title(result))
        for name, data in files.items():
            path = Path(folder) / name
            path.write_bytes(data)
            client.log_artifact(run_id, str(path), artifact_path="redaudit")


def log_scan(result: Any, target: MlflowTarget = MlflowTarget(), *, artifacts: bool = True) -> LoggedRun:
    """Log a :class:`~redaudit.core.result.ScanResult` (module docstring: what goes where)."""
    with open_run(target) as (client, run):
        batch = _Batch()
        _scan_batch(result, batch)
        batch.send(client, run.run_id)
        if artifacts:
            _scan_artifacts(result, client, run.run_id)
    return run


def log_check(outcome: Any, result: Any, target: MlflowTarget = MlflowTarget(), *,
              artifacts: bool = True) -> LoggedRun:
    """A ``check``: the scan as :func:`log_scan` logs it, plus ``check_passed`` (1/0), the
    increase over the baseline and its interval, and the verdict's reason as a tag."""
    with open_run(target) as (client, run):
        batch = _Batch()
        _scan_batch(result, batch)
        batch.metric("check_passed", 1.0 if outcome.passed else 0.0)
        batch.metric("check_increase_pct", outcome.increase_pct)
        interval = outcome.increase_interval
        if interval is not None and interval.defined:
            batch.metric("check_increase_ci_low", interval.low)
            batch.metric("check_increase_ci_high", interval.high)
        if outcome.baseline is not None:
            batch.metric("check_baseline_msrs", outcome.baseline.scan.msrs)
            batch.tags["redaudit.check_baseline"] = str(outcome.baseline)
        batch.tags["redaudit.check_reason"] = outcome.reason[:5000]
        batch.send(client, run.run_id)
        if artifacts:
            _scan_artifacts(result, client, run.run_id)
    return run


def _numbers(prefix: str, value: Any, batch: _Batch) -> None:
    """Every number in a nested dict as a metric ``prefix.key.subkey``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _numbers(f"{prefix}.{key}" if prefix else str(key), item, batch)
    else:
        batch.metric(prefix, value)


def log_prune(outcome: Any, target: MlflowTarget = MlflowTarget(), *, spec: Any = None,
              artifacts: bool = True) -> LoggedRun:
    """A :class:`~redaudit.prune.result.PruneResult`: the policy and removed blocks as params,
    every number of its JSON (parameters, file size, latency, MSRS before/after, drift, and
    per output the agreement: cosine, errors, top-1 and whatever else it measures) as metrics,
    the removed share of parameters and FLOPs, and the JSON as an artifact."""
    import json

    data = outcome.to_dict()
    with open_run(target) as (client, run):
        batch = _Batch()
        if spec is not None:
            for key, value in spec.to_dict().items():
                batch.param(f"spec.{key}", value)
        batch.param("prune.policy", outcome.policy)
        batch.param("prune.removed", ",".join(outcome.removed))
        batch.param("prune.heal", ",".join(sorted({str(span.get("how")) for span in outcome.healed})) or "none")
        batch.tags["redaudit.model_sha256"] = outcome.source_sha256
        removed = [item for item in outcome.candidates if item.name in set(outcome.removed)]
        batch.metric("prune.removed_blocks", len(outcome.removed))
        batch.metric("prune.candidates", len(outcome.candidates))
        batch.metric("prune.params_removed_share", sum(item.param_share for item in removed))
        batch.metric("prune.flops_removed_share", sum(item.flop_share for item in removed))
        for key in ("params", "file_size", "latency", "msrs", "drift", "probe"):
            _numbers(f"prune.{key}", data.get(key), batch)
        for item in data.get("agreement") or []:
            _numbers(f"prune.agreement.{item.get('name')}", {k: v for k, v in item.items() if k != "name"}, batch)
        for step, entry in enumerate(data.get("steps") or []):
            batch.metric("prune.step_similarity", entry.get("similarity"), step)
        batch.send(client, run.run_id)
        if artifacts:
            with tempfile.TemporaryDirectory(prefix="redaudit-mlflow-") as folder:
                path = Path(folder) / "prune.json"
                path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
                client.log_artifact(run.run_id, str(path), artifact_path="redaudit")
    return run

