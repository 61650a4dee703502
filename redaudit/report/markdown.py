"""Compact GitHub-flavoured Markdown for a pull-request comment: ``diff --format md`` and
``check --format md``.

A comment is read in a narrow column between code review notes, so it is short: a verdict line,
MSRS before → after with each 95 % interval, the few layers whose redundancy changed most, and a
link to the full HTML report (a CI artifact URL, or the path the report was written to). Numbers
are written by :mod:`redaudit.report.numbers`, as in the terminal and the dashboard.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redaudit.report.numbers import fmt, interval_bounds, msrs_text, percent, signed

if TYPE_CHECKING:
    from redaudit.history.diff import LayerChange


def code(text: str) -> str:
    """``text`` as an inline code span that survives a table cell: a ``|`` is escaped (GitHub
    splits cells on it even inside code), backticks get a longer fence."""
    body = text.replace("|", "\\|")
    fence = "``" if "`" in body else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def _msrs(msrs: float | None, interval: Any) -> str:
    return f"**{msrs_text(msrs, spread=False)}** (95% CI {interval_bounds(interval)})"


def _changes_table(changes: Sequence[LayerChange], top: int) -> list[str]:
    shown = [change for change in changes if change.before is not None and change.after is not None][:top]
    if not shown:
        return []
    lines = ["| layer | redundancy before | after | Δ |", "|---|---:|---:|---:|"]
    lines += [f"| {code(c.name)} | {fmt(c.before, '.3f')} | {fmt(c.after, '.3f')} | {signed(c.delta)} |"
              for c in shown]
    return ["", f"Layers whose redundancy changed most (top {len(shown)}):", "", *lines]


def _link(report_url: str | None) -> list[str]:
    return ["", f"[Full HTML report]({report_url.replace(' ', '%20').replace(')', '%29')})"] if report_url else []


def _footer() -> list[str]:
    return ["", ("<sub>redaudit: MSRS is the soft count of layer pairs more alike than ε (CKA); "
                 "higher means more redundant layers.</sub>")]


def diff_markdown(diff: Any, *, top: int = 5, report_url: str | None = None) -> str:
    """A :class:`~redaudit.history.diff.ScanDiff` as a PR comment."""
    before, after = diff.before, diff.after
    if diff.msrs_delta is None:
        verdict = "MSRS undefined on one side"
    elif not diff.significant:
        verdict = "➖ MSRS unchanged within batch noise"
    else:
        verdict = "🔺 MSRS rose beyond batch noise" if diff.msrs_delta > 0 else "🔻 MSRS fell beyond batch noise"
    change = "" if diff.msrs_delta is None else f" ({signed(diff.msrs_delta)}" + (
        f", {percent(diff.msrs_change_pct)})" if diff.msrs_change_pct is not None else ")")
    lines = [f"### redaudit diff: {code(after.model_name)} {before.display} → {after.display}", "",
             f"**{verdict}**", "",
             (f"MSRS {_msrs(diff.msrs_before, before.summary.msrs_interval)} → "
              f"{_msrs(diff.msrs_after, after.summary.msrs_interval)}{change}"), "",
             (f"Layers {before.summary.layer_count} → {after.summary.layer_count}: "
              f"{len(diff.added)} added, {len(diff.removed)} removed")]
    lines += _changes_table(diff.changed, top)
    lines += [f"- forced: {difference}" for difference in diff.forced_differences]
    lines += ["", *[f"> {note}" for note in diff.notes]] if diff.notes else []
    return "\n".join(lines + _link(report_url) + _footer()) + "\n"


def check_markdown(outcome: Any, result: Any, *, changes: Sequence[LayerChange] = (), top: int = 5,
                   report_url: str | None = None) -> str:
    """A ``check`` verdict as a PR comment. With a baseline (``--against``) MSRS reads
    baseline → this scan and ``changes`` (:func:`redaudit.history.diff.changed_layers` of the
    baseline's and this scan's layers) gives the table; without one, the most redundant layers."""
    verdict = "✅ **PASS**" if outcome.passed else "❌ **FAIL**"
    model = code(str(result.model.path).rsplit("/", 1)[-1])
    lines = [f"### redaudit check: {model}", "", f"{verdict}: {outcome.reason}", ""]
    baseline = outcome.baseline
    if baseline is not None:
        lines.append(f"MSRS {_msrs(baseline.scan.msrs, baseline.scan.msrs_interval)} → "
                     f"{_msrs(result.msrs, result.msrs_interval)} ({percent(outcome.increase_pct)} vs {baseline})")
        lines += _changes_table(changes, top)
    else:
        lines.append(f"MSRS {_msrs(result.msrs, result.msrs_interval)}, {len(result.layers)} layers")
        rows = sorted((row for row in result.layer_rows() if row.redundancy is not None),
                      key=lambda row: -row.redundancy)[:top]
        if rows:
            lines += ["", f"Most redundant layers (top {len(rows)}):", "",
                      "| layer | redundancy | most similar | CKA |", "|---|---:|---|---:|"]
            lines += [f"| {code(row.name)} | {fmt(row.redundancy, '.3f')} | "
                      f"{code(row.most_similar) if row.most_similar else 'n/a'} | {fmt(row.most_similar_cka, '.3f')} |"
                      for row in rows]
    if not result.inputs_real:
        lines += ["", "> probe inputs were synthetic (random): pass real data with `--inputs` for meaningful numbers"]
    return "\n".join(lines + _link(report_url) + _footer()) + "\n"
