"""A second label on the same bytes is an alias of the version, and scan, history and diff say so.

Before: `scan m.onnx --record magika --label v1`, then the same file with `--label v2` printed
"recorded scan 2 of magika (version v2)", `history` showed only v1, and `diff magika v1 v2`
compared scan 2 with itself ("MSRS 0 → 0, within batch noise").
"""
from __future__ import annotations

import json

import onnx
import pytest

import models
from redaudit.cli.main import cli
from redaudit.history import (HistoryStore, LabelInUseError, SameScanError, diff_references,
                              model_history, record_scan)
from tests.history.conftest import make_result


def test_relabel_of_same_bytes_is_an_alias(db_url):
    with HistoryStore(db_url) as store:
        first = store.record(make_result(file_tag="a"), "net", label="v1")
        second = store.record(make_result(file_tag="a", seed=1), "net", label="v2")
        again = store.record(make_result(file_tag="a", seed=2), "net", label="v2")
        other = store.record(make_result(file_tag="b"), "net", label="v3")
        assert (first.version_status, second.version_status, again.version_status,
                other.version_status) == ("new", "alias", "same", "new")
        assert second.version_label == "v1" and second.label == "v2"
        history = store.model_history("net")
    assert [(v.label, v.aliases, len(v.scans)) for v in history.versions] == [
        ("v1", ("v2",), 3), ("v3", (), 1)]
    # both labels name the version: its latest scan
    with HistoryStore(db_url) as store:
        assert store.resolve("net", "v1").scan_id == store.resolve("net", "v2").scan_id == again.scan_id


def test_diff_of_two_labels_of_one_version_is_refused(db_url):
    first = record_scan(db_url, make_result(file_tag="a"), "net", label="v1")
    second = record_scan(db_url, make_result(file_tag="a", seed=1), "net", label="v2")
    with pytest.raises(SameScanError, match=r"'v1' and 'v2' name the same version of 'net' \(sha256 "):
        diff_references(db_url, "net", "v1", "v2")
    with pytest.raises(SameScanError, match="both scan"):
        diff_references(db_url, "net", f"scan:{second}", "v1")  # v1 means its latest scan: the same one
    # two different scans of the one version can be compared, and the diff says what they are
    rescan = diff_references(db_url, "net", f"scan:{first}", f"scan:{second}")
    assert rescan.before.scan_id == first and rescan.after.scan_id == second
    assert any("same file" in note for note in rescan.notes)


def test_every_commit_labelled_never_fails_when_the_model_did_not_change(db_url):
    for commit in range(5):  # a CI pipeline labelling each commit; the model changes once
        record_scan(db_url, make_result(file_tag="a" if commit < 3 else "b"), "net", label=f"c{commit}")
    versions = model_history(db_url, "net").versions
    assert [(v.label, v.aliases) for v in versions] == [("c0", ("c1", "c2")), ("c3", ("c4",))]
    with pytest.raises(LabelInUseError, match="'c1' already names version"):
        record_scan(db_url, make_result(file_tag="b"), "net", label="c1")  # other bytes: refused


def test_unlabelled_version_takes_its_first_label_as_name(db_url):
    record_scan(db_url, make_result(file_tag="a"), "net")
    with HistoryStore(db_url) as store:
        assert store.record(make_result(file_tag="a"), "net", label="v1").version_status == "named"
    assert [(v.label, v.aliases) for v in model_history(db_url, "net").versions] == [("v1", ())]


def test_cli_scan_history_and_diff_agree_on_an_alias(runner, tmp_path, db_url):
    path = tmp_path / "m.onnx"
    onnx.save(models.residual_cnn(blocks=2), str(path))
    scan = ["scan", str(path), "--samples", "64", "--cka-batch", "32", "--record", "magika",
            "--db", db_url]
    first = runner.invoke(cli, scan + ["--label", "v1"])
    assert first.exit_code == 0, first.output
    assert "(new version v1)" in first.stderr
    second = runner.invoke(cli, scan + ["--label", "v2"])
    assert second.exit_code == 0, second.output
    assert "same file as version v1; v2 recorded as an alias" in second.stderr
    table = runner.invoke(cli, ["history", "magika", "--db", db_url])
    assert table.exit_code == 0 and "v1 aka v2 (same file)" in table.output and "1 versions, 2 scans" in table.output
    data = json.loads(runner.invoke(cli, ["history", "magika", "--db", db_url, "--json"]).stdout)
    assert [(v["label"], v["aliases"]) for v in data["versions"]] == [("v1", ["v2"])]
    diff = runner.invoke(cli, ["diff", "magika", "v1", "v2", "--db", db_url])
    assert diff.exit_code == 2 and diff.stdout == ""
    assert diff.stderr.count("\n") == 1 and "name the same version of 'magika'" in diff.stderr
