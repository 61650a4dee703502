"""Errors of the scan history: all are user-fixable, so all are :class:`RedauditError`.

Each message is one line that says what to do (upgrade the schema, fix the URL, pick another
reference), because the CLI prints ``str(error)`` and nothing else.
"""
from __future__ import annotations

from redaudit.errors import RedauditError


class HistoryError(RedauditError):
    """Base of every history-database problem."""


class DatabaseUnavailableError(HistoryError):
    """The database cannot be opened or reached (bad URL, server down, corrupt file)."""


class NotAHistoryDatabaseError(HistoryError):
    """The database holds tables, but not redaudit's: refuse to write into a foreign file."""


class SchemaOutdatedError(HistoryError):
    """The database's schema revision is not the one this redaudit needs."""


class UnknownReferenceError(HistoryError):
    """A model name, version label, hash prefix or scan id matches nothing (or too much)."""


class IncompatibleScansError(HistoryError):
    """Two scans were measured with settings that change MSRS, so comparing them misleads."""


class LabelInUseError(HistoryError):
    """A label is already attached to another version of the same model."""


class InvalidNameError(HistoryError):
    """A model name or label is empty, too long or not one line."""


class SameScanError(HistoryError):
    """``diff`` was asked to compare a version (or a scan) with itself."""


class OutputWriteError(HistoryError):
    """A plot or report file cannot be written (read-only folder, full disk, not a file)."""
