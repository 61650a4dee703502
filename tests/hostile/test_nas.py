"""Issue 22 F: nas. The space file is a schema checked before any work (types, ranges, the size of
its largest candidate); the plot is written whole or not at all; --budget is bounded."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import assert_refused, invoke, snapshot

pytest.importorskip("torch")
pytestmark = pytest.mark.torch

SPACES = {
    "widths of text": 'widths = ["a"]',
    "train not a table": "train = 5",
    "kernels of text": 'kernels = ["x"]',
    "learning rate nan": "[train]\nlearning_rate = nan",
    "learning rate inf": "[train]\nlearning_rate = inf",
    "weight decay negative": "[train]\nweight_decay = -1.0",
    "batch size 0": "[train]\nbatch_size = 0",
    "batch size text": '[train]\nbatch_size = "64"',
    "widths 200000": "widths = [200000]",
    "largest candidate too big": "stages = 3\ndepth = [16, 16]\nwidths = [1024]\nkernels = [7]",
    "stages as text": 'stages = "2"',
    "depth with text": 'depth = [1, "2"]',
    "residual of ints": "residual = [1]",
    "families a string": 'families = "cnn"',
    "widths empty": "widths = []",
    "widths bool": "widths = [true]",
}


@pytest.mark.parametrize("case", list(SPACES))
def test_bad_space_file_is_refused_before_any_work(workdir, case):
    (workdir / "space.toml").write_text(SPACES[case] + "\n")
    before = snapshot(workdir)
    outcome = invoke("nas", "run", "--space", "space.toml", "--trials", "1", "--budget", "1", "--sampler", "random",
                     "--db", workdir / "nas.db", "--artifacts", workdir / "art")
    assert_refused(outcome, "search space")
    assert snapshot(workdir) == before


@pytest.mark.parametrize("budget", ["999999999999", "1001", "0"])
def test_budget_out_of_range_is_refused(workdir, budget):
    before = snapshot(workdir)
    assert_refused(invoke("nas", "run", "--trials", "1", "--budget", budget, "--db", workdir / "nas.db"), "--budget")
    assert snapshot(workdir) == before


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    (folder / "space.toml").write_text('families = ["cnn"]\ndepth = [1, 1]\nwidths = [4]\nkernels = [3]\n')
    outcome = invoke("nas", "run", "--study", "s", "--space", folder / "space.toml", "--trials", "2", "--budget", "1",
                     "--sampler", "random", "--db", folder / "nas.db", "--artifacts", folder / "art")
    assert outcome.exit_code == 0, outcome.stderr
    return folder / "nas.db"


def _mount(folder: Path, options: str) -> None:
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=False, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")


@pytest.mark.parametrize("where", ["/dev/full", "full disk", "read-only folder"])
def test_report_plot_that_cannot_be_written(study, tmp_path, where):
    target = Path(where)
    folder = None
    if where != "/dev/full":
        folder = tmp_path / "mnt"
        _mount(folder, "size=64k" if where == "full disk" else "size=64k,ro")
        if where == "full disk":
            (folder / "filler").write_bytes(b"\0" * (60 * 1024))
        target = folder / "front.png"
    try:
        before = snapshot(folder) if folder else {}
        outcome = invoke("nas", "report", "s", "--db", study, "--plot", target)
        after = snapshot(folder) if folder else {}
    finally:
        if folder:
            subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)
    assert_refused(outcome, str(target))
    assert "plot:" not in outcome.stdout
    assert after == before  # no 0-byte PNG, no temporary file


def test_report_and_export_tolerance_nan_is_refused(study, workdir):
    before = snapshot(workdir)
    assert_refused(invoke("nas", "report", "s", "--db", study, "--tolerance", "nan", "--no-plot"), "--tolerance")
    assert_refused(invoke("nas", "export", "s", "--db", study, "--tolerance", "nan", "-o", "x.onnx"), "--tolerance")
    assert snapshot(workdir) == before


def test_export_onto_the_study_database_is_refused(study, workdir):
    before = study.read_bytes()
    assert_refused(invoke("nas", "export", "s", "--trial", "0", "-o", study, "--db", study), "would destroy")
    assert study.read_bytes() == before


@pytest.mark.parametrize("signum", [2, 15], ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_trial_leaves_no_trial_running(tmp_path, signum):
    """The signal lands in the first trial's training (pause point ``work``); the trial is
    recorded FAILED, the command says the study is consistent and exits 130 / 143."""
    import optuna
    from test_signals import _signal_at

    (tmp_path / "space.toml").write_text('families = ["cnn"]\ndepth = [1, 1]\nwidths = [4]\nkernels = [3]\n')
    result = _signal_at("work", ["nas", "run", "--study", "s", "--space", "space.toml", "--trials", "2", "--budget", "1",
                                 "--sampler", "random", "--db", str(tmp_path / "nas.db"), "--artifacts", "art"],
                        tmp_path, signum)
    assert result.returncode == (143 if signum == 15 else 130), result.stderr
    assert "Traceback" not in result.stderr and "study 's' is consistent" in result.stderr
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'nas.db'}")
    states = [trial.state.name for trial in study.get_trials(deepcopy=False)]
    assert "RUNNING" not in states and states == ["FAIL"], states
