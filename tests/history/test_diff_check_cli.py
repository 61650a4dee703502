"""diff, check and history on recorded scans whose redundancy is known by construction."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from redaudit.cli.history import diff_command, history_command
from redaudit.history import (IncompatibleScansError, check_result, diff_references, record_scan)
from redaudit.errors import ConfigError
from tests.history.conftest import make_result

BASE = [f"/block{i}/Relu_output_0" for i in range(6)]
# v2: the same network with block 3 duplicated (a new layer that copies /block3)
WITH_COPY = BASE[:4] + ["/block3_copy/Relu_output_0"] + BASE[4:]


@pytest.fixture
def versions(db_url):
    v1 = make_result(names=BASE, copies=[(1, 2)], file_tag="v1")
    v2 = make_result(names=WITH_COPY, copies=[(1, 2), (3, 4)], file_tag="v2")
    record_scan(db_url, v1, "net", label="v1")
    record_scan(db_url, v2, "net", label="v2")
    return db_url, v1, v2


def test_diff_reports_added_layer_and_redundancy_change(versions):
    db_url, v1, v2 = versions
    diff = diff_references(db_url, "net", "v1", "v2")
    assert diff.msrs_before == pytest.approx(v1.msrs) and diff.msrs_after == pytest.approx(v2.msrs)
    assert diff.msrs_delta == pytest.approx(1.0, abs=0.01)
    assert diff.msrs_change_pct == pytest.approx(100.0, abs=1)
    assert diff.added == ("/block3_copy/Relu_output_0",) and diff.removed == ()
    assert diff.changed[0].name == "/block3/Relu_output_0"
    assert diff.changed[0].delta == pytest.approx(1.0, abs=0.01)
    assert diff.significant


def test_diff_refuses_incompatible_settings_unless_forced(db_url):
    record_scan(db_url, make_result(file_tag="a"), "net", label="a")
    record_scan(db_url, make_result(file_tag="b", epsilon=0.7), "net", label="b")
    with pytest.raises(IncompatibleScansError, match="epsilon 0.8 vs 0.7"):
        diff_references(db_url, "net", "a", "b")
    forced = diff_references(db_url, "net", "a", "b", force=True)
    assert [d.key for d in forced.forced_differences] == ["epsilon"]
    result = CliRunner().invoke(diff_command, ["net", "a", "b", "--db", db_url])
    assert result.exit_code == 2 and "--force" in result.stderr and result.stderr.count("\n") == 1
    assert CliRunner().invoke(diff_command, ["net", "a", "b", "--db", db_url, "--force"]).exit_code == 0


def test_diff_cli_text_json_and_html(versions, tmp_path):
    db_url, _, _ = versions
    page = tmp_path / "diff.html"
    result = CliRunner().invoke(diff_command, ["net", "v1", "v2", "--db", db_url, "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert "1 added, 0 removed" in result.output and "+ /block3_copy/Relu_output_0" in result.output
    html = page.read_text()
    assert "data:image/png;base64," in html and "/block3_copy/Relu_output_0" in html
    data = json.loads(CliRunner().invoke(diff_command, ["net", "v1", "v2", "--db", db_url, "--json"]).output)
    assert data["layers_added"] == ["/block3_copy/Relu_output_0"]
    assert data["redundancy_changes"][0]["layer"] == "/block3/Relu_output_0"


def test_check_max_msrs_and_against(versions):
    db_url, v1, v2 = versions
    assert check_result(v1, max_msrs=1.5).passed
    outcome = check_result(v2, max_msrs=1.5)
    assert not outcome.passed and "exceeds --max-msrs 1.5" in outcome.reason
    # v2 doubled MSRS relative to the latest recorded scan (v2 itself: +0%) ...
    assert check_result(v2, against="net", max_increase=5, db=db_url).passed
    # ... a third version with one more copy is +50% over v2
    v3 = make_result(names=WITH_COPY + ["/x/Relu_output_0"], copies=[(1, 2), (3, 4), (5, 6)], file_tag="v3")
    outcome = check_result(v3, against="net", max_increase=20, db=db_url)
    assert not outcome.passed and outcome.increase_pct == pytest.approx(50, abs=1)
    assert "net v2" in outcome.reason and "limit +20%" in outcome.reason
    assert check_result(v3, against="net", max_increase=60, db=db_url).passed


def test_check_needs_comparable_baseline_and_valid_options(versions):
    db_url, v1, _ = versions
    other = make_result(file_tag="v9", epsilon=0.7)
    with pytest.raises(IncompatibleScansError, match="epsilon"):
        check_result(other, against="net", max_increase=10, db=db_url)
    assert check_result(other, against="net", max_increase=1e9, db=db_url, force=True).passed
    with pytest.raises(ConfigError):
        check_result(v1)
    with pytest.raises(ConfigError):
        check_result(v1, against="net", db=db_url)


def test_history_cli_table_json_and_plot(versions, tmp_path):
    db_url, v1, v2 = versions
    record_scan(db_url, make_result(names=BASE, copies=[(1, 2)], file_tag="v1", seed=1), "net")
    runner = CliRunner()
    table = runner.invoke(history_command, ["net", "--db", db_url])  # 80 columns, no terminal
    assert table.exit_code == 0, table.output
    assert "v1 (" + v1.model.sha256[:8] + ")" in table.output
    assert "2 versions, 3 scans" in table.output and "↑" in table.output
    version_rows = [line for line in table.output.splitlines() if line.strip().startswith(("v1", "v2"))]
    assert len(version_rows) == 2 and version_rows[0].split()[2] == "2"  # v1 has 2 scans
    every = runner.invoke(history_command, ["net", "--db", db_url, "--scans"])
    lines = every.output.splitlines()
    assert len(lines) == 3 + 3 and "→" in lines[4] and "↑" in lines[5]
    data = json.loads(runner.invoke(history_command, ["net", "--db", db_url, "--json"]).output)
    assert [v["label"] for v in data["versions"]] == ["v1", "v2"]
    # rows go version by version: v1's rescan is flat next to v1, v2 (one more copy) goes up
    assert [s["trend"] for v in data["versions"] for s in v["scans"]] == ["", "flat", "up"]
    plot = tmp_path / "msrs.png"
    assert runner.invoke(history_command, ["net", "--db", db_url, "--plot", str(plot)]).exit_code == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
