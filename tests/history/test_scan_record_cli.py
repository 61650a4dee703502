"""`redaudit scan --record` end to end: two versions of a generated model, then history."""
from __future__ import annotations

import json

import onnx

import models
from redaudit.cli.main import cli


def test_scan_record_twice_then_history(runner, tmp_path, db_url):
    base, duplicated = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    onnx.save(models.residual_cnn(blocks=3), str(base))
    onnx.save(models.residual_cnn(blocks=3, duplicate_block=1), str(duplicated))
    for path, label in ((base, "v1"), (duplicated, "v2"), (duplicated, None)):
        args = ["scan", str(path), "--samples", "512", "--quiet", "--record", "net", "--db", db_url]
        result = runner.invoke(cli, args + (["--label", label] if label else []))
        assert result.exit_code == 0, result.output
        assert "recorded scan" not in result.stderr  # --quiet: stderr carries warnings only (issue 16)
        assert result.stdout.startswith("MSRS ") and result.stdout.count("\n") == 1
    history = runner.invoke(cli, ["history", "net", "--db", db_url, "--json"])
    assert history.exit_code == 0, history.output
    data = json.loads(history.stdout)
    assert [v["label"] for v in data["versions"]] == ["v1", "v2"]
    assert [len(v["scans"]) for v in data["versions"]] == [1, 2]  # same file → same version
    first, second = (v["scans"][0]["msrs"] for v in data["versions"])
    assert second > first
