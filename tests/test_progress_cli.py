"""Stages on stderr when it is not a terminal (CliRunner's is not): one timestamped line per
stage and one per ~10 % of batches, for scan, check and prune; nothing from --quiet."""
from __future__ import annotations

import re
from datetime import datetime

import models
from redaudit.cli.main import cli
from redaudit.cli.progress import LineReporter, stage_text
from redaudit.core.progress import STAGES, ScanProgress
from rich.console import Console

LINE = re.compile(r"^\d\d:\d\d:\d\d (scanning|pruning): (.+)$")


def _lines(stderr: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in map(LINE.match, stderr.splitlines()) if m]


def test_scan_logs_every_stage_and_each_tenth_of_the_batches(runner, residual_model_path):
    result = runner.invoke(cli, ["scan", str(residual_model_path), "--samples", "640", "--cka-batch", "64",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    texts = [text for _, text in _lines(result.stderr)]
    for stage in STAGES:
        if stage != "batches":
            assert stage_text(stage) in texts, (stage, texts)
    batches = [t for t in texts if t.startswith("running batches")]
    # 10 batches of 64: 0 %, 10 %, ..., 100 % — one line each, in order
    assert batches == [f"running batches {64 * k}/640 ({10 * k}%)" for k in range(11)]
    assert texts.index(stage_text("load")) < texts.index(stage_text("session")) < texts.index(batches[0])


def test_batch_lines_are_throttled_to_about_ten(runner, residual_model_path):
    result = runner.invoke(cli, ["scan", str(residual_model_path), "--samples", "1000", "--cka-batch", "4",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    batches = [t for _, t in _lines(result.stderr) if t.startswith("running batches")]
    assert 10 <= len(batches) <= 12  # 250 batches, one line per tenth
    assert batches[-1] == "running batches 1,000/1,000 (100%)"


def test_quiet_scan_logs_no_stage(runner, residual_model_path):
    result = runner.invoke(cli, ["scan", str(residual_model_path), "--samples", "64", "--cka-batch", "32",
                                 "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert _lines(result.stderr) == []


def test_check_logs_stages_and_warns_about_synthetic_inputs(runner, residual_model_path):
    result = runner.invoke(cli, ["check", str(residual_model_path), "--max-msrs", "100", "--samples", "64",
                                 "--cka-batch", "32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: ")
    assert stage_text("batches") + " 64/64 (100%)" in [t for _, t in _lines(result.stderr)]
    assert "warning: probe inputs are synthetic" in result.stderr
    quiet = runner.invoke(cli, ["check", str(residual_model_path), "--max-msrs", "100", "--samples", "64",
                                "--cka-batch", "32", "--device", "cpu", "--quiet"])
    assert "warning: probe inputs are synthetic" in quiet.stderr and not _lines(quiet.stderr)


def test_prune_logs_its_stages_and_the_nested_scans(runner, save_model, tmp_path):
    path = save_model(models.residual_cnn(blocks=4))
    result = runner.invoke(cli, ["prune", str(path), "--remove", "1", "--force", "-o", str(tmp_path / "p.onnx"),
                                 "--samples", "64", "--cka-batch", "32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    texts = [t for who, t in _lines(result.stderr) if who == "pruning"]
    expected = ["load", "candidates", "probe arrays", "similarity scan", "surgery", "verification", "latency",
                "msrs before", "msrs after", "save"]
    positions = [texts.index(stage_text(stage)) for stage in expected]
    assert positions == sorted(positions), texts
    assert "MSRS after pruning: running batches 64/64 (100%)" in texts


def test_line_reporter_timestamps_and_prefixed_stages():
    console = Console(record=True, width=40, force_terminal=False)
    clock = iter([datetime(2026, 1, 1, 9, 0, s) for s in range(10)])
    report = LineReporter("pruning", console, clock=lambda: next(clock))
    report(ScanProgress("msrs before"))
    report(ScanProgress("msrs before/batches", 0, 3))
    report(ScanProgress("msrs before/batches", 1, 3))
    report(ScanProgress("msrs before/batches", 3, 3))
    text = console.export_text()
    assert text.splitlines() == [
        "09:00:00 pruning: MSRS before pruning",
        "09:00:01 pruning: MSRS before pruning: running batches 0/3 (0%)",
        "09:00:02 pruning: MSRS before pruning: running batches 1/3 (33%)",
        "09:00:03 pruning: MSRS before pruning: running batches 3/3 (100%)",
    ]


def test_terminal_display_leaves_one_line_per_finished_stage():
    from redaudit.cli.progress import stage_progress

    import io

    screen = io.StringIO()
    console = Console(file=screen, width=100, force_terminal=True, force_interactive=True)
    with stage_progress("scanning", console) as update:
        for stage in ("load", "taps", "batches"):
            update(ScanProgress(stage, 0, 2 if stage == "batches" else None))
        update(ScanProgress("batches", 2, 2))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", screen.getvalue())  # drop ANSI control codes
    finished = [line for line in text.splitlines() if line.startswith("✓ ")]
    assert [line.rsplit(" (", 1)[0] for line in finished] == [
        "✓ loading and checking the model", "✓ choosing taps", "✓ running batches"]
    assert all(re.search(r"\(\d+\.\d s\)$", line) for line in finished)
