"""The dashboard: server-rendered pages over the history and the job table, shipped in the
package (Jinja2 templates, one stylesheet, one small script) so it works offline — no CDN, no
external fonts. :func:`mount` adds it to the service's app under ``/ui``."""
from __future__ import annotations

from redaudit.service.dashboard.routes import mount

__all__ = ["mount"]
