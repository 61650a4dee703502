"""`redaudit push --parent NAME@LABEL` records the pushed model under its parent (issue 24 item 2):
a pruned model pushed from CI keeps its lineage as a prune job's output does."""
from __future__ import annotations

import httpx
import onnx
from click.testing import CliRunner

from redaudit.cli.main import cli
from tests.models import residual_cnn
from tests.service.test_serve_cli import served  # noqa: F401  (fixture: a real `redaudit serve`)

FAST = ["--samples", "64", "--cka-batch", "32"]


def test_push_with_parent_records_the_lineage(served, tmp_path, monkeypatch):  # noqa: F811
    base, secret, _process = served
    monkeypatch.setenv("REDAUDIT_TOKEN", secret)
    original, pruned = tmp_path / "net.onnx", tmp_path / "net-pruned.onnx"
    onnx.save(residual_cnn(blocks=3, seed=1), str(original))
    onnx.save(residual_cnn(blocks=2, seed=1), str(pruned))
    runner = CliRunner()
    first = runner.invoke(cli, ["push", str(original), "--server", base, "--name", "net", "--label", "v1", *FAST])
    assert first.exit_code == 0, first.output
    child = runner.invoke(cli, ["push", str(pruned), "--server", base, "--name", "net", "--label", "v1-pruned",
                                "--parent", "net@v1", *FAST])
    assert child.exit_code == 0, child.output
    versions = httpx.get(f"{base}/api/v1/models/net/versions", headers={"Authorization": f"Bearer {secret}"}).json()
    by_label = {version["label"]: version for version in versions}
    assert by_label["v1-pruned"]["parent_sha256"] == by_label["v1"]["sha256"]
    assert by_label["v1"]["parent_sha256"] is None


def test_push_refuses_a_malformed_or_unknown_parent_in_one_line(served, tmp_path, monkeypatch):  # noqa: F811
    base, secret, _process = served
    monkeypatch.setenv("REDAUDIT_TOKEN", secret)
    model = tmp_path / "net.onnx"
    onnx.save(residual_cnn(blocks=2, seed=1), str(model))
    runner = CliRunner()
    malformed = runner.invoke(cli, ["push", str(model), "--server", base, "--name", "n", "--parent", "v1", *FAST])
    assert malformed.exit_code == 2 and "--parent takes NAME@LABEL" in malformed.output, malformed.output
    unknown = runner.invoke(cli, ["push", str(model), "--server", base, "--name", "n", "--parent", "nobody@v1", *FAST])
    assert unknown.exit_code == 2 and "HTTP 404" in unknown.output, unknown.output
    assert unknown.output.count("\n") == 1
