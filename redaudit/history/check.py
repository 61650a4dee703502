"""The CI gate: is a fresh scan's MSRS within an absolute bound and/or close to a recorded one?

Returns a :class:`CheckOutcome` (never exits): the CLI maps ``passed`` to exit 0 or 1 and prints
``reason``, one line either way, so a CI log says why it passed or failed.

``significant=True`` makes the increase gate ask for evidence, not a point estimate. MSRS is a
mean over probe batches, so two scans of the same file with other probes differ by a few percent;
a gate at +5 % then fails at random. With it, the gate fails only when the increase exceeds PCT
*and* the 95 % percentile bootstrap interval of the increase (both scans' batches resampled
independently, :func:`redaudit.core.bootstrap.bootstrap_increase`) lies entirely above PCT: the
batches are incompatible with an increase of PCT or less (a one-sided test at 2.5 %). This is a
test of the one quantity the limit is about, unlike "the two intervals do not overlap", which
ignores PCT's scaling and is far stricter than its nominal level. An interval needs
:data:`~redaudit.core.bootstrap.MIN_INTERVAL_BATCHES` batches per scan to mean anything; with fewer
the verdict says "too few batches to tell" and the point estimate decides.

The baseline is measured on the same probe as the scan (same input hash, same sample count)
unless the caller asks otherwise (``any_probe``): MSRS moves with the probe (the same file scanned
with 512 and with 2,560 samples differed by half), so a comparison across probes would call the
probe's effect the model's. On the same probe the probe's noise is shared by both scans, and the
point estimate is the model's change. The verdict names the baseline and the probe compared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from redaudit.core.bootstrap import IncreaseInterval, bootstrap_increase
from redaudit.core.result import ScanResult
from redaudit.errors import ConfigError
from redaudit.history.baseline import Baseline, probe_text, same_probe
from redaudit.history.errors import UnknownReferenceError
from redaudit.history.store import DbRef, open_store


def probe_note(baseline: Baseline, result: ScanResult) -> str:
    """Which probe the comparison used: one probe, or the two when ``any_probe`` allowed them to differ."""
    if same_probe(baseline.scan, result):
        return f"the same probe ({probe_text(result.input_hash, result.samples)})"
    return (f"another probe (baseline {probe_text(baseline.scan.input_hash, baseline.scan.samples)}; "
            f"this scan {probe_text(result.input_hash, result.samples)})")


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    reason: str
    msrs: float
    baseline: Baseline | None = None
    increase_pct: float | None = None
    increase_interval: IncreaseInterval | None = None  # with significant=True


def latest_comparable(db: DbRef, name: str, result: ScanResult, *, force: bool = False,
                      any_probe: bool = False) -> Baseline:
    """:meth:`HistoryStore.latest_comparable` for one call (``db`` as in ``record_scan``)."""
    with open_store(db) as store:
        return store.latest_comparable(name, result, force=force, any_probe=any_probe)


def increase_pct(before: float, after: float) -> float:
    if before > 0:
        return 100.0 * (after - before) / before
    return 0.0 if after <= before else math.inf


def validate_limits(max_msrs: float | None, against: str | None, max_increase: float | None,
                    significant: bool = False) -> None:
    """Refuse limits a gate cannot honestly compare against, before any scan runs.

    NaN compares false with everything, so ``--max-msrs nan`` used to pass every model.
    """
    if significant and max_increase is None:
        raise ConfigError("--significant qualifies an increase: use it with --against NAME --max-increase PCT")
    if max_msrs is None and against is None:
        raise ConfigError("give --max-msrs X and/or --against NAME --max-increase PCT")
    if (against is None) != (max_increase is None):
        raise ConfigError("--against NAME and --max-increase PCT go together")
    for option, value in (("--max-msrs", max_msrs), ("--max-increase", max_increase)):
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{option} must be a finite number, not {value}")
    if max_msrs is not None and max_msrs < 0:
        raise ConfigError(f"--max-msrs must be at least 0 (MSRS is never negative), not {max_msrs:g}")


def measurable_layers(result: ScanResult) -> int:
    """Layers that took part in MSRS: those with any finite similarity. A layer that is constant
    or non-finite in every batch has an all-NaN row and was left out."""
    matrix = np.asarray(result.similarity, dtype=np.float64)
    return int(np.isfinite(matrix).any(axis=1).sum()) if matrix.size else 0


def check_result(result: ScanResult, *, max_msrs: float | None = None, against: str | None = None,
                 max_increase: float | None = None, db=None, force: bool = False,
                 significant: bool = False, any_probe: bool = False) -> CheckOutcome:
    """Gate ``result`` on ``max_msrs`` and/or at most ``max_increase`` percent over ``against``
    (with ``significant``: an increase beyond the limit *and* beyond batch noise, module docstring).

    A scan that measured nothing fails: MSRS undefined (NaN), or fewer than two layers that
    were not degenerate (then MSRS is 0 by construction, which must not read as "no redundancy").
    """
    validate_limits(max_msrs, against, max_increase, significant)
    msrs = float(result.msrs)
    if not math.isfinite(msrs):
        return CheckOutcome(False, "MSRS is undefined: every probe batch was degenerate (constant or "
                                   "non-finite layers); check the model and the probe inputs", msrs)
    usable = measurable_layers(result)
    if usable < 2:
        return CheckOutcome(False, f"MSRS measured nothing: {len(result.layers) - usable} of "
                                   f"{len(result.layers)} layers are constant or non-finite in every "
                                   f"batch, so no pair of layers was compared; check the model and the "
                                   f"probe inputs", msrs)
    failures, passes = [], []
    if max_msrs is not None:
        text = f"MSRS {msrs:.4g} {'exceeds' if msrs > max_msrs else 'within'} --max-msrs {max_msrs:g}"
        (failures if msrs > max_msrs else passes).append(text)
    baseline, change, interval = None, None, None
    if against is not None:
        baseline = latest_comparable(db, against, result, force=force, any_probe=any_probe)
        base = baseline.scan.msrs
        if base is None:
            raise UnknownReferenceError(f"{baseline} has no MSRS (all batches degenerate); "
                                        f"record a valid baseline")
        change = increase_pct(base, msrs)
        text = (f"MSRS {msrs:.4g} is {change:+.1f}% vs {baseline} (MSRS {base:.4g}) on "
                f"{probe_note(baseline, result)}; limit +{max_increase:g}%")
        failed = change > max_increase
        if significant:
            interval = bootstrap_increase([math.nan if v is None else v for v in baseline.scan.msrs_batches],
                                          result.msrs_batches)
            failed, note = significant_increase(change, interval, max_increase)
            text += f"; {note}"
        (failures if failed else passes).append(text)
    if failures:
        return CheckOutcome(False, "; ".join(failures), msrs, baseline, change, interval)
    return CheckOutcome(True, "; ".join(passes), msrs, baseline, change, interval)


def significant_increase(change: float, interval: IncreaseInterval, max_increase: float) -> tuple[bool, str]:
    """(fails, why) for ``--significant``: the increase exceeds ``max_increase`` and so does the
    whole bootstrap interval of it; without an interval (too few batches) the point decides."""
    if not interval.defined:
        return change > max_increase, f"{interval.reason}, so the point estimate decides"
    shown = f"{interval.level:.0%} CI {interval.low:+.1f}% to {interval.high:+.1f}%"
    if change <= max_increase:
        return False, shown
    if interval.low > max_increase:
        return True, f"{shown}: above the limit beyond batch noise"
    return False, f"{shown}: above the limit but within batch noise"
