"""Everything ``redaudit serve`` and ``redaudit worker`` can be told, in one frozen object.

Defaults make the single-machine service: the history's default SQLite file, blobs in the user
data dir, one in-process worker, no broker. Limits default to the CLI's (a model may be 2 GiB).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from redaudit.core.spec import DEFAULT_MAX_UPLOAD_BYTES


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("redaudit")) / "service"


@dataclass(frozen=True)
class ServiceSettings:
    """``db`` as the history accepts it (URL, path or None for ``$REDAUDIT_DB``/the default)."""

    db: str | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    #: Bytes one upload may have (model, bundle or inputs); also the unpacked size of a bundle.
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    #: Files one bundle may hold: a model with thousands of external-data files is refused.
    max_archive_members: int = 1000
    #: Uncompressed / compressed above this (for members over 1 MiB) is an archive bomb.
    max_compression_ratio: float = 200.0
    public_read: bool = False
    broker: str | None = None
    #: Embedded worker processes (0: none; jobs wait for Celery workers or another serve).
    workers: int = 1
    #: A running job whose worker sent no heartbeat for this long is presumed dead.
    lease_s: float = 60.0
    #: Attempts before a job whose workers keep dying is marked failed.
    max_attempts: int = 2
    #: How often idle embedded workers and the lease reaper look at the job table.
    poll_s: float = 0.5

    @property
    def limits(self) -> "ArchiveLimits":
        from redaudit.service.archives import ArchiveLimits

        return ArchiveLimits(self.max_upload_bytes, self.max_archive_members, self.max_compression_ratio)

    @property
    def blob_dir(self) -> Path:
        return Path(self.data_dir) / "blobs"
