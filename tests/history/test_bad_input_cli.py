"""Hostile input to the history commands: one line on stderr, exit 2, nothing written, no rows.

Each case failed before (traceback, exit 0 with nothing recorded, a gate printing OK on NaN,
a partial file left behind). Only the CLI and ``record_scan`` are used, so the file runs
unchanged against older code to show the failures.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

import models
from redaudit.cli.main import cli
from tests.history.conftest import make_result

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--samples", "64", "--cka-batch", "32", "--quiet"]


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.fixture
def recorded(db_url):
    from redaudit.history import record_scan

    record_scan(db_url, make_result(file_tag="a"), "net", label="v1")
    record_scan(db_url, make_result(file_tag="b", copies=[(1, 2)]), "net", label="v2")
    return db_url


@pytest.fixture
def model_path(tmp_path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(models.residual_cnn(blocks=2), str(path))
    return path


@pytest.mark.parametrize("name", ["", " ", "x" * 201, "two\nlines"])
def test_record_with_a_bad_name_is_refused_before_the_scan(name, db_url, model_path, tmp_path):
    report = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["scan", str(model_path), *QUICK, "--json", str(report),
                                      "--record", name, "--db", db_url])
    assert "--record NAME" in one_line_error(result)
    assert result.stdout == "" and not report.exists()  # refused before scanning


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres@[::1:5432/x",
                                 "postgresql+psycopg://postgres@127.0.0.1:abc/x"])
def test_malformed_database_url(url, model_path):
    assert "not a database URL" in one_line_error(CliRunner().invoke(cli, ["history", "net", "--db", url]))
    assert "not a database URL" in one_line_error(CliRunner().invoke(cli, ["db", "upgrade", "--db", url]))
    scan = CliRunner().invoke(cli, ["scan", str(model_path), *QUICK, "--record", "net", "--db", url])
    assert "not a database URL" in one_line_error(scan) and scan.stdout == ""


def test_db_upgrade_to_a_bogus_revision(db_url, tmp_path):
    message = one_line_error(CliRunner().invoke(cli, ["db", "upgrade", "--db", db_url, "--revision", "bogus"]))
    assert "'bogus' is not a schema revision" in message
    if db_url.startswith("sqlite"):
        assert list(tmp_path.iterdir()) == []  # not even an empty database file
    else:
        assert counts_or_empty(db_url) == {}


def counts_or_empty(url: str) -> dict[str, int]:
    """Rows per history table; {} when there are no tables at all (nothing was created)."""
    from sqlalchemy import func, inspect, select

    from redaudit.history.db import make_engine
    from redaudit.history.models import Base

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            present = set(inspect(connection).get_table_names())
            return {name: connection.scalar(select(func.count()).select_from(table))
                    for name, table in Base.metadata.tables.items() if name in present}
    finally:
        engine.dispose()


def test_db_upgrade_on_a_database_at_an_unknown_revision(recorded):
    from sqlalchemy import text

    from redaudit.history.db import make_engine

    engine = make_engine(recorded)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE redaudit_alembic_version SET version_num = 'ffff'"))
    finally:
        engine.dispose()
    current = CliRunner().invoke(cli, ["db", "current", "--db", recorded])
    assert current.exit_code == 0 and "revision ffff" in current.output
    message = one_line_error(CliRunner().invoke(cli, ["db", "upgrade", "--db", recorded]))
    assert "unknown to this redaudit" in message and "upgrade redaudit" in message


@pytest.mark.parametrize("target", ["/dev/full", "/proc/msrs.png", "folder"])
def test_history_plot_that_cannot_be_written(recorded, tmp_path, target):
    if target == "folder":
        target = str(tmp_path)  # an existing folder
    folder = Path(target).parent
    before = set(os.listdir(folder)) if target != "/proc/msrs.png" else set()
    result = CliRunner().invoke(cli, ["history", "net", "--db", recorded, "--plot", target])
    assert "cannot write" in one_line_error(result)
    assert "plot written" not in result.output
    if target == "/proc/msrs.png":  # read-only for root too; its listing changes with processes
        assert not Path(target).exists()
    else:
        assert set(os.listdir(folder)) == before  # no partial or temporary file


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (see /proc case)")
def test_history_plot_into_read_only_folder(recorded, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        one_line_error(CliRunner().invoke(cli, ["history", "net", "--db", recorded, "--plot",
                                                str(folder / "p.png")]))
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_diff_html_onto_dev_full(recorded):
    result = CliRunner().invoke(cli, ["diff", "net", "v1", "v2", "--db", recorded, "--html", "/dev/full"])
    assert "cannot write /dev/full" in one_line_error(result)


def _fill_disk() -> None:
    """What a full disk does to this process: writes past 40 KB fail (EFBIG; Python ignores
    SIGXFSZ). The history database itself needs less (SQLite's 32 KB shared-memory file)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))


def test_diff_html_onto_a_full_disk_leaves_no_file(recorded, tmp_path):
    """A really full file system (a 64 KiB tmpfs filled to the last byte): one line, exit 2,
    neither the report nor its temporary file left behind."""
    out = tmp_path / "reports"
    out.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(out)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()[:80]})")
    try:
        with open(out / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 512)
            except OSError:
                pass
        result = CliRunner().invoke(cli, ["diff", "net", "v1", "v2", "--db", recorded, "--html", str(out / "diff.html")])
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and "cannot write" in result.stderr
        assert sorted(p.name for p in out.iterdir()) == ["filler"]  # neither the report nor its temporary file
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


@pytest.mark.parametrize("limits", [["--max-msrs", "nan"], ["--max-msrs", "inf"],
                                    ["--against", "net", "--max-increase", "nan"],
                                    ["--max-msrs", "-1"]])
def test_check_refuses_limits_it_cannot_compare(limits, recorded, model_path):
    result = CliRunner().invoke(cli, ["check", str(model_path), *QUICK, "--db", recorded, *limits])
    assert "must be" in one_line_error(result) and "OK" not in result.output


def constant_model() -> onnx.ModelProto:
    """Three Gemm+Relu layers with zero weights: every layer is constant, nothing can be measured."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    inits = [models._init("zero", np.zeros((8, 8), np.float32))]
    nodes, current = [], "x"
    for i in range(3):
        inits.append(models._init(f"b{i}", np.full(8, 0.5 + i, np.float32)))
        nodes += [helper.make_node("Gemm", [current, "zero", f"b{i}"], [f"h{i}"], name=f"fc{i}"),
                  helper.make_node("Relu", [f"h{i}"], [f"a{i}"], name=f"relu{i}")]
        current = f"a{i}"
    output = helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", 8])
    return models.make_model(nodes, [x], [output], inits)


def test_check_fails_a_scan_that_measured_nothing(tmp_path):
    path = tmp_path / "constant.onnx"
    onnx.save(constant_model(), str(path))
    result = CliRunner().invoke(cli, ["check", str(path), *QUICK, "--level", "layer", "--max-msrs", "5"])
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("FAIL: ") and result.stdout.count("\n") == 1
    assert "constant or non-finite" in result.stdout and "OK" not in result.stdout


def test_diff_top_must_not_be_negative(recorded):
    result = CliRunner().invoke(cli, ["diff", "net", "v1", "v2", "--db", recorded, "--top", "-1"])
    assert "--top" in one_line_error(result)


def test_history_shows_msrs_zero_without_minus_infinity(db_url, tmp_path):
    from redaudit.history import record_scan

    zero = make_result(file_tag="z")
    zero.msrs, zero.msrs_std = 0.0, 0.0  # no pair above ε at all
    record_scan(db_url, zero, "net", label="v0")
    record_scan(db_url, make_result(file_tag="c", copies=[(1, 2)]), "net", label="v1")
    for args in ([], ["--scans"]):
        result = CliRunner().invoke(cli, ["history", "net", "--db", db_url, *args])
        assert result.exit_code == 0 and "inf" not in result.output
        assert "—" in result.output and "MSRS 0 (no redundant pair), log2 undefined" in result.output
    plot = tmp_path / "p.png"
    result = CliRunner().invoke(cli, ["history", "net", "--db", db_url, "--plot", str(plot)])
    assert result.exit_code == 0 and plot.read_bytes()[:4] == b"\x89PNG"
    assert "1 scan(s) with MSRS 0 drawn as triangles" in result.output


def test_rendering_leaves_matplotlib_global_state_alone(recorded, tmp_path):
    code = """
import sys, matplotlib
from redaudit.history import model_history, diff_references
from redaudit.history.render import plot_history, write_diff_html
plot_history(model_history(sys.argv[1], "net"), sys.argv[2])
write_diff_html(diff_references(sys.argv[1], "net", "v1", "v2"), sys.argv[3])
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", code, recorded, str(tmp_path / "p.png"), str(tmp_path / "d.html")],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "svg"},
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["svg", "False"]  # the application's backend, no pyplot
