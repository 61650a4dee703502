"""``diff --format md`` and ``check --format md``: the verdict, MSRS before → after with both
intervals, the layers that changed most (largest |Δ| first, the numbers diff computes), and the
report link; names that would break a table cell are escaped."""
from __future__ import annotations

import re

import pytest

import redaudit
from redaudit.cli.main import cli
from redaudit.history import record_scan
from redaudit.history import diff_references
from redaudit.report.markdown import code
from redaudit.report.numbers import interval_bounds, msrs_text
from tests.history.conftest import make_result


def _table(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def test_diff_md_reads_like_the_diff(runner, tmp_path):
    db = f"sqlite:///{tmp_path / 'h.db'}"
    record_scan(db, make_result(6, file_tag="v1"), "net", label="v1")
    record_scan(db, make_result(6, copies=[(1, 2), (3, 4)], file_tag="v2"), "net", label="v2")
    out = runner.invoke(cli, ["diff", "net", "v1", "v2", "--db", db, "--format", "md", "--top", "3",
                              "--report-url", "https://ci.example/run/7/report.html"])
    assert out.exit_code == 0, out.output
    text = out.stdout
    diff = diff_references(db, "net", "v1", "v2")
    assert text.startswith("### redaudit diff: `net` v1 (scan 1) → v2 (scan 2)\n")
    assert "**🔺 MSRS rose beyond batch noise**" in text
    assert (f"MSRS **{msrs_text(diff.msrs_before, spread=False)}** (95% CI "
            f"{interval_bounds(diff.before.summary.msrs_interval)}) → **{msrs_text(diff.msrs_after, spread=False)}**") in text
    rows = _table(text)
    assert len(rows) == 3
    assert [row[0].strip("`") for row in rows] == [change.name for change in diff.changed[:3]]
    deltas = [abs(float(row[3])) for row in rows]
    assert deltas == sorted(deltas, reverse=True) and deltas[0] > 0.5
    assert "[Full HTML report](https://ci.example/run/7/report.html)" in text
    out = runner.invoke(cli, ["diff", "net", "v1", "v2", "--db", db, "--format", "md", "--html", str(tmp_path / "d.html")])
    assert f"[Full HTML report]({tmp_path / 'd.html'})" in out.stdout and (tmp_path / "d.html").exists()


def test_check_md_pass_and_fail_with_a_baseline(runner, tmp_path, save_model):
    from tests import models

    db = f"sqlite:///{tmp_path / 'h.db'}"
    spec = ["--samples", "256", "--cka-batch", "64"]
    plain = save_model(models.residual_cnn(blocks=3), "plain.onnx")
    redundant = save_model(models.residual_cnn(blocks=3, zero_branch=1), "redundant.onnx")
    out = runner.invoke(cli, ["scan", str(plain), *spec, "--quiet", "--record", "cnn", "--db", db])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["check", str(redundant), *spec, "--quiet", "--against", "cnn", "--max-increase", "10",
                              "--db", db, "--format", "md", "--html", str(tmp_path / "r.html")])
    assert out.exit_code == 1, out.output
    text = out.stdout
    assert text.startswith("### redaudit check: `redundant.onnx`\n\n❌ **FAIL**: MSRS ")
    assert "vs cnn" in text and (tmp_path / "r.html").exists()
    assert f"[Full HTML report]({tmp_path / 'r.html'})" in text
    rows = _table(text)
    # zeroing block 1's branch makes block 0 and block 1's outputs alike: they moved most
    assert {rows[0][0], rows[1][0]} == {"`block0_out`", "`block1_out`"} and float(rows[0][3]) > 0.5
    out = runner.invoke(cli, ["check", str(plain), *spec, "--quiet", "--against", "cnn", "--max-increase", "10",
                              "--db", db, "--format", "md"])
    assert out.exit_code == 0, out.output
    assert "✅ **PASS**" in out.stdout and "Full HTML report" not in out.stdout


def test_check_md_without_baseline_lists_the_most_redundant_layers(runner, save_model):
    from tests import models

    path = save_model(models.residual_cnn(blocks=3, zero_branch=1))
    out = runner.invoke(cli, ["check", str(path), "--samples", "256", "--cka-batch", "64", "--quiet",
                              "--max-msrs", "100", "--format", "md"])
    assert out.exit_code == 0, out.output
    assert "Most redundant layers" in out.stdout
    result = redaudit.scan(str(path), redaudit.ScanSpec(samples=256, cka_batch=64))
    assert _table(out.stdout)[0][0] in ("`block0_out`", "`block1_out`")
    assert f"MSRS **{msrs_text(result.msrs, spread=False)}**" in out.stdout


@pytest.mark.parametrize("name, expected", [("a/b", "`a/b`"), ("a|b", "`a\\|b`"), ("a`b", "`` a`b ``")])
def test_code_spans_survive_table_cells(name, expected):
    assert code(name) == expected
