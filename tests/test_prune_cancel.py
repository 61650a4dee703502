"""A prune honours its caller's cancel in every pass, not only once it has ended: the cancel hook
is polled before every onnxruntime run of the scoring scan, healing calibration, verification,
latency and the MSRS scans, and between stages, so a stop asked during a 2.5 GB decoder's
minutes-long prune ends it at the next run, with ScanCancelled and no file written.

Deterministic: every onnxruntime run is counted where onnxruntime is called (``InferenceSession.run``,
which BatchRunner and the latency loops both call), the stage it ran in is read from the prune's
own progress reports, and the cancel turns true at a known run; no sleeps, no timings. A spec with
a thread count runs one scan lane, so runs happen one at a time and the stop lands exactly.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import prune_models as pm
import pytest

from redaudit.core.progress import ScanProgress
from redaudit.errors import ScanCancelled
from redaudit.prune import prune_model

#: 512 samples in CKA batches of 128: every pass runs several times (scans 4 batches, verification
#: and calibration several chunks, latency a warm-up and repeats); threads=1: one scan lane.
OPTIONS = {"samples": 512, "cka_batch": 128, "latency_repeats": 3, "threads": 1, "device": "cpu"}


class CountedRuns:
    """Counts onnxruntime runs and the cancel polls between them; ``stages[i]`` is the prune stage
    (its progress report, nested scan stages cut off) that run i + 1 ran in; ``unpolled`` lists the
    stages of runs no poll preceded since the run before."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop_after: int | None = None) -> None:
        self.count = 0
        self.polls_since_run = 0
        self.stop_after = stop_after
        self.stage = "start"
        self.stages: list[str] = []
        self.unpolled: list[str] = []
        original = ort.InferenceSession.run

        def counted(session, *args, **kwargs):
            if self.polls_since_run == 0:
                self.unpolled.append(self.stage)
            self.polls_since_run = 0
            self.count += 1
            self.stages.append(self.stage)
            return original(session, *args, **kwargs)
        monkeypatch.setattr(ort.InferenceSession, "run", counted)

    def progress(self, update: ScanProgress) -> None:
        self.stage = update.stage.split("/")[0]

    def cancel(self) -> bool:
        self.polls_since_run += 1
        return self.stop_after is not None and self.count >= self.stop_after


@pytest.fixture(scope="module")
def redundant_mlp(tmp_path_factory):
    """5 residual blocks; block 2's branch is exactly zero, block 4's is 1e-3 of normal."""
    path = tmp_path_factory.mktemp("model") / "mlp.onnx"
    onnx.save(pm.residual_mlp(5, branch_scale={2: 0.0, 4: 1e-3}), str(path))
    return path


def _prune(path, output, runs: CountedRuns, **options):
    return prune_model(path, output=output, progress=runs.progress, cancel=runs.cancel, **{**OPTIONS, **options})


#: The configurations whose every pass is checked: scoring by each policy that runs the model,
#: healing (one-shot and iterative) and the drift bound.
CONFIGURATIONS = {
    "bi, heal linear": {"remove": 2, "heal": "linear", "force": True},
    "cka": {"remove": 1, "policy": "cka"},
    "angular": {"remove": 2, "policy": "angular", "force": True},
    "greedy, max drift": {"max_drift": 1e-3, "policy": "greedy"},
    "iterative, heal linear": {"remove": 2, "iterative": True, "heal": "linear", "force": True},
}


@pytest.mark.parametrize("options", CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
def test_every_onnxruntime_run_of_a_prune_is_preceded_by_a_cancel_poll(redundant_mlp, tmp_path, monkeypatch,
                                                                        options):
    runs = CountedRuns(monkeypatch)
    result = _prune(redundant_mlp, tmp_path / "pruned.onnx", runs, **options)
    assert result.removed and (tmp_path / "pruned.onnx").is_file()
    assert runs.count > 10 and runs.unpolled == [], runs.unpolled


def test_latency_in_rounds_polls_before_every_run(redundant_mlp, tmp_path, monkeypatch):
    """A large model's latency (one session alive at a time, rounds of runs) polls as the
    alternating runs of a small one do."""
    from redaudit.prune import verify

    monkeypatch.setattr(verify, "ALTERNATE_RUNS_BELOW", 0)  # this small model measured as a large one
    runs = CountedRuns(monkeypatch)
    _prune(redundant_mlp, tmp_path / "pruned.onnx", runs, remove=1, measure_msrs=False)
    assert runs.stages.count("latency") >= 6 and runs.unpolled == [], runs.unpolled


#: The prune whose runs are stopped: healing, latency and MSRS before/after included.
STOPPED = {"remove": 2, "heal": "linear", "force": True}


@pytest.fixture(scope="module")
def reference_stages(redundant_mlp, tmp_path_factory) -> list[str]:
    """The stage of each run of the same prune, not cancelled."""
    with pytest.MonkeyPatch.context() as patched:
        runs = CountedRuns(patched)
        _prune(redundant_mlp, tmp_path_factory.mktemp("reference") / "pruned.onnx", runs, **STOPPED)
    return runs.stages


#: Where the stop lands: the first and a later run of each pass ("surgery" is healing's calibration;
#: the verification stage also runs the original once, in "similarity scan", for its reference).
PASSES = ("similarity scan", "surgery", "verification", "latency", "msrs before", "msrs after")


@pytest.mark.parametrize("which", ["first", "later"])
@pytest.mark.parametrize("stage", PASSES)
def test_a_cancel_stops_the_prune_at_the_next_run_of_any_pass(redundant_mlp, reference_stages, tmp_path,
                                                               monkeypatch, stage, which):
    stages = reference_stages
    in_stage = [run for run, name in enumerate(stages, start=1) if name == stage]
    assert len(in_stage) >= 3, (stage, stages)  # several runs: a later stop lands inside the pass
    stop_after = in_stage[0] if which == "first" else in_stage[len(in_stage) // 2]
    out = tmp_path / "out"
    out.mkdir()
    runs = CountedRuns(monkeypatch, stop_after)
    with pytest.raises(ScanCancelled):
        _prune(redundant_mlp, out / "pruned.onnx", runs, **STOPPED)
    # the run during which the cancel turned true ends; no other starts (one more at most, were two
    # ever in flight at once: with one scan lane they never are)
    assert stop_after <= runs.count <= stop_after + 1, (runs.count, stop_after, stage)
    assert runs.stages[-1] == stage
    assert list(out.iterdir()) == []  # no pruned model, no temporary file


def test_a_cancel_during_the_last_run_writes_nothing(redundant_mlp, reference_stages, tmp_path, monkeypatch):
    total = len(reference_stages)
    out = tmp_path / "out"
    out.mkdir()
    runs = CountedRuns(monkeypatch, total)
    with pytest.raises(ScanCancelled):
        _prune(redundant_mlp, out / "pruned.onnx", runs, **STOPPED)
    assert runs.count == total and runs.stage == "msrs after"  # every run made, and no "save"
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("cancel_at", ["surgery", "verification", "save"])
def test_a_cancel_between_stages_of_a_prune_without_runs_there(redundant_mlp, tmp_path, cancel_at):
    """The polls between stages: a cancel that turns true as a stage is announced stops the prune
    before that stage's work (surgery without healing runs no model; save runs none)."""
    stages: list[str] = []
    cancel: Callable[[], bool] = lambda: cancel_at in stages
    out = tmp_path / "out"
    out.mkdir()
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    with pytest.raises(ScanCancelled):
        prune_model(redundant_mlp, remove=1, output=out / "pruned.onnx", latency=False, measure_msrs=False,
                    inputs={"x": x}, samples=64, cka_batch=32, device="cpu",
                    progress=lambda update: stages.append(update.stage), cancel=cancel)
    assert stages[-1] == cancel_at
    assert list(out.iterdir()) == []
