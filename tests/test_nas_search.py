from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import onnx
import onnxruntime as ort
import optuna
import pytest

from redaudit.nas.data import load_dataset
from redaudit.nas.finalize import export_trial
from redaudit.nas.search import SearchConfig, run_search, trial_seed
from redaudit.nas.space import Architecture
from redaudit.nas.storage import NasStudyError, load_existing_study, open_storage
from redaudit.nas.train import predict_logits, train_candidate
from tests.nas_helpers import TINY_SPACE

pytestmark = pytest.mark.torch
pytest.importorskip("torch")

DONE = optuna.trial.TrialState.COMPLETE


@pytest.fixture(scope="module")
def digits():
    return load_dataset(None, seed=0)


class SpySampler(optuna.samplers.RandomSampler):
    """A seeded random sampler that records the values the study reports back to it."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.seen: list[list[float] | None] = []

    def after_trial(self, study, trial, state, values):
        self.seen.append(None if values is None else list(values))
        super().after_trial(study, trial, state, values)


def _config(objective: str = "redundancy-aware", **kwargs) -> SearchConfig:
    return SearchConfig(objective=objective, budget=2, seed=3, sampler="random", space=TINY_SPACE, **kwargs)


def test_trials_are_recorded_exported_and_reproducible(tmp_path, digits):
    db = f"sqlite:///{tmp_path / 'h.db'}"
    summary = run_search("s", 3, _config(), data=digits, db_url=db, artifact_dir=tmp_path / "art")
    assert (summary.trials_run, summary.complete, summary.failed) == (3, 3, 0)
    study = load_existing_study("s", open_storage(db))
    for trial in study.trials:
        attrs = trial.user_attrs
        assert trial.state == DONE and attrs["epochs"] == 2 and attrs["seed"] == trial_seed(3, trial.number)
        assert 0 <= attrs["val_accuracy"] <= 1 and attrs["msrs"] >= 0 and attrs["parameters"] > 0
        assert attrs["export_max_diff"] < 1e-4 and attrs["flops"] > 0 and attrs["latency_ms"] > 0
        assert attrs["layers"] == 1 + sum(attrs["architecture"]["depths"])
    # the artifact is the exact file that was scanned; it passes the checker and matches torch
    target = tmp_path / "t1.onnx"
    outcome = export_trial(study, 1, target, artifact_dir=tmp_path / "art")
    assert outcome.source == "artifact" and outcome.matches_record
    onnx.checker.check_model(onnx.load(target), full_check=True)
    trial = study.trials[1]
    retrained = train_candidate(Architecture.from_dict(trial.user_attrs["architecture"]), digits,
                                epochs=2, seed=trial.user_attrs["seed"])
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {"x": digits.validation.x})[0]
    np.testing.assert_allclose(onnx_logits, predict_logits(retrained, digits.validation.x), atol=1e-4)
    # without the artifact folder, export re-trains deterministically to the same bytes
    again = export_trial(study, 1, tmp_path / "t1b.onnx", artifact_dir=tmp_path / "empty")
    assert again.source == "retrained" and again.matches_record
    assert hashlib.sha256(target.read_bytes()).hexdigest() == again.sha256


@pytest.mark.parametrize("objective", ["redundancy-aware", "accuracy"])
def test_sampler_sees_the_chosen_objective(tmp_path, digits, objective):
    spy = SpySampler(seed=1)
    run_search("o", 3, _config(objective), data=digits, db_url=f"sqlite:///{tmp_path / 'h.db'}",
               artifact_dir=tmp_path / "art", sampler=spy)
    study = load_existing_study("o", open_storage(f"sqlite:///{tmp_path / 'h.db'}"))
    assert len(spy.seen) == 3
    for values, trial in zip(spy.seen, study.trials):
        if objective == "redundancy-aware":
            assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
            assert values == [trial.user_attrs["val_accuracy"], trial.user_attrs["msrs"]]
        else:
            assert study.directions == [optuna.study.StudyDirection.MAXIMIZE]
            assert values == [trial.user_attrs["val_accuracy"]]


def test_interrupt_leaves_a_consistent_study(tmp_path, digits):
    db = f"sqlite:///{tmp_path / 'h.db'}"

    def interrupt(number, stage, done, total):
        if number == 1 and stage == "train" and done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search("i", 5, _config(), data=digits, db_url=db, artifact_dir=tmp_path / "art", progress=interrupt)
    study = load_existing_study("i", open_storage(db))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    # the study continues where it stopped
    run_search("i", 1, _config(), data=digits, db_url=db, artifact_dir=tmp_path / "art")
    assert [t.state.name for t in load_existing_study("i", open_storage(db)).trials] == ["COMPLETE", "FAIL", "COMPLETE"]


def test_joining_with_other_settings_or_unknown_study_is_an_error(tmp_path, digits):
    db = f"sqlite:///{tmp_path / 'h.db'}"
    run_search("j", 1, _config(), data=digits, db_url=db, artifact_dir=tmp_path / "art")
    with pytest.raises(NasStudyError, match="budget"):
        run_search("j", 1, SearchConfig(budget=5, seed=3, sampler="random", space=TINY_SPACE), data=digits,
                   db_url=db, artifact_dir=tmp_path / "art")
    with pytest.raises(NasStudyError, match=r"no NAS study named 'nope'.*studies: j"):
        load_existing_study("nope", open_storage(db))


WORKER = textwrap.dedent("""
    import sys
    from redaudit.nas.search import SearchConfig, run_search
    from tests.nas_helpers import TINY_SPACE
    config = SearchConfig(budget=1, seed=0, sampler="tpe", space=TINY_SPACE)
    run_search(sys.argv[1], 3, config, db_url=sys.argv[2], artifact_dir=sys.argv[3], worker_id=int(sys.argv[4]))
""")


def _two_workers(name: str, db: str, artifacts: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, name, db, artifacts, str(worker)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for worker in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-2000:]


def _assert_no_duplicates(study) -> None:
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and all(t.state == DONE for t in trials)
    assert sorted(t.number for t in trials) == list(range(6))
    assert len({t._trial_id for t in trials}) == 6
    assert len({t.user_attrs["seed"] for t in trials}) == 6  # each trial number trained once
    # the workers' samplers are seeded apart: their first draws differ
    first = [t.params for t in sorted(trials, key=lambda t: t.datetime_start)[:2]]
    assert first[0] != first[1]


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study(tmp_path):
    db = f"sqlite:///{tmp_path / 'h.db'}"
    _two_workers("w", db, str(tmp_path / "art"))
    _assert_no_duplicates(load_existing_study("w", open_storage(db)))


@pytest.mark.slow
@pytest.mark.postgres
def test_two_worker_processes_share_one_postgres_study(tmp_path):
    db = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    try:
        storage = open_storage(db)
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    name = f"redaudit-nas-test-{uuid.uuid4().hex[:10]}"
    try:
        _two_workers(name, db, str(tmp_path / "art"))
        _assert_no_duplicates(load_existing_study(name, storage))
    finally:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass
