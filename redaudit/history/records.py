"""Plain read-side records of the history: what queries return, detached from any session.

Returned objects never reach back into the database, so the CLI can render them after the
session closed and tests can compare them as values.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from typing import Any

import numpy as np

from redaudit.core.bootstrap import MeanInterval, bootstrap_increase, bootstrap_mean
from redaudit.core.spec import ScanConfig


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes even for timezone-aware columns; we store UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def matrix_to_npy(matrix: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(matrix, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def npy_to_matrix(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


def result_config(values: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide whether two scans' MSRS can be compared, normalised.

    ``ScanConfig.RESULT_KEYS`` plus whether the probe inputs were real: real and synthetic inputs
    measure different things even on the same model.
    """
    normalised = {key: values.get(key) for key in ScanConfig.RESULT_KEYS}
    normalised["taps"] = list(normalised.get("taps") or [])
    for key in ("epsilon", "beta"):
        if normalised.get(key) is not None:
            normalised[key] = float(normalised[key])
    normalised["inputs_real"] = bool(values.get("inputs_real"))
    return normalised


@dataclass(frozen=True)
class ScanSummary:
    """One scan row as ``history`` shows it (no layers, no matrix: cheap to list by thousands)."""

    scan_id: int
    created_at: datetime
    label: str | None
    msrs: float | None
    msrs_std: float | None
    layer_count: int
    samples: int
    seed: int
    input_hash: str
    redaudit_version: str
    total_s: float | None
    config: dict[str, Any]  # result_config(): the comparability key
    msrs_batches: tuple[float | None, ...] = ()  # MSRS per probe batch as recorded (None: NaN batch)
    micro_batch: int | None = None  # samples per onnxruntime run; None: recorded before revision 0005
    unit: str | None = None  # what one IR is ("residual block", "decoder layer"); None: before 0005

    @cached_property
    def msrs_interval(self) -> MeanInterval:
        """The bootstrap interval of MSRS over the stored batches, computed on read by the same
        function as a fresh scan's (so old rows have one too, and no column can disagree)."""
        return bootstrap_mean([math.nan if value is None else value for value in self.msrs_batches])

    @property
    def log2_msrs(self) -> float | None:
        """log2(MSRS); None when MSRS is undefined or 0 (no redundant pair: log2 has no value,
        and ``-inf`` is not something to print or plot). See :attr:`msrs_is_zero`."""
        if self.msrs is None or self.msrs <= 0:
            return None
        return math.log2(self.msrs)

    @property
    def msrs_is_zero(self) -> bool:
        return self.msrs is not None and self.msrs <= 0


@dataclass(frozen=True)
class VersionSummary:
    sha256: str
    label: str | None
    size_bytes: int
    parameter_count: int
    created_at: datetime
    path: str
    parent_sha256: str | None
    scans: tuple[ScanSummary, ...] = ()
    aliases: tuple[str, ...] = ()  # labels given to the same bytes after ``label``

    @property
    def short(self) -> str:
        return self.label or self.sha256[:12]


@dataclass(frozen=True)
class ModelHistory:
    name: str
    versions: tuple[VersionSummary, ...]

    def scans(self) -> list[tuple[VersionSummary, ScanSummary]]:
        return [(version, scan) for version in self.versions for scan in version.scans]


@dataclass(frozen=True)
class LayerRecord:
    position: int
    name: str
    op: str
    shape: tuple
    redundancy: float | None
    most_similar: str | None
    most_similar_cka: float | None
    issue: str | None


@dataclass(frozen=True)
class StoredScan:
    """A scan read back whole: summary, its version, every setting, layers and matrix."""

    model_name: str
    version: VersionSummary
    summary: ScanSummary
    settings: dict[str, Any]  # the full ScanConfig.to_dict() as recorded, plus run facts
    layers: tuple[LayerRecord, ...] = ()
    layer_order: tuple[str, ...] = ()
    similarity: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    warnings: tuple[str, ...] = ()  # what the scan warned about, as it printed them (level fallback, ...)

    @property
    def scan_id(self) -> int:
        return self.summary.scan_id

    @property
    def display(self) -> str:
        """How a user names this scan: ``label`` or hash prefix, plus the scan id."""
        return f"{self.summary.label or self.version.short} (scan {self.scan_id})"


#: Changes smaller than this share of the earlier MSRS read as "flat" even when the batches
#: resolve them: identical constant batches have a zero-width interval, and a 0.1 % move is no news.
FLAT_SHARE = 0.01


def change_beyond_noise(before: ScanSummary, after: ScanSummary) -> bool:
    """Whether MSRS moved beyond batch noise between two scans with defined MSRS.

    The same test as ``check --significant`` without a limit: the 95 % bootstrap interval of the
    relative change (:func:`~redaudit.core.bootstrap.bootstrap_increase`, each scan's batches
    resampled) excludes 0. Twice the combined per-batch std, the earlier rule, measured the spread
    of single batches — √n times the uncertainty of their mean. With too few batches on either side
    there is no interval and the point estimate decides. Either way a change under
    :data:`FLAT_SHARE` of the earlier MSRS is not counted.
    """
    delta = after.msrs - before.msrs
    if abs(delta) <= FLAT_SHARE * abs(before.msrs):
        return False
    interval = bootstrap_increase(_batches(before), _batches(after))
    if not interval.defined:
        return True
    return interval.low > 0 or interval.high < 0


def _batches(scan: ScanSummary) -> list[float]:
    return [math.nan if value is None else value for value in scan.msrs_batches] or [scan.msrs]


def trend(before: ScanSummary | None, after: ScanSummary) -> str:
    """"up", "down" or "flat" (:func:`change_beyond_noise` says no), "" without a predecessor,
    "?" when either MSRS is undefined."""
    if before is None:
        return ""
    if before.msrs is None or after.msrs is None:
        return "?"
    if not change_beyond_noise(before, after):
        return "flat"
    return "up" if after.msrs > before.msrs else "down"
