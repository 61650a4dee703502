from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from redaudit.cli.nas import nas

pytestmark = pytest.mark.torch
pytest.importorskip("torch")

SPACE = """
[space]
families = ["cnn"]
depth = [1, 2]
widths = [4, 8]
kernels = [3]
"""


@pytest.fixture()
def env(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    return {"db": f"sqlite:///{tmp_path / 'h.db'}", "art": str(tmp_path / "art"), "space": str(space),
            "tmp": tmp_path}


def _run(args, **kwargs):
    return CliRunner().invoke(nas, args, catch_exceptions=False, **kwargs)


def test_run_report_export_end_to_end(env):
    tmp = env["tmp"]
    result = _run(["run", "--study", "cli", "--trials", "3", "--budget", "1", "--sampler", "random",
                   "--space", env["space"], "--db", env["db"], "--artifacts", env["art"],
                   "--retrain", "2", "-o", str(tmp / "chosen.onnx")])
    assert result.exit_code == 0, result.output
    assert "ran 3 trials; 3 complete, 0 failed" in result.output
    assert "retrained trial" in result.output and (tmp / "chosen.onnx").exists()
    onnx.checker.check_model(onnx.load(tmp / "chosen.onnx"), full_check=True)

    plot = tmp / "front.png"
    result = _run(["report", "cli", "--db", env["db"], "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "Pareto front" in result.output and "redundancy-aware" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = tmp / "t0.onnx"
    result = _run(["export", "cli", "--trial", "0", "-o", str(out), "--db", env["db"], "--artifacts", env["art"]])
    assert result.exit_code == 0, result.output
    assert "artifact" in result.output and "identical to the recorded model" in result.output
    onnx.checker.check_model(onnx.load(out), full_check=True)


@pytest.mark.parametrize("args, fragment", [
    (["report", "missing"], "no NAS study named 'missing'"),
    (["export", "missing", "--trial", "0", "-o", "x.onnx"], "no NAS study named 'missing'"),
])
def test_unknown_study_is_one_line_error(env, args, fragment):
    result = CliRunner().invoke(nas, [*args, "--db", env["db"]])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and fragment in result.output
    assert result.output.count("\n") == 1


def test_bad_data_file_is_one_line_error(env):
    bad = env["tmp"] / "bad.npz"
    np.savez(bad, x=np.zeros((20, 8, 8)), y=np.zeros(19))
    result = CliRunner().invoke(nas, ["run", "--trials", "1", "--data", str(bad), "--db", env["db"]])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {bad}: x has 20 samples but y has 19 labels"


def test_export_of_an_unfinished_trial_is_an_error(env):
    _run(["run", "--study", "u", "--trials", "1", "--budget", "1", "--space", env["space"], "--db", env["db"],
          "--artifacts", env["art"]])
    result = CliRunner().invoke(nas, ["export", "u", "--trial", "7", "-o", "x.onnx", "--db", env["db"]])
    assert result.exit_code == 2 and "has no trial 7" in result.output


def test_missing_torch_says_what_to_install(env, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    result = CliRunner().invoke(nas, ["run", "--trials", "1", "--db", env["db"]])
    assert result.exit_code == 2
    assert result.output.strip() == "error: redaudit nas needs PyTorch: pip install 'redaudit[nas]'"
