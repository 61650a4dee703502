"""The search loop on Optuna: one study per search, trials in the shared SQL database.

Objectives: ``redundancy-aware`` is a two-objective study (maximise validation accuracy,
minimise MSRS), so the sampler sees MSRS as a value; ``accuracy`` is the standard
single-objective NAS (maximise validation accuracy) and records MSRS only as a user
attribute. Both use the same seeded sampler family (TPE by default; NSGA-II and random on
request) so that, at equal trial budgets, only the objective differs.

Several processes may call :func:`run_search` on one study: Optuna hands out trial numbers
from the database, TPE's constant liar keeps concurrent workers from piling onto one point,
and each worker seeds its sampler with ``seed + 7919 * worker_id``. A trial whose parameters
repeat a finished trial reuses that trial's measurements instead of training again.
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redaudit.nas.data import Dataset, load_dataset
from redaudit.nas.objective import ScanSettings, evaluate_candidate
from redaudit.nas.space import MAX_EPOCHS, SearchSpace
from redaudit.nas.storage import NasStudyError, open_storage, require_optuna, resolve_artifact_dir

OBJECTIVES = ("redundancy-aware", "accuracy")
SAMPLERS = ("tpe", "nsga2", "random")
CONFIG_ATTR = "redaudit_nas"
TrialProgress = Callable[[int, str, int, int], None]  # (trial number, stage, done, total)


@dataclass(frozen=True)
class SearchConfig:
    """Everything that makes two trials comparable; stored on the study and checked on join."""

    objective: str = "redundancy-aware"
    budget: int = 12
    seed: int = 0
    split_seed: int = 0
    sampler: str = "tpe"
    space: SearchSpace = field(default_factory=SearchSpace)
    scan: ScanSettings = field(default_factory=ScanSettings)

    def __post_init__(self) -> None:
        from redaudit.errors import ConfigError

        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        if not 1 <= self.budget <= MAX_EPOCHS:
            raise ConfigError(f"--budget must be 1..{MAX_EPOCHS} epochs, got {self.budget}")

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "budget": self.budget, "seed": self.seed,
                "split_seed": self.split_seed, "sampler": self.sampler,
                "space": self.space.to_dict(), "scan": asdict(self.scan)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchConfig":
        return cls(objective=data["objective"], budget=int(data["budget"]), seed=int(data["seed"]),
                   split_seed=int(data["split_seed"]), sampler=data["sampler"],
                   space=SearchSpace.from_dict(data["space"]), scan=ScanSettings(**data["scan"]))


@dataclass(frozen=True)
class SearchSummary:
    study_name: str
    trials_run: int
    complete: int
    failed: int


def trial_seed(seed: int, number: int) -> int:
    """Training seed of trial ``number``: fixed by the study seed, independent of the worker."""
    return (seed * 1_000_003 + number) % (2**31 - 1)


def make_sampler(config: SearchConfig, worker_id: int = 0) -> Any:
    optuna = require_optuna()
    seed = config.seed + 7919 * worker_id
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, constant_liar=True)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(name: str, config: SearchConfig, data: Dataset, *, db_url: str | None = None,
               sampler: Any = None, worker_id: int = 0) -> Any:
    """Create the study or join it; joining with a different configuration or data is an error."""
    optuna = require_optuna()
    storage = open_storage(db_url)
    directions = ["maximize", "minimize"] if config.objective == "redundancy-aware" else ["maximize"]
    study = optuna.create_study(study_name=name, storage=storage, directions=directions,
                                sampler=sampler or make_sampler(config, worker_id), load_if_exists=True)
    wanted = {**config.to_dict(), "data": {"name": data.name, "fingerprint": data.fingerprint}}
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        study.set_user_attr(CONFIG_ATTR, wanted)
        study.set_metric_names(["val_accuracy", "msrs"][:len(directions)])
    elif stored != wanted:
        changed = sorted(key for key in wanted if stored.get(key) != wanted[key])
        raise NasStudyError(f"study {name!r} was created with different settings ({', '.join(changed)}); "
                            "use the same options and data, or a new --study name")
    return study


def _duplicate_of(trial: Any, study: Any) -> Any:
    """A finished trial with the same parameters, whose measurements this trial can reuse."""
    optuna = require_optuna()
    for other in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if other.params == trial.params and "val_accuracy" in other.user_attrs:
            return other
    return None


def run_search(name: str, trials: int, config: SearchConfig, *, data: Dataset | None = None,
               db_url: str | None = None, artifact_dir: str | Path | None = None,
               worker_id: int = 0, sampler: Any = None, progress: TrialProgress | None = None,
               on_trial: Callable[[Any], None] | None = None) -> SearchSummary:
    """Run ``trials`` more trials of study ``name`` from this process.

    Ctrl-C (KeyboardInterrupt) inside a trial is recorded by Optuna as a FAILED trial before it
    propagates, so an interrupted study has no half-written or phantom RUNNING trials.
    """
    optuna = require_optuna()
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    data = data if data is not None else load_dataset(None, seed=config.split_seed)
    study = open_study(name, config, data, db_url=db_url, sampler=sampler, worker_id=worker_id)
    store = FileSystemArtifactStore(str(resolve_artifact_dir(artifact_dir)))
    aware = config.objective == "redundancy-aware"

    def objective(trial: Any) -> Any:
        arch = config.space.suggest(trial)
        previous = _duplicate_of(trial, study)
        if previous is not None:
            for key, value in previous.user_attrs.items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("duplicate_of", previous.number)
            return tuple(previous.values) if aware else previous.values[0]
        seed = trial_seed(config.seed, trial.number)
        record = evaluate_candidate(
            arch, data, epochs=config.budget, seed=seed, train_settings=config.space.train,
            scan_settings=config.scan,
            progress=(lambda stage, done, total: progress(trial.number, stage, done, total)) if progress else None)
        for key, value in record.attrs().items():
            trial.set_user_attr(key, value)
        with tempfile.TemporaryDirectory(prefix="redaudit-nas-") as folder:
            path = Path(folder) / f"trial-{trial.number}.onnx"
            path.write_bytes(record.model_bytes)
            artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                                          mimetype="application/onnx")
        trial.set_user_attr("artifact_id", artifact_id)
        if aware and not math.isfinite(record.msrs):
            trial.set_user_attr("fail_reason", "MSRS is NaN (a block output is constant on every probe batch)")
            return float("nan"), float("nan")
        return (record.val_accuracy, record.msrs) if aware else record.val_accuracy

    before = len(study.get_trials(deepcopy=False))
    callbacks = [lambda _study, frozen: on_trial(frozen)] if on_trial else []
    try:
        study.optimize(objective, n_trials=trials, callbacks=callbacks, gc_after_trial=False)
    finally:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        complete = sum(s == optuna.trial.TrialState.COMPLETE for s in states)
        failed = sum(s == optuna.trial.TrialState.FAIL for s in states)
    return SearchSummary(study_name=name, trials_run=len(states) - before, complete=complete, failed=failed)
