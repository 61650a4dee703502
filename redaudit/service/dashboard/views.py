"""What each dashboard page shows, built as plain data from the history and the job table.

Numbers come from the same records the API returns (``service.history_io``) and are written by
``redaudit.report.numbers``, the functions the CLI's ``history`` and ``diff`` use, so a page,
``GET /api/v1/...`` and the terminal show the same digits. The per-layer table of a scan is
:meth:`ScanResult.layer_rows` of the scan's stored JSON report (every scan the service records
has one); scans recorded by the CLI into the same database fall back to their stored rows.
"""
from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from redaudit.core.result import LayerRow
from redaudit.history.diff import ScanDiff
from redaudit.history.records import ModelHistory, ScanSummary, StoredScan, VersionSummary, trend
from redaudit.report.json_report import TOP_PAIRS, scan_from_dict
from redaudit.report.numbers import fmt, interval_bounds, msrs_text, percent, share, signed
from redaudit.report.reading import MsrsReading
from redaudit.service import history_io
from redaudit.service.dashboard.svg import Chart, msrs_chart, sparkline
from redaudit.service.state import ServiceState

ARROWS = {"up": "↑", "down": "↓", "flat": "→", "?": "?", "": ""}


def title(version: VersionSummary) -> str:
    """How the CLI's ``history`` names a version: ``label (sha8)`` or ``sha8``."""
    return version.sha256[:8] if not version.label else f"{version.label} ({version.sha256[:8]})"


# ------------------------------------------------------------------------------------- models

@dataclass(frozen=True)
class ModelRow:
    name: str
    versions: int
    scans: int
    latest_msrs: str
    latest_scan_id: int | None
    spark: str


def models_page(state: ServiceState) -> list[ModelRow]:
    """One row per model: the same fields as ``GET /models`` (latest = last scan of the history)."""
    rows = []
    for name in history_io.model_names(state.engine):
        history = history_io.history(state.engine, name)
        scans = history.scans()
        latest = scans[-1][1] if scans else None
        rows.append(ModelRow(name, len(history.versions), len(scans),
                             msrs_text(latest.msrs, spread=False) if latest else "n/a",
                             latest.scan_id if latest else None, sparkline([s.msrs for _, s in scans])))
    return rows


# -------------------------------------------------------------------------------------- model

@dataclass(frozen=True)
class VersionRow:
    version: VersionSummary
    title: str
    latest: ScanSummary | None
    msrs: str
    ci: str  # the bootstrap interval of the latest scan's MSRS, as `history --scans` writes it
    log2: str
    arrow: str
    parent: str | None  # title of the parent version (pruned from)
    check: dict[str, Any] | None  # the latest check job's outcome for one of this version's scans


@dataclass(frozen=True)
class ModelPage:
    name: str
    rows: list[VersionRow]
    chart: Chart
    lineage: list[tuple[int, VersionRow]]  # (depth, row) in tree order: pruned children under parents
    checks: list[dict[str, Any]]
    scans: list[tuple[str, ScanSummary, str, str]]  # (version title, scan, msrs ± std, interval)


def _lineage(rows: list[VersionRow]) -> list[tuple[int, VersionRow]]:
    by_sha = {row.version.sha256: row for row in rows}
    children: dict[str | None, list[VersionRow]] = {}
    for row in rows:
        parent = row.version.parent_sha256 if row.version.parent_sha256 in by_sha else None
        children.setdefault(parent, []).append(row)
    ordered: list[tuple[int, VersionRow]] = []

    def walk(parent: str | None, depth: int) -> None:
        for row in children.get(parent, []):
            ordered.append((depth, row))
            walk(row.version.sha256, depth + 1)
    walk(None, 0)
    return ordered


def model_page(state: ServiceState, name: str) -> ModelPage:
    history: ModelHistory = history_io.history(state.engine, name)
    checks = [job for job in state.jobs.list(kind="check", model_name=name, limit=1000)]
    verdict_by_scan = {}
    for job in reversed(checks):  # oldest first, so the newest check of a scan wins
        if job["state"] == "succeeded" and job["scan_id"] is not None and job["outcome"]:
            verdict_by_scan[job["scan_id"]] = job["outcome"]
    titles = {version.sha256: title(version) for version in history.versions}
    rows, previous, scans = [], None, []
    for version in history.versions:
        latest = version.scans[-1] if version.scans else None
        verdicts = [verdict_by_scan[s.scan_id] for s in version.scans if s.scan_id in verdict_by_scan]
        rows.append(VersionRow(version, titles[version.sha256], latest,
                               msrs_text(latest.msrs, latest.msrs_std) if latest else "n/a",
                               interval_bounds(latest.msrs_interval) if latest else "n/a",
                               fmt(latest.log2_msrs, ".2f") if latest else "n/a",
                               ARROWS[trend(previous, latest)] if latest else "",
                               titles.get(version.parent_sha256) if version.parent_sha256 else None,
                               verdicts[-1] if verdicts else None))
        previous = latest or previous
        scans += [(titles[version.sha256], scan, msrs_text(scan.msrs, scan.msrs_std),
                   interval_bounds(scan.msrs_interval)) for scan in version.scans]
    chart = msrs_chart([(row.title, row.latest.msrs if row.latest else None,
                         row.latest.msrs_std if row.latest else None, row.msrs) for row in rows])
    return ModelPage(name, rows, chart, _lineage(rows), checks, scans)


# --------------------------------------------------------------------------------------- scan

@dataclass(frozen=True)
class ScanPage:
    scan: StoredScan
    msrs: str
    rows: tuple[LayerRow, ...]
    full_rows: bool  # rows carry runtime shapes and reductions (from the JSON report)
    pairs: list[tuple[str, str, str]]
    heatmap_png: str  # base64
    reading: MsrsReading  # scale, interval and sentence, as the scan's JSON report and HTML page show them
    prunes: list[dict[str, Any]] = field(default_factory=list)
    produced_by: dict[str, Any] | None = None  # the prune job whose output this scan measured


def _stored_rows(scan: StoredScan) -> tuple[LayerRow, ...]:
    return tuple(LayerRow(position=layer.position, name=layer.name, op=layer.op, node="", shape=layer.shape,
                          runtime_shape=(), reduced_axes=(), layout=None, layout_source="",
                          redundancy=layer.redundancy, most_similar=layer.most_similar,
                          most_similar_cka=layer.most_similar_cka, issue=layer.issue) for layer in scan.layers)


def _pairs_of(similarity: np.ndarray, names: list[str]) -> list[tuple[int, int, float]]:
    """The ``TOP_PAIRS`` most similar distinct pairs, as :meth:`ScanResult.top_pairs` orders them
    (used only for scans recorded without a JSON report)."""
    rows, cols = np.triu_indices(len(names), k=1)
    values = similarity[rows, cols]
    order = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")[:TOP_PAIRS]
    return [(int(rows[k]), int(cols[k]), float(values[k])) for k in order]


def _prune_view(job: dict[str, Any]) -> dict[str, Any]:
    outcome = job["outcome"] or {}
    candidates = [{**c, "similarity_text": fmt(c.get("similarity"), ".4f"),
                   "param_share_text": share(c.get("param_share")), "flop_share_text": share(c.get("flop_share"))}
                  for c in outcome.get("candidates", [])]
    params, msrs = outcome.get("params") or {}, outcome.get("msrs") or {}
    return {"job": job, "candidates": candidates, "removed": outcome.get("removed", []),
            "params_before": params.get("before"), "params_after": params.get("after"),
            "msrs_before": fmt(msrs.get("before"), ".2f"), "msrs_after": fmt(msrs.get("after"), ".2f")}


def scan_page(state: ServiceState, scan_id: int) -> ScanPage:
    scan = history_io.stored_scan(state.engine, scan_id)
    report = state.jobs.result_of_scan(scan_id)
    names = list(scan.layer_order)
    if report is not None:
        result = scan_from_dict(json.loads(report))
        rows, names = result.layer_rows(), result.layer_names
        top = result.top_pairs(TOP_PAIRS)
    else:
        result = None
        rows, top = _stored_rows(scan), _pairs_of(np.asarray(scan.similarity, dtype=np.float64), names)
    reading = history_io.stored_reading(scan, result)
    pairs = [(names[i], names[j], fmt(cka, ".3f")) for i, j, cka in top if math.isfinite(cka)]
    # The same picture as GET /scans/{id}/heatmap.png, inline: an <img> cannot send the API token.
    png = state.heatmaps.png(scan) if names else b""
    prunes, produced_by = [], None
    for job in state.jobs.list(kind="prune", model_name=scan.model_name, state="succeeded", limit=200):
        if job["scan_id"] == scan_id:
            produced_by = _prune_view(job)
        elif (job["outcome"] or {}).get("source_sha256") == scan.version.sha256:
            prunes.append(_prune_view(job))
    return ScanPage(scan, msrs_text(scan.summary.msrs, scan.summary.msrs_std), rows, report is not None, pairs,
                    base64.b64encode(png).decode("ascii"), reading, prunes, produced_by)


# --------------------------------------------------------------------------------------- diff

@dataclass(frozen=True)
class DiffRow:
    name: str
    status: str  # "both", "added", "removed"
    before: str
    after: str
    delta: str
    magnitude: float  # |Δ| for shading (0 when undefined)


def diff_rows(diff: ScanDiff) -> list[DiffRow]:
    """Layer-aligned: the after-scan's layer order, each layer found by name in the before-scan,
    then the layers only the before-scan has (where they were)."""
    changes = {change.name: change for change in diff.changed}
    before = {layer.name: layer for layer in diff.before.layers}
    rows = []
    for layer in diff.after.layers:
        change = changes.get(layer.name)
        if change is None:
            rows.append(DiffRow(layer.name, "added", "—", fmt(layer.redundancy, ".3f"), "", 0.0))
        else:
            delta = change.delta
            rows.append(DiffRow(layer.name, "both", fmt(change.before, ".3f"), fmt(change.after, ".3f"),
                                signed(delta), 0.0 if math.isnan(delta) else abs(delta)))
    rows += [DiffRow(name, "removed", fmt(before[name].redundancy, ".3f"), "—", "", 0.0) for name in diff.removed]
    return rows


def diff_summary(diff: ScanDiff) -> dict[str, str]:
    """The numbers of ``redaudit diff``'s first lines, written as it writes them."""
    return {"msrs_before": fmt(diff.msrs_before), "msrs_after": fmt(diff.msrs_after),
            "msrs_delta": signed(diff.msrs_delta, "+.4g"), "msrs_change": percent(diff.msrs_change_pct),
            "significant": "significant" if diff.significant else "within batch noise"}
