"""Compare two recorded scans: MSRS change, layers added or removed, layers whose redundancy moved.

Comparing MSRS across scans is only meaningful when the settings that shape it match
(``ScanConfig.RESULT_KEYS`` and real-vs-synthetic inputs); :func:`config_differences` is the one
place that decides, used by ``diff`` and by ``check --against``. Differences that do not change
what MSRS measures (sample count, seed, input hash) become notes, not refusals.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redaudit.core.result import ScanResult
from redaudit.history.errors import IncompatibleScansError
from redaudit.history.records import StoredScan, change_beyond_noise, result_config


@dataclass(frozen=True)
class ConfigDifference:
    key: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.key} {self.before!r} vs {self.after!r}"


def config_of_result(result: ScanResult) -> dict[str, Any]:
    """The comparability key of a fresh (unrecorded) scan, as :func:`result_config` builds it."""
    return result_config({**result.config.to_dict(), "inputs_real": result.inputs_real})


def config_differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[ConfigDifference]:
    """Settings that change MSRS and differ between two comparability keys (empty: comparable)."""
    a, b = result_config(dict(before)), result_config(dict(after))
    return [ConfigDifference(key, a[key], b[key]) for key in a if a[key] != b[key]]


def refuse_if_incompatible(differences: list[ConfigDifference], what: str) -> None:
    if differences:
        listed = "; ".join(str(d) for d in differences)
        raise IncompatibleScansError(f"{what} were measured with settings that change MSRS ({listed}); "
                                     f"rescan with matching settings or pass --force")


@dataclass(frozen=True)
class LayerChange:
    name: str
    before: float | None
    after: float | None

    @property
    def delta(self) -> float:
        if self.before is None or self.after is None:
            return float("nan")
        return self.after - self.before


@dataclass(frozen=True)
class ScanDiff:
    before: StoredScan
    after: StoredScan
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[LayerChange, ...]  # layers in both, largest |redundancy change| first
    forced_differences: tuple[ConfigDifference, ...]  # non-empty only with force=True
    notes: tuple[str, ...]

    @property
    def msrs_before(self) -> float | None:
        return self.before.summary.msrs

    @property
    def msrs_after(self) -> float | None:
        return self.after.summary.msrs

    @property
    def msrs_delta(self) -> float | None:
        if self.msrs_before is None or self.msrs_after is None:
            return None
        return self.msrs_after - self.msrs_before

    @property
    def msrs_change_pct(self) -> float | None:
        """Relative change in percent; None when undefined (MSRS missing, or 0 before)."""
        if self.msrs_delta is None or not self.msrs_before:
            return None
        return 100.0 * self.msrs_delta / self.msrs_before

    @property
    def significant(self) -> bool:
        """Whether MSRS moved beyond batch noise (:func:`~redaudit.history.records.change_beyond_noise`)."""
        if self.msrs_delta is None:
            return False
        return change_beyond_noise(self.before.summary, self.after.summary)

    def to_dict(self) -> dict[str, Any]:
        def side(scan: StoredScan) -> dict[str, Any]:
            return {"scan_id": scan.scan_id, "sha256": scan.version.sha256,
                    "label": scan.summary.label or scan.version.label, "msrs": scan.summary.msrs,
                    "msrs_std": scan.summary.msrs_std, "layers": scan.summary.layer_count,
                    "parameters": scan.version.parameter_count}

        return {"model": self.after.model_name, "before": side(self.before), "after": side(self.after),
                "msrs_delta": self.msrs_delta, "msrs_change_pct": self.msrs_change_pct,
                "significant": self.significant, "layers_added": list(self.added),
                "layers_removed": list(self.removed),
                "redundancy_changes": [{"layer": c.name, "before": c.before, "after": c.after,
                                        "delta": c.delta} for c in self.changed],
                "forced_config_differences": [str(d) for d in self.forced_differences],
                "notes": list(self.notes)}


def changed_layers(before: Mapping[str, float | None], after: Mapping[str, float | None]) -> tuple[LayerChange, ...]:
    """Redundancy per layer name before and after → the layers in both, matched by tensor name,
    largest |change| first (undefined changes last). The one matching rule of ``diff``,
    ``check --format md`` and the Model Explorer diff overlay."""
    changed = [LayerChange(name, before[name], value) for name, value in after.items() if name in before]
    changed.sort(key=lambda change: -abs(change.delta) if not math.isnan(change.delta) else 0.0)
    return tuple(changed)


def diff_scans(before: StoredScan, after: StoredScan, *, force: bool = False) -> ScanDiff:
    """Diff two loaded scans; refuses incompatible settings unless ``force``."""
    differences = config_differences(before.summary.config, after.summary.config)
    if not force:
        refuse_if_incompatible(differences, f"{before.display} and {after.display}")
    before_layers = {layer.name: layer.redundancy for layer in before.layers}
    after_layers = {layer.name: layer.redundancy for layer in after.layers}
    added = tuple(name for name in after_layers if name not in before_layers)
    removed = tuple(name for name in before_layers if name not in after_layers)
    changed = changed_layers(before_layers, after_layers)
    notes = []
    if before.version.sha256 == after.version.sha256:
        notes.append(f"both scans measure the same file (sha256 {after.version.sha256[:12]}): "
                     f"any difference is measurement noise")
    for key, label in (("samples", "sample counts"), ("seed", "seeds"), ("input_hash", "probe inputs")):
        a, b = getattr(before.summary, key), getattr(after.summary, key)
        if a != b:
            shown = (a[:12], b[:12]) if key == "input_hash" else (a, b)
            notes.append(f"{label} differ ({shown[0]} vs {shown[1]})")
    return ScanDiff(before=before, after=after, added=added, removed=removed, changed=changed,
                    forced_differences=tuple(differences), notes=tuple(notes))
