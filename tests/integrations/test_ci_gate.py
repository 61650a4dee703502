"""The shell CI recipe of docs/ci.md (examples/ci_gate.sh), run as CI runs it: a push records the
baseline, a pull request that makes the model more redundant fails with a posted Markdown
comment and an HTML report, one that does not passes; a missing setting posts nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from redaudit.history import model_history
from tests import models

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "ci_gate.sh"


@pytest.fixture
def gate(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "redaudit"  # the checkout's redaudit, as an installed one would be
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m redaudit.cli.main \"$@\"\n")
    launcher.chmod(0o755)
    base = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT), "REDAUDIT_DB": f"sqlite:///{tmp_path / 'history.db'}",
            "REDAUDIT_NAME": "cnn", "REDAUDIT_SCAN_ARGS": "--samples 512 --cka-batch 64",
            "REDAUDIT_OUT": str(tmp_path / "out"), "REDAUDIT_POST": f"cat > {tmp_path / 'posted.md'}",
            "REDAUDIT_REPORT_URL": "https://ci.example/artifacts/report.html"}

    def run(**env: str) -> subprocess.CompletedProcess:
        (tmp_path / "posted.md").unlink(missing_ok=True)
        return subprocess.run(["sh", str(SCRIPT)], env={**base, **env}, capture_output=True, text=True,
                              cwd=tmp_path, timeout=600, check=False)
    return run, tmp_path


def test_push_records_then_pull_requests_are_gated(gate, save_model):
    run, folder = gate
    plain = save_model(models.residual_cnn(blocks=3), "plain.onnx")
    redundant = save_model(models.residual_cnn(blocks=3, zero_branch=1), "redundant.onnx")

    done = run(REDAUDIT_EVENT="push", REDAUDIT_MODEL=str(plain), REDAUDIT_LABEL="abc123")
    assert done.returncode == 0, done.stderr
    history = model_history(f"sqlite:///{folder / 'history.db'}", "cnn")
    assert [version.label for version in history.versions] == ["abc123"]
    assert not (folder / "posted.md").exists()

    done = run(REDAUDIT_MODEL=str(redundant))
    assert done.returncode == 1, done.stderr
    posted = (folder / "posted.md").read_text()
    assert posted.startswith("### redaudit check: `redundant.onnx`\n\n❌ **FAIL**: MSRS ")
    assert "vs cnn abc123" in posted and "[Full HTML report](https://ci.example/artifacts/report.html)" in posted
    assert (folder / "out" / "report.html").stat().st_size > 0

    done = run(REDAUDIT_MODEL=str(plain))
    assert done.returncode == 0, done.stderr
    assert "✅ **PASS**" in (folder / "posted.md").read_text()


def test_bad_settings_post_nothing(gate, save_model):
    run, folder = gate
    done = run(REDAUDIT_MODEL="")
    assert done.returncode == 2 and "REDAUDIT_MODEL" in done.stderr
    done = run(REDAUDIT_MODEL=str(save_model(models.residual_cnn(blocks=2))))  # no baseline recorded yet
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (folder / "posted.md").exists()
    done = run(REDAUDIT_MODEL="m.onnx", REDAUDIT_EVENT="tag")
    assert done.returncode == 2 and "REDAUDIT_EVENT" in done.stderr
