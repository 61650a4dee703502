"""Text views of a model's history: one row per version (rich table), or every scan.

The every-scan view is plain aligned text on purpose: rich measures and wraps every cell, which
costs about a millisecond per row (over a second for 1,000 scans); fixed-width lines cost
nothing and still read as a table.
"""
from __future__ import annotations

import math

from rich import box
from rich.table import Table
from rich.text import Text

from redaudit.history.records import ModelHistory, ScanSummary, VersionSummary, trend
from redaudit.report.numbers import fmt as _fmt, interval_bounds, msrs_text

ARROWS = {"up": "↑", "down": "↓", "flat": "→", "?": "?", "": ""}
COLOURED = {"up": "[red]↑[/red]", "down": "[green]↓[/green]", "flat": "→", "?": "?", "": ""}


def _msrs(scan: ScanSummary, spread: bool = True) -> str:
    """The shared MSRS format (the dashboard writes the same digits)."""
    return msrs_text(scan.msrs, scan.msrs_std, spread)


def _count(number: int) -> str:
    """1234567 -> 1.23M: parameter counts fit a narrow column."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.3g}{unit}"
    return str(number)


def shown(text: str) -> str:
    """A stored name or label as text that cannot act on the terminal: control characters
    (an ESC starting a colour or cursor code, recorded before names were checked) written as
    escapes like ``\\x1b``. Names are also passed to rich as plain text, never as markup."""
    return "".join(character if character.isprintable() else
                   character.encode("unicode_escape").decode("ascii") for character in text)


def _title(version: VersionSummary, aliases: bool = True) -> str:
    """``v1 (0c46d239)``, with aliases: ``v1 (0c46d239) aka v2, v3`` (labels of the same bytes)."""
    title = version.sha256[:8] if not version.label else f"{shown(version.label)} ({version.sha256[:8]})"
    return title + (f" aka {', '.join(map(shown, version.aliases))}" if aliases and version.aliases else "")


def _alias_lines(history: ModelHistory) -> list[str]:
    return [f"{shown(version.short)} aka {', '.join(map(shown, version.aliases))} (same file)"
            for version in history.versions if version.aliases]


def _log2(scan: ScanSummary) -> str:
    """log2(MSRS), or "—" for MSRS 0 (no redundant pair: log2 has no value, never "-inf")."""
    return "—" if scan.msrs_is_zero else _fmt(scan.log2_msrs, ".2f")


ZERO_NOTE = "—: MSRS 0 (no redundant pair), log2 undefined"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def versions_table(history: ModelHistory) -> Table:
    """One row per version: its latest scan's MSRS, the trend against the previous version's."""
    table = Table(title=Text(f"{shown(history.name)}: {len(history.versions)} versions, {len(history.scans())} scans"),
                  box=box.SIMPLE_HEAD)
    table.add_column("version", overflow="ellipsis", no_wrap=True)
    widths = {"scans": 5, "last scan": 10, "MSRS": 7, "log2": 5, "": 1, "layers": 6, "params": 6}
    for column, width in widths.items():
        table.add_column(column, justify="left" if column == "last scan" else "right", no_wrap=True,
                         min_width=width)
    previous = None
    for version in history.versions:
        latest = version.scans[-1]
        table.add_row(Text(_title(version, aliases=False)), str(len(version.scans)), latest.created_at.strftime("%Y-%m-%d"),
                      _msrs(latest, spread=False), _log2(latest),
                      COLOURED[trend(previous, latest)],
                      str(latest.layer_count), _count(version.parameter_count))
        previous = latest
    notes = _alias_lines(history)
    if any(version.scans[-1].msrs_is_zero for version in history.versions):
        notes.append(ZERO_NOTE)
    if notes:
        table.caption = Text("\n".join(notes))
        table.caption_justify = "left"
    return table


def scan_lines(history: ModelHistory) -> list[str]:
    """Every scan, oldest version first; the trend compares each scan with the row above."""
    header = ("version", "scan", "recorded (UTC)", "MSRS", "95% CI", "log2", "", "layers", "params")
    rows, previous = [], None
    for version in history.versions:
        for index, scan in enumerate(version.scans):
            rows.append((_title(version) if index == 0 else "", str(scan.scan_id),
                         scan.created_at.strftime("%Y-%m-%d %H:%M"), _msrs(scan),
                         interval_bounds(scan.msrs_interval), _log2(scan), ARROWS[trend(previous, scan)],
                         str(scan.layer_count), f"{version.parameter_count:,}"))
            previous = scan
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {0, 2, 4}

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(row, widths))).rstrip()

    title = f"{shown(history.name)}: {len(history.versions)} versions, {len(rows)} scans"
    zero = [ZERO_NOTE] if any(scan.msrs_is_zero for _, scan in history.scans()) else []
    return [title, line(header), "  ".join("─" * w for w in widths), *map(line, rows), *zero]


def history_to_dict(history: ModelHistory) -> dict:
    out, previous = {"model": history.name, "versions": []}, None
    for version in history.versions:
        scans = []
        for scan in version.scans:
            scans.append({"scan_id": scan.scan_id, "created_at": scan.created_at.isoformat(),
                          "label": scan.label, "msrs": _finite(scan.msrs), "msrs_std": _finite(scan.msrs_std),
                          "msrs_ci": scan.msrs_interval.to_dict(),
                          "log2_msrs": _finite(scan.log2_msrs), "layers": scan.layer_count,
                          "samples": scan.samples, "seed": scan.seed, "micro_batch": scan.micro_batch,
                          "unit": scan.unit, "trend": trend(previous, scan),
                          "redaudit_version": scan.redaudit_version, "config": scan.config})
            previous = scan
        out["versions"].append({"sha256": version.sha256, "label": version.label,
                                "aliases": list(version.aliases),
                                "size_bytes": version.size_bytes, "parameters": version.parameter_count,
                                "created_at": version.created_at.isoformat(), "path": version.path,
                                "parent_sha256": version.parent_sha256, "scans": scans})
    return out
