"""After a search: export a trial's model, or retrain the chosen architecture for longer.

Export prefers the ONNX file the trial uploaded to the artifact store. Where the store is not
reachable (another machine without the shared folder), the trial is re-trained from its
stored architecture, seed and budget, which is deterministic for one torch build and thread
count; the outcome says whether the file is byte-identical to the recorded one, so a user
knows when the CPU or torch version made it differ.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redaudit import atomic
from redaudit.errors import ConfigError
from redaudit.nas.data import Dataset, load_dataset
from redaudit.nas.objective import CandidateRecord, evaluate_candidate
from redaudit.nas.search import CONFIG_ATTR, SearchConfig, trial_seed
from redaudit.nas.space import Architecture
from redaudit.nas.storage import NasStudyError, require_optuna, resolve_artifact_dir
from redaudit.nas.train import Progress


@dataclass(frozen=True)
class ExportOutcome:
    path: Path
    source: str  # "artifact" or "retrained"
    sha256: str
    matches_record: bool


def study_config(study: Any) -> SearchConfig:
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        raise NasStudyError(f"study {study.study_name!r} was not created by redaudit nas")
    return SearchConfig.from_dict(stored)


def finished_trial(study: Any, number: int) -> Any:
    optuna = require_optuna()
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise ConfigError(f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})")
    trial = trials[number]
    if trial.state != optuna.trial.TrialState.COMPLETE or "architecture" not in trial.user_attrs:
        raise ConfigError(f"trial {number} of {study.study_name!r} did not complete ({trial.state.name}); "
                          "pick a completed trial from: redaudit nas report " + study.study_name)
    return trial


def _check_data(study: Any, data: Dataset) -> None:
    expected = study.user_attrs[CONFIG_ATTR]["data"]["fingerprint"]
    if data.fingerprint != expected:
        raise NasStudyError(f"this data does not match the data study {study.study_name!r} was run on; "
                            "pass the same --data file")


def export_trial(study: Any, number: int, output: str | Path, *, artifact_dir: str | Path | None = None,
                 data_path: str | Path | None = None, progress: Progress | None = None) -> ExportOutcome:
    """Write trial ``number``'s ONNX model to ``output`` (artifact, else deterministic retrain)."""
    from optuna.artifacts import FileSystemArtifactStore, download_artifact

    trial = finished_trial(study, number)
    recorded = trial.user_attrs.get("onnx_sha256", "")
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    artifact_id = trial.user_attrs.get("artifact_id")
    store_dir = resolve_artifact_dir(artifact_dir)
    if artifact_id and (store_dir / artifact_id).exists():
        with atomic.temporary_folder(target.parent) as folder:  # never a half file at -o, nor none on failure
            download_artifact(artifact_store=FileSystemArtifactStore(str(store_dir)), artifact_id=artifact_id,
                              file_path=str(folder / target.name))
            atomic.write_bytes(target, (folder / target.name).read_bytes())
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        return ExportOutcome(target, "artifact", digest, digest == recorded)
    config = study_config(study)
    data = load_dataset(data_path, seed=config.split_seed)
    _check_data(study, data)
    record = evaluate_candidate(Architecture.from_dict(trial.user_attrs["architecture"]), data,
                                epochs=int(trial.user_attrs["epochs"]), seed=int(trial.user_attrs["seed"]),
                                train_settings=config.space.train, scan_settings=config.scan,
                                progress=progress)
    atomic.write_bytes(target, record.model_bytes)
    return ExportOutcome(target, "retrained", record.onnx_sha256, record.onnx_sha256 == recorded)


def retrain_trial(study: Any, number: int, epochs: int, *, data_path: str | Path | None = None,
                  output: str | Path | None = None, progress: Progress | None = None) -> CandidateRecord:
    """Full retraining of a trial's architecture for ``epochs`` (same seed rule), scanned and costed."""
    trial = finished_trial(study, number)
    config = study_config(study)
    data = load_dataset(data_path, seed=config.split_seed)
    _check_data(study, data)
    record = evaluate_candidate(Architecture.from_dict(trial.user_attrs["architecture"]), data,
                                epochs=epochs, seed=trial_seed(config.seed, number),
                                train_settings=config.space.train, scan_settings=config.scan,
                                progress=progress)
    if output is not None:
        atomic.write_bytes(output, record.model_bytes)
    return record

