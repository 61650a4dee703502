"""Content-addressed blob store: uploads streamed to disk, hashed on the way, moved into place.

Bytes arrive in a staging file beside the store (same filesystem, so the final ``os.replace`` is
atomic); the sha256 and the size are computed while streaming and the size limit is enforced
then, so an oversized upload is cut off at the limit rather than stored and measured. A blob's
path is its hash: the same bytes uploaded twice are stored once.
"""
from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from redaudit.errors import RedauditError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class UploadError(RedauditError):
    """An upload was refused; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # raised in a check process, re-raised in the API with its status
        return type(self), (str(self), self.status)


@dataclass(frozen=True)
class Staged:
    """Bytes received but not yet accepted: validate, then :meth:`BlobStore.commit` or discard."""

    path: Path
    sha256: str
    size_bytes: int


def is_sha256(text: str) -> bool:
    return bool(_SHA256.match(text or ""))


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.staging = self.root / "staging"
        self.staging.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise UploadError(f"{sha256[:80]!r} is not a sha256 (64 lowercase hex digits)", 404)
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return is_sha256(sha256) and self.path(sha256).is_file()

    async def receive(self, chunks: AsyncIterator[bytes], limit: int, what: str) -> Staged:
        """Stream ``chunks`` to a staging file; refuse (413) as soon as ``limit`` is passed."""
        target = self.staging / uuid.uuid4().hex
        digest, size = hashlib.sha256(), 0
        try:
            with open(target, "wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise UploadError(f"{what} is larger than the server's limit of {limit:,} bytes; "
                                          "raise serve --max-upload-size if you trust it", 413)
                    digest.update(chunk)
                    handle.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        if size == 0:
            target.unlink(missing_ok=True)
            raise UploadError(f"{what} is empty; send the file's bytes as the request body", 400)
        return Staged(target, digest.hexdigest(), size)

    def commit(self, staged: Staged) -> Path:
        final = self.path(staged.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file():
            staged.path.unlink(missing_ok=True)
        else:
            os.replace(staged.path, final)
        return final

    def put_file(self, source: Path) -> tuple[str, int]:
        """Copy a file written on this machine (a pruned model) into the store."""
        digest = hashlib.sha256()
        target = self.staging / uuid.uuid4().hex
        size = 0
        with open(source, "rb") as reader, open(target, "wb") as writer:
            while chunk := reader.read(1 << 20):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
        self.commit(Staged(target, digest.hexdigest(), size))
        return digest.hexdigest(), size

    @staticmethod
    def discard(staged: Staged) -> None:
        staged.path.unlink(missing_ok=True)
