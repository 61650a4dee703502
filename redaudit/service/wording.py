"""Errors as an API client reads them: job and query fields, not command-line flags.

The library words its errors for the command line (``--heal linear``, ``--force``), which is
where most of them are read. A client of the service sends JSON fields and query parameters
named like the options with underscores (``cka_batch`` for ``--cka-batch``), so every message
that leaves the service — a 4xx ``detail`` or a failed job's ``error`` — goes through
:func:`for_api` once, at the edge, instead of each library message knowing its reader.
"""
from __future__ import annotations

import re

#: Flags whose API form is a value, not a name: what the client sets.
_PHRASES = {
    "--heal linear": 'heal="linear"',
    "--heal attention": 'heal="attention"',
    "--force": "force=true",
    "--any-probe": "any_probe=true",
    "--significant": "significant=true",
    "--iterative": "iterative=true",
    "--list": "list_only=true",
}
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def for_api(message: str) -> str:
    """``message`` with each ``--flag`` as the field (``flag_name``) a client sets instead."""
    for flag, field in _PHRASES.items():
        message = re.sub(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", field, message)
    return _FLAG.sub(lambda match: match.group(1).replace("-", "_"), message)
