"""The objects one running service shares: settings, database engine, job and blob stores."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from redaudit.history.db import make_engine
from redaudit.history.schema import ensure_schema
from redaudit.service.archives import ArchiveLimits
from redaudit.service.checks import CheckPool
from redaudit.service.heatmaps import HeatmapCache
from redaudit.service.jobs import JobStore
from redaudit.service.settings import ServiceSettings
from redaudit.service.storage import BlobStore


@dataclass
class ServiceState:
    settings: ServiceSettings
    engine: Engine
    jobs: JobStore
    blobs: BlobStore
    #: Processes that run upload checks off the API's interpreter (started at the first upload).
    checks: CheckPool = field(default_factory=CheckPool)
    #: Wakes whatever runs jobs: the embedded pool, or a Celery task sent to the job's queue.
    dispatch: Callable[[str, str], None] = field(default=lambda job_id, queue: None)
    #: Recorded scans' heatmaps, drawn once each (the scan page and GET /scans/{id}/heatmap.png).
    heatmaps: HeatmapCache = field(default_factory=HeatmapCache)

    @property
    def limits(self) -> ArchiveLimits:
        return self.settings.limits

    @classmethod
    def open(cls, settings: ServiceSettings) -> "ServiceState":
        """Open (and create or check the schema of) the database; create the blob folder."""
        engine = make_engine(settings.db)
        ensure_schema(engine, create=True)
        return cls(settings, engine, JobStore(engine, settings.lease_s, settings.max_attempts),
                   BlobStore(settings.blob_dir))
