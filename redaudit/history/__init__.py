"""Scan history in a SQL database (SQLite by default, PostgreSQL by URL).

The public API: record a scan, read a model's history, resolve/load scans, diff two scans, gate
a fresh scan (``check``), and manage the schema (``upgrade``). See docs/history.md.
"""
from __future__ import annotations

from redaudit.history.check import CheckOutcome, check_result, latest_comparable
from redaudit.history.db import make_engine, resolve_url, upgrade
from redaudit.history.diff import ScanDiff, config_differences, config_of_result, diff_references, diff_scans
from redaudit.history.errors import (DatabaseUnavailableError, HistoryError, IncompatibleScansError,
                                     LabelInUseError, NotAHistoryDatabaseError, SchemaOutdatedError,
                                     UnknownReferenceError)
from redaudit.history.records import ModelHistory, ScanSummary, StoredScan, VersionSummary
from redaudit.history.store import load_scan, model_history, record_scan, resolve_scan

__all__ = [
    "record_scan", "model_history", "resolve_scan", "load_scan", "diff_scans", "diff_references",
    "check_result", "latest_comparable", "config_differences", "config_of_result", "make_engine",
    "resolve_url", "upgrade", "CheckOutcome", "ScanDiff", "ModelHistory", "ScanSummary",
    "StoredScan", "VersionSummary", "HistoryError", "DatabaseUnavailableError",
    "NotAHistoryDatabaseError", "SchemaOutdatedError", "UnknownReferenceError",
    "IncompatibleScansError", "LabelInUseError",
]
