"""Errors as an API client reads them: job and query fields, not command-line flags.

The library words its errors for the command line (``--heal linear``, ``--force``), which is
where most of them are read. A client of the service sends JSON fields and query parameters
named like the options with underscores (``cka_batch`` for ``--cka-batch``), so every message
that leaves the service — a 4xx ``detail`` or a failed job's ``error`` — goes through
:func:`for_api` once, at the edge, instead of each library message knowing its reader.
The same pass keeps server paths (a worker's temporary folder, the blob store) out of them: an
absolute path is cut to its last part, the file's own name. (Uploads are checked with names the
client sent, service/checks.py; this is the net under everything else.)
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
#: An absolute path standing alone (after a space, a quote, a bracket or the start; not inside
#: a URL, where a ':' or '/' precedes it): its folders are dropped.
_PATH = re.compile(r"(?<![\w:/.~-])(?:/[^\s/'\"(),;]+)+/([^\s/'\"(),;]+)")
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def for_api(message: str) -> str:
    """``message`` with each ``--flag`` as the field (``flag_name``) a client sets instead, and
    each absolute path as its last part."""
    message = _PATH.sub(r"\1", message)
    for flag, field in _PHRASES.items():
        message = re.sub(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", field, message)
    return _FLAG.sub(lambda match: match.group(1).replace("-", "_"), message)
