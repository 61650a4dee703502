"""Outputs onto a full disk, /dev/full, a read-only folder or past ``ulimit -f``: one line, exit 2,
no partial file, no temporary file, an existing target left as it was."""
from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest

from builders import save, tiny_mlp
from conftest import FAST, PENDING_HISTORY, Outcome, assert_refused, invoke, run_process, snapshot


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip() or 'not root?'})")


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs with about 6 KiB left: small reports fit, a PNG or an HTML page does not."""
    folder = tmp_path / "full"
    _mount_tmpfs(folder, "size=64k")
    try:
        (folder / "filler").write_bytes(b"\0" * (56 * 1024))
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def readonly_folder(tmp_path):
    folder = tmp_path / "ro"
    _mount_tmpfs(folder, "size=64k,ro")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


REPORTS = {"json": "--json", "html": "--html", "heatmap": "--heatmap"}


@pytest.mark.parametrize("report", list(REPORTS))
def test_report_onto_dev_full(workdir, report):
    model = save(tiny_mlp(), workdir)
    before = snapshot(workdir)
    assert_refused(invoke("scan", model, *FAST, "--quiet", REPORTS[report], "/dev/full"), "/dev/full")
    assert snapshot(workdir) == before
    assert Path("/dev/full").is_char_device()


@pytest.mark.parametrize("reports", [["html"], ["heatmap"], ["json", "html", "heatmap"], ["json", "heatmap"]])
def test_reports_onto_full_disk(workdir, full_disk, reports):
    """All or nothing: the JSON fits, the HTML does not, and neither is left behind."""
    model = save(tiny_mlp(), workdir)
    before = snapshot(full_disk)
    args = [arg for report in reports for arg in (REPORTS[report], full_disk / f"out.{report}")]
    assert_refused(invoke("scan", model, *FAST, "--quiet", *args), "No space left")
    assert snapshot(full_disk) == before


def test_existing_report_survives_a_failed_write(workdir, full_disk):
    model = save(tiny_mlp(), workdir)
    (full_disk / "filler").write_bytes(b"\0" * (50 * 1024))
    (full_disk / "out.html").write_text("the previous report\n")
    before = snapshot(full_disk)
    assert_refused(invoke("scan", model, *FAST, "--quiet", "--html", full_disk / "out.html"))
    assert snapshot(full_disk) == before


@pytest.mark.parametrize("report", list(REPORTS))
def test_report_into_readonly_folder(workdir, readonly_folder, report):
    model = save(tiny_mlp(), workdir)
    assert_refused(invoke("scan", model, *FAST, "--quiet", REPORTS[report], readonly_folder / "out"))


@pytest.mark.parametrize("where", ["dev full", "full disk", "readonly folder"])
def test_pruned_model_output_fails_cleanly(workdir, where, request):
    """Prune's -o on a full disk: one line, no partial model and no 0-byte .tmp (was: traceback)."""
    model = save(tiny_mlp(width=64, layers=4), workdir)
    if where == "dev full":
        target, folder = Path("/dev/full"), workdir
    else:
        folder = request.getfixturevalue("full_disk" if where == "full disk" else "readonly_folder")
        target = folder / "pruned.onnx"
    before, inputs = snapshot(folder), snapshot(workdir)
    outcome = invoke("prune", model, *FAST, "--remove", "1", "--no-latency", "-o", target)
    assert_refused(outcome)
    assert snapshot(folder) == before and snapshot(workdir) == inputs


def _limit_file_size(size: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


@pytest.mark.parametrize("args", [["--html", "out.html"], ["--heatmap", "out.png"],
                                  ["--json", "out.json", "--html", "out.html"]], ids=["html", "heatmap", "json+html"])
def test_reports_past_ulimit_f(workdir, args):
    """A real process under ``ulimit -f 4`` (4 KiB): SIGXFSZ is ignored, EFBIG is one line."""
    model = save(tiny_mlp(), workdir)
    before = snapshot(workdir)
    result = run_process(["scan", str(model), *FAST, "--quiet", *args], cwd=workdir, preexec=_limit_file_size(4096))
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = Outcome(result.returncode, result.stdout, result.stderr).stderr_lines
    assert len(lines) == 1 and lines[0].startswith("error:") and "too large" in lines[0], result.stderr
    assert snapshot(workdir) == before


def test_pruned_model_past_ulimit_f(workdir):
    model = save(tiny_mlp(width=64, layers=4), workdir)
    before = snapshot(workdir)
    result = run_process(["prune", str(model), *FAST, "--remove", "1", "--no-latency", "-o", "p.onnx"],
                         cwd=workdir, preexec=_limit_file_size(8192))
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = Outcome(result.returncode, result.stdout, result.stderr).stderr_lines
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert snapshot(workdir) == before


@pytest.fixture
def recorded(workdir):
    """Two recorded versions of a model in the workdir's default SQLite history."""
    for seed, label in ((0, "v1"), (1, "v2")):
        path = save(tiny_mlp(seed=seed), workdir, f"m{seed}.onnx")
        assert invoke("scan", path, *FAST, "--quiet", "--record", "m", "--label", label).exit_code == 0
        path.unlink()
    return workdir


@PENDING_HISTORY
@pytest.mark.parametrize("where", ["dev full", "full disk", "readonly folder"])
def test_history_plot_fails_cleanly(recorded, where, request):
    if where == "dev full":
        target = Path("/dev/full")
    else:
        target = request.getfixturevalue("full_disk" if where == "full disk" else "readonly_folder") / "plot.png"
    folder = target.parent if where != "dev full" else recorded
    before = snapshot(folder)
    assert_refused(invoke("history", "m", "--plot", target))
    assert snapshot(folder) == before


@PENDING_HISTORY
@pytest.mark.parametrize("where", ["dev full", "full disk"])
def test_diff_html_fails_cleanly(recorded, where, request):
    target = Path("/dev/full") if where == "dev full" else request.getfixturevalue("full_disk") / "diff.html"
    folder = target.parent if where != "dev full" else recorded
    before = snapshot(folder)
    assert_refused(invoke("diff", "m", "v1", "v2", "--html", target))
    assert snapshot(folder) == before


@pytest.mark.parametrize("command", ["scan", "prune"])
def test_missing_output_folders_created_only_on_success(workdir, command):
    """A command that fails leaves no empty folder behind; one that succeeds creates them."""
    from builders import REFUSED_MODELS

    bad = REFUSED_MODELS["truncated model"](workdir)
    good = save(tiny_mlp(), workdir, "good.onnx")
    args = (["--json", "new/deeper/out.json"] if command == "scan" else
            ["--remove", "1", "--no-latency", "-o", "new/deeper/p.onnx"])
    before = snapshot(workdir)
    assert_refused(invoke(command, bad, *FAST, *args))
    assert snapshot(workdir) == before
    outcome = invoke(command, good, *FAST, *args)
    assert outcome.exit_code == 0, outcome.stderr
    assert next((workdir / "new" / "deeper").iterdir()).name in {"out.json", "p.onnx"}


def test_atomic_writer_leaves_nothing_on_failure(tmp_path):
    """The writer itself: an exception mid-group removes every temporary file, renames none."""
    from redaudit import atomic

    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.staged_files() as files:
            files.stage(tmp_path / "a.txt", b"new")
            files.stage(tmp_path / "b.txt", b"new")
            files.stage(tmp_path / "new" / "c.txt", b"new")
            raise RuntimeError("disk gone")
    assert sorted(os.listdir(tmp_path)) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"
    atomic.write_text(tmp_path / "a.txt", "newer")
    assert sorted(os.listdir(tmp_path)) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "newer"


def test_atomic_writer_keeps_permissions_and_writes_through_symlinks(tmp_path):
    from redaudit import atomic

    target = tmp_path / "real.json"
    target.write_text("old")
    target.chmod(0o640)
    (tmp_path / "link.json").symlink_to(target)
    atomic.write_text(tmp_path / "link.json", "new")
    assert (tmp_path / "link.json").is_symlink() and target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
