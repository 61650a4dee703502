"""history, diff and check on real scans of generated networks whose redundancy we control:
version 1 is a residual CNN, version 2 the same network with block 1 duplicated."""
from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner

import models  # tests/models.py (tests/conftest.py puts tests/ on sys.path)
import redaudit
from redaudit.cli.check import check_command
from redaudit.cli.history import diff_command, history_command, record_from_cli
from redaudit.history import diff_references, model_history

SCAN = dict(samples=512, seed=0)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for tag, kwargs in (("v1", {}), ("v2", {"duplicate_block": 1})):
        paths[tag] = folder / f"{tag}.onnx"
        onnx.save(models.residual_cnn(blocks=3, **kwargs), str(paths[tag]))
    return paths


@pytest.fixture(scope="module")
def scans(model_files):
    return {tag: redaudit.scan(str(path), **SCAN) for tag, path in model_files.items()}


@pytest.fixture
def recorded(db_url, scans):
    ids = {tag: record_from_cli(result, "cnn", label=tag, db=db_url) for tag, result in scans.items()}
    return db_url, ids


def test_duplicated_block_raises_msrs_in_history_and_diff(recorded, scans):
    db_url, ids = recorded
    history = model_history(db_url, "cnn")
    assert [v.label for v in history.versions] == ["v1", "v2"]
    (_, first), (_, second) = history.scans()
    assert first.layer_count == 4 and second.layer_count == 5
    assert second.msrs > first.msrs + 1.0  # a copied block is a highly similar pair
    diff = diff_references(db_url, "cnn", "v1", "v2")
    assert diff.added == ("block3_out",) and diff.removed == ()
    assert diff.msrs_delta == pytest.approx(scans["v2"].msrs - scans["v1"].msrs)
    assert diff.changed[0].delta > 0.3 and diff.significant
    data = json.loads(CliRunner().invoke(history_command, ["cnn", "--db", db_url, "--json"]).output)
    assert [s["trend"] for v in data["versions"] for s in v["scans"]] == ["", "up"]
    text = CliRunner().invoke(diff_command, ["cnn", "v1", "v2", "--db", db_url])
    assert text.exit_code == 0 and "+ block3_out" in text.output


def test_rescan_same_file_adds_scan_to_same_version(db_url, model_files, scans):
    record_from_cli(scans["v1"], "cnn", db=db_url)
    record_from_cli(redaudit.scan(str(model_files["v1"]), samples=512, seed=1), "cnn", db=db_url)
    history = model_history(db_url, "cnn")
    assert len(history.versions) == 1 and len(history.versions[0].scans) == 2


def test_check_gates_ci(recorded, model_files, scans):
    db_url, _ = recorded
    runner = CliRunner()
    base = ["--samples", "512", "--seed", "0", "--quiet", "--db", db_url]
    limit = f"{scans['v2'].msrs * 1.05:.4f}"
    ok = runner.invoke(check_command, [str(model_files["v2"]), "--max-msrs", limit, *base])
    assert ok.exit_code == 0 and ok.stdout.startswith("OK: ")
    low = runner.invoke(check_command, [str(model_files["v2"]), "--max-msrs", "0.5", *base])
    assert low.exit_code == 1 and low.stdout.count("\n") == 1 and "exceeds --max-msrs 0.5" in low.stdout
    # gate v2 against the history holding only v1: MSRS grew by far more than 10 %
    record_from_cli(scans["v1"], "cnn-v1-only", db=db_url)
    grown = runner.invoke(check_command, [str(model_files["v2"]), "--against", "cnn-v1-only",
                                          "--max-increase", "10", *base])
    assert grown.exit_code == 1 and "limit +10%" in grown.output
    same = runner.invoke(check_command, [str(model_files["v1"]), "--against", "cnn-v1-only",
                                         "--max-increase", "10", *base])
    assert same.exit_code == 0 and "+0.0%" in same.output
    # a different epsilon changes MSRS: refused as a user error unless --force
    other = runner.invoke(check_command, [str(model_files["v1"]), "--against", "cnn-v1-only",
                                          "--max-increase", "10", "--epsilon", "0.7", *base])
    assert other.exit_code == 2 and "epsilon" in other.stderr
    bad = runner.invoke(check_command, [str(model_files["v1"]), "--max-increase", "10", *base])
    assert bad.exit_code == 2 and "--against NAME" in bad.stderr and bad.stderr.count("\n") == 1


def test_pruned_model_is_recorded_with_its_parent(db_url, model_files, tmp_path):
    from redaudit.prune.api import prune_model

    pruned = prune_model(str(model_files["v2"]), remove=1, output=str(tmp_path / "pruned.onnx"),
                         latency=False, record="cnn", label="pruned", db=db_url, samples=256, force=True)
    versions = model_history(db_url, "cnn").versions
    original, child = versions
    assert child.label == "pruned" and child.parent_sha256 == original.sha256
    assert child.scans[-1].scan_id == pruned.recorded_scan_id
    assert child.scans[-1].msrs < original.scans[-1].msrs  # the duplicated block is gone
