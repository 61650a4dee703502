"""The gate compares a scan with a baseline measured on the same probe (input hash and samples)
unless asked otherwise, and its verdict names the baseline and the probe (issue 24 item 1: the
same file pushed with 512 samples "failed" at +51.3 % against a 2,560-sample baseline)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from redaudit.history import check_result, record_scan
from redaudit.history.errors import IncompatibleScansError
from tests.history.conftest import make_result

PROBE_A, PROBE_B = "a1" * 32, "b2" * 32


def scanned(tag: str, probe: str, samples: int, scale: float = 1.0):
    result = make_result(file_tag=tag, copies=[(0, 1), (2, 3)])
    return replace(result, input_hash=probe, samples=samples, msrs=result.msrs * scale,
                   msrs_batches=result.msrs_batches * scale)


@pytest.fixture
def history(db_url):
    record_scan(db_url, scanned("v1", PROBE_A, 512), "net", label="v1")        # scan 1: probe A
    record_scan(db_url, scanned("v2", PROBE_B, 2560, 0.5), "net", label="v2")  # scan 2: probe B, newer
    return db_url


def test_the_baseline_is_the_latest_scan_on_the_same_probe(history):
    outcome = check_result(scanned("v3", PROBE_A, 512), against="net", max_increase=5, db=history)
    assert outcome.passed and outcome.baseline.scan.scan_id == 1 and outcome.increase_pct == pytest.approx(0.0)
    assert f"vs net v1 (scan 1) (MSRS {outcome.msrs:.4g}) on the same probe (inputs {PROBE_A[:12]}, 512 samples)" \
        in outcome.reason


def test_no_scan_on_this_probe_is_refused_with_what_to_do(history):
    with pytest.raises(IncompatibleScansError) as refused:
        check_result(scanned("v3", PROBE_A, 1024), against="net", max_increase=5, db=history)
    message = str(refused.value)
    assert f"no recorded scan of 'net' was measured on this probe (inputs {PROBE_A[:12]}, 1,024 samples)" in message
    assert f"scan 2, used inputs {PROBE_B[:12]}, 2,560 samples" in message and "--any-probe" in message


def test_any_probe_compares_across_probes_and_names_both(history):
    outcome = check_result(scanned("v3", PROBE_A, 1024), against="net", max_increase=5, db=history, any_probe=True)
    assert outcome.baseline.scan.scan_id == 2 and not outcome.passed  # twice scan 2's MSRS
    assert (f"on another probe (baseline inputs {PROBE_B[:12]}, 2,560 samples; this scan inputs "
            f"{PROBE_A[:12]}, 1,024 samples)") in outcome.reason


def test_check_cli_refuses_another_probe_in_one_line_unless_any_probe(tmp_path, residual_model_path):
    from click.testing import CliRunner

    from redaudit.cli.main import cli

    db = f"sqlite:///{tmp_path / 'h.db'}"
    runner = CliRunner()
    base = runner.invoke(cli, ["scan", str(residual_model_path), "--samples", "128", "--cka-batch", "32", "--record", "net", "--db", db])
    assert base.exit_code == 0, base.output
    args = ["check", str(residual_model_path), "--against", "net", "--max-increase", "5", "--db", db,
            "--samples", "64", "--cka-batch", "32", "--quiet"]
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 2 and "was measured on this probe" in refused.output, refused.output
    assert refused.output.count("error:") == 1 and "Traceback" not in refused.output
    compared = runner.invoke(cli, [*args, "--any-probe"])
    assert compared.exit_code in (0, 1) and "on another probe (baseline inputs" in compared.output, compared.output
