"""How numbers are written wherever a person reads them: terminal, dashboard, reports.

One function per kind of number, so the CLI's ``history``/``diff`` and the service dashboard
print the same digits for the same value (a reader comparing the two must never see 1.23 here
and 1.234 there). Missing values (None, NaN) are written ``n/a``, never ``nan``; log2 of MSRS 0 stays ``-inf``.
"""
from __future__ import annotations

import math


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: float | None, spec: str = ".4g") -> str:
    """``value`` in ``spec`` (a format spec: ``.4g``, ``.3f``, ``+.3f``), or ``n/a``."""
    return "n/a" if _missing(value) else format(value, spec)


def msrs_text(msrs: float | None, std: float | None = None, spread: bool = True) -> str:
    """MSRS with three decimals (a soft pair count: 0.001 is as fine as it gets useful), and its
    batch-to-batch spread as `` ±0.012`` when asked and known."""
    text = fmt(msrs, ".3f")
    return text + (f" ±{std:.3f}" if spread and not _missing(std) else "")


def signed(value: float | None, spec: str = "+.3f") -> str:
    """A change, with its sign (``+0.120``, ``-0.031``); one that rounds to zero is written
    without a sign (``0.000``, never ``-0.000``: a sign with no digit behind it claims a direction
    the digits do not show)."""
    return _unsigned_zero(fmt(value, spec))


def percent(value: float | None) -> str:
    """A relative change already in percent, signed, one decimal: ``+2.5%`` (``0.0%`` as above)."""
    return "n/a" if _missing(value) else _unsigned_zero(f"{value:+.1f}") + "%"


def _unsigned_zero(text: str) -> str:
    return text.lstrip("+-") if text[:1] in "+-" and not text.strip("+-0.") else text


def share(fraction: float | None) -> str:
    """A fraction (0..1) of the whole, as ``12.5%``."""
    return "n/a" if _missing(fraction) else f"{100 * fraction:.1f}%"


def batches_text(count: int) -> str:
    return f"{count:,} batch" + ("" if count == 1 else "es")


def interval_bounds(interval) -> str:
    """The bounds of a :class:`~redaudit.core.bootstrap.MeanInterval` as ``[7.621, 8.252]`` (three
    decimals, as :func:`msrs_text`); when undefined, the batches it had (``4 batches``: fewer than an
    interval needs) or ``n/a``."""
    if interval is None or not interval.defined:
        return batches_text(interval.batches) if interval is not None and interval.batches else "n/a"
    return f"[{interval.low:.3f}, {interval.high:.3f}]"


def interval_text(interval) -> str:
    """``95% CI [7.621, 8.252]``, or ``no CI (4 batches; needs 10)`` / ``no CI`` when undefined."""
    if interval is None or not interval.defined:
        if interval is None or not interval.batches:
            return "no CI"
        from redaudit.core.bootstrap import MIN_INTERVAL_BATCHES

        return f"no CI ({batches_text(interval.batches)}; needs {MIN_INTERVAL_BATCHES})"
    return f"{100 * interval.level:g}% CI {interval_bounds(interval)}"
