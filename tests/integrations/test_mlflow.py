"""--mlflow on scan, check and prune, and the library functions, against a real MLflow tracking
store (SQLite in a temporary folder), read back with MlflowClient. A plain scan never imports
mlflow; without the extra, --mlflow is one line naming it and exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import redaudit
from redaudit.cli.main import cli
from redaudit.core.spec import ScanSpec
from tests import models

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient

SCAN = ["--samples", "128", "--cka-batch", "64"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite tracking store per module (creating its tables takes seconds)."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts under ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _run(client: MlflowClient, experiment: str, name: str):
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1
    return runs[0]


def test_scan_logs_spec_metrics_layers_and_reports(runner, in_tmp, store, residual_model_path):
    out = runner.invoke(cli, ["scan", str(residual_model_path), *SCAN, "--json", "r.json", "--mlflow",
                              "--mlflow-uri", store, "--mlflow-experiment", "scans", "--mlflow-run-name", "cnn"])
    assert out.exit_code == 0, out.output
    assert "logged to MLflow run" in out.stderr and "INFO" not in out.stderr
    report = json.loads((in_tmp / "r.json").read_text())
    client = MlflowClient(store)
    run = _run(client, "scans", "cnn")
    assert run.info.status == "FINISHED"
    params, metrics = run.data.params, run.data.metrics
    assert params["spec.samples"] == "128" and params["spec.cka_batch"] == "64"
    assert params["spec.epsilon"] == str(ScanSpec().epsilon)
    assert metrics["msrs"] == pytest.approx(report["msrs"])
    layers = report["layers"]
    history = sorted(client.get_metric_history(run.info.run_id, "layer_redundancy"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(len(layers)))
    assert [m.value for m in history] == pytest.approx([layer["redundancy"] for layer in layers])
    consecutive = sorted(client.get_metric_history(run.info.run_id, "consecutive_cka"), key=lambda m: m.step)
    matrix = np.array(report["similarity"], dtype=float)
    assert [m.value for m in consecutive] == pytest.approx([matrix[i, i + 1] for i in range(len(layers) - 1)])
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "redaudit")}
    assert artifacts == {"redaudit/scan.json", "redaudit/scan.html", "redaudit/heatmap.png"}
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "redaudit/scan.json", str(in_tmp))).read_text())
    assert logged["model"]["sha256"] == report["model"]["sha256"]


def test_tracking_uri_from_the_environment(runner, in_tmp, store, residual_model_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    out = runner.invoke(cli, ["scan", str(residual_model_path), *SCAN, "--quiet", "--mlflow",
                              "--mlflow-experiment", "env", "--mlflow-run-name", "from-env"])
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith("MSRS ")  # --quiet: stdout is the MSRS line only
    assert _run(MlflowClient(store), "env", "from-env").data.metrics["layers"] == 4


def test_library_logs_into_the_active_run(in_tmp, store, residual_model_path, monkeypatch):
    from redaudit.integrations.mlflow import MlflowTarget, log_scan

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    result = redaudit.scan(str(residual_model_path), ScanSpec(samples=128, cka_batch=64))
    experiment = MlflowClient(store).create_experiment("active")
    with mlflow.start_run(experiment_id=experiment, run_name="outer") as outer:
        logged = log_scan(result, MlflowTarget(experiment="ignored", run_name="ignored"), artifacts=False)
        assert logged.active and logged.run_id == outer.info.run_id
    run = MlflowClient(store).get_run(outer.info.run_id)
    assert run.data.metrics["msrs"] == pytest.approx(result.msrs)
    assert MlflowClient(store).get_experiment_by_name("ignored") is None


def test_check_and_prune_log_their_outcomes(runner, in_tmp, store, save_model):
    path = save_model(models.residual_cnn(blocks=3, zero_branch=1))
    out = runner.invoke(cli, ["check", str(path), *SCAN, "--max-msrs", "0", "--quiet", "--mlflow",
                              "--mlflow-uri", store, "--mlflow-experiment", "gates", "--mlflow-run-name", "check"])
    assert out.exit_code == 1, out.output  # MSRS > 0: the gate fails, and the failure is logged
    run = _run(MlflowClient(store), "gates", "check")
    assert run.data.metrics["check_passed"] == 0.0
    assert run.data.tags["redaudit.check_reason"] in out.stdout

    out = runner.invoke(cli, ["prune", str(path), *SCAN, "--remove", "1", "--policy", "cka", "--no-latency",
                              "--mlflow", "--mlflow-uri", store, "--mlflow-experiment", "gates",
                              "--mlflow-run-name", "prune", "--json"])
    assert out.exit_code == 0, out.output
    outcome = json.loads(out.stdout)
    run = _run(MlflowClient(store), "gates", "prune")
    assert run.data.params["prune.removed"] == ",".join(outcome["removed"]) == "block1_out"
    assert run.data.params["prune.policy"] == "cka"
    metrics = run.data.metrics
    assert metrics["prune.params.ratio"] == pytest.approx(outcome["params"]["ratio"])
    assert metrics["prune.agreement.logits.cosine_mean"] == pytest.approx(outcome["agreement"][0]["cosine_mean"])
    removed = [c for c in outcome["candidates"] if c["name"] in outcome["removed"]]
    assert metrics["prune.flops_removed_share"] == pytest.approx(sum(c["flop_share"] for c in removed))
    assert metrics["prune.msrs.before"] == pytest.approx(outcome["msrs"]["before"])


def test_a_plain_scan_imports_no_integration(residual_model_path):
    code = ("import sys\nfrom redaudit.cli.main import cli\n"
            f"cli(['scan', {str(residual_model_path)!r}, '--samples', '128', '--cka-batch', '64', '--quiet'], standalone_mode=False)\n"
            "print(sorted(m for m in ('mlflow', 'model_explorer', 'model_explorer_onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_missing_extra_is_one_line_and_writes_nothing(runner, in_tmp, residual_model_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    out = runner.invoke(cli, ["scan", str(residual_model_path), *SCAN, "--json", "r.json", "--mlflow"])
    assert out.exit_code == 2
    assert out.stderr == "error: --mlflow needs the mlflow extra: pip install 'redaudit[mlflow]'\n"
    assert not (in_tmp / "r.json").exists()
    out = runner.invoke(cli, ["scan", str(residual_model_path), "--mlflow-uri", "x"])
    assert out.exit_code == 2 and "--mlflow-uri has no effect without --mlflow" in out.stderr
