"""Scan history in a SQL database (SQLite by default, PostgreSQL by URL).

The API is :class:`HistoryStore` (one engine per database, one transaction per operation):
record a scan (or a pruned model with its original), read a model's history, resolve/load
scans, diff two scans, find a baseline for ``check``, manage the schema. The module-level
functions do the same for one call each. See docs/history.md.
"""
from __future__ import annotations

from redaudit.history.check import CheckOutcome, check_result, latest_comparable
from redaudit.history.db import make_engine, resolve_url
from redaudit.history.schema import upgrade
from redaudit.history.diff import ScanDiff, config_differences, config_of_result, diff_scans
from redaudit.history.errors import (DatabaseUnavailableError, HistoryError, IncompatibleScansError,
                                     InvalidNameError, LabelInUseError, NotAHistoryDatabaseError,
                                     SameScanError, SchemaOutdatedError, UnknownReferenceError)
from redaudit.history.records import ModelHistory, ScanSummary, StoredScan, VersionSummary
from redaudit.history.store import (HistoryStore, diff_references, load_scan, model_history, open_store,
                                    record_pruned, record_scan, resolve_scan)
from redaudit.history.writes import Recorded

__all__ = [
    "HistoryStore", "open_store", "Recorded", "record_scan", "record_pruned", "model_history",
    "resolve_scan", "load_scan", "diff_scans", "diff_references", "check_result",
    "latest_comparable", "config_differences", "config_of_result", "make_engine", "resolve_url",
    "upgrade", "CheckOutcome", "ScanDiff", "ModelHistory", "ScanSummary", "StoredScan",
    "VersionSummary", "HistoryError", "DatabaseUnavailableError", "NotAHistoryDatabaseError",
    "SchemaOutdatedError", "UnknownReferenceError", "IncompatibleScansError", "LabelInUseError",
    "InvalidNameError", "SameScanError",
]
