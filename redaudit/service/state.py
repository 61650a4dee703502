"""The objects one running service shares: settings, database engine, job and blob stores."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from redaudit.history.db import make_engine
from redaudit.history.schema import ensure_schema
from redaudit.service.archives import ArchiveLimits
from redaudit.service.jobs import JobStore
from redaudit.service.settings import ServiceSettings
from redaudit.service.storage import BlobStore


@dataclass
class ServiceState:
    settings: ServiceSettings
    engine: Engine
    jobs: JobStore
    blobs: BlobStore
    #: Wakes whatever runs jobs: the embedded pool, or a Celery task sent to the job's queue.
    dispatch: Callable[[str, str], None] = field(default=lambda job_id, queue: None)

    @property
    def limits(self) -> ArchiveLimits:
        s = self.settings
        return ArchiveLimits(s.max_upload_bytes, s.max_archive_members, s.max_compression_ratio)

    @classmethod
    def open(cls, settings: ServiceSettings) -> "ServiceState":
        """Open (and create or check the schema of) the database; create the blob folder."""
        engine = make_engine(settings.db)
        ensure_schema(engine, create=True)
        return cls(settings, engine, JobStore(engine, settings.lease_s, settings.max_attempts),
                   BlobStore(settings.blob_dir))
