"""Which recorded scan a fresh one is compared with: the latest scan of a model measured with
comparable settings (:func:`redaudit.history.diff.config_differences`) and, unless asked
otherwise, on the same probe (input hash and samples; :mod:`redaudit.history.check` says why).

Pure: it reads a loaded :class:`ModelHistory`, never the database. The store
(:meth:`HistoryStore.latest_comparable`) and the CI gate (``check_result``) build on it.
"""
from __future__ import annotations

from dataclasses import dataclass

from redaudit.core.result import ScanResult
from redaudit.history.diff import config_differences, config_of_result, refuse_if_incompatible
from redaudit.history.errors import IncompatibleScansError, UnknownReferenceError
from redaudit.history.records import ModelHistory, ScanSummary, VersionSummary


@dataclass(frozen=True)
class Baseline:
    model_name: str
    version: VersionSummary
    scan: ScanSummary

    def __str__(self) -> str:
        return f"{self.model_name} {self.scan.label or self.version.short} (scan {self.scan.scan_id})"


def probe_text(input_hash: str, samples: int) -> str:
    """A probe as a verdict names it: the first 12 hex digits of its input hash and its samples."""
    return f"inputs {input_hash[:12]}, {samples:,} samples"


def same_probe(scan: ScanSummary, result: ScanResult) -> bool:
    return scan.input_hash == result.input_hash and scan.samples == result.samples


def latest_comparable_in(history: ModelHistory, result: ScanResult, *, force: bool = False,
                         any_probe: bool = False) -> Baseline:
    """The most recent scan in ``history`` measured with settings comparable to ``result``'s and
    on the same probe (input hash and samples; module docstring) — any probe with ``any_probe``.

    With ``force``, the most recent scan whatever its settings and probe.
    """
    name = history.name
    scans = sorted(history.scans(), key=lambda pair: (pair[1].created_at, pair[1].scan_id))
    if not scans:
        raise UnknownReferenceError(f"{name!r} has no recorded scans")
    key = config_of_result(result)
    comparable = [(version, scan) for version, scan in scans if force or not config_differences(scan.config, key)]
    if not comparable:
        version, scan = scans[-1]
        refuse_if_incompatible(config_differences(scan.config, key),
                               f"this scan and every recorded scan of {name!r} (latest: scan {scan.scan_id})")
        raise AssertionError("unreachable: differences were found above")
    for version, scan in reversed(comparable):
        if force or any_probe or same_probe(scan, result):
            return Baseline(name, version, scan)
    version, scan = comparable[-1]
    raise IncompatibleScansError(
        f"no recorded scan of {name!r} was measured on this probe ({probe_text(result.input_hash, result.samples)}); "
        f"the latest comparable one, scan {scan.scan_id}, used {probe_text(scan.input_hash, scan.samples)}: "
        f"scan with the same inputs, --samples and --seed, or pass --any-probe to compare across probes")
