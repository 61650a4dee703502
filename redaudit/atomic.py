"""Write output files whole or not at all.

Why: a report or a pruned model written in place is half a file when the disk fills up
(ENOSPC), the file-size limit is hit (EFBIG under ``ulimit -f``, with SIGXFSZ ignored by the
CLI) or the process is interrupted, and a half file looks like a result. Each file is written
to a temporary file in its target folder (same file system, so the rename is atomic), flushed
and fsynced, then renamed over the target only when every file of the group is complete. Any
failure, KeyboardInterrupt included, removes the temporary files and leaves the targets as
they were.

Targets that are not regular files (``/dev/null``, ``/dev/full``, a FIFO) are written directly:
renaming over a device node would replace it, and there is nothing to half-write.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO
from dataclasses import dataclass, field
from pathlib import Path

_TEMP_SUFFIX = ".tmp"


def _default_mode() -> int:
    """0666 minus the process umask, read without changing it (Linux exposes it in /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def _is_special(path: Path) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _named(error: OSError, target: Path) -> OSError:
    """The same error, naming the target rather than a temporary file (or nothing)."""
    return type(error)(error.errno, error.strerror or str(error), str(target)) if error.errno else error


@dataclass
class StagedFiles:
    """Files written to temporary names, renamed into place together by :meth:`commit`."""

    _staged: list[tuple[Path, Path]] = field(default_factory=list)
    _created: list[Path] = field(default_factory=list)

    def stage(self, path: str | os.PathLike[str], data: bytes) -> Path:
        """Write ``data`` for ``path`` now (to a temporary file beside it); returns the target."""
        with self.open(path) as handle:
            handle.write(data)
        return Path(os.path.realpath(path))

    @contextmanager
    def open(self, path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
        """A binary handle on a temporary file for ``path``, for a file written in pieces (a
        model's external data, copied tensor by tensor); flushed, fsynced and given the target's
        permissions when the block ends, renamed into place by :meth:`commit` in staging order."""
        target = Path(os.path.realpath(path))
        if _is_special(target):
            try:
                with open(target, "wb") as handle:
                    yield handle
            except OSError as error:
                raise _named(error, target) from None
            return
        try:
            self._make_folders(target.parent)
            descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TEMP_SUFFIX,
                                                     dir=target.parent)
        except OSError as error:
            raise _named(error, target) from None
        self._staged.append((Path(temporary), target))
        try:
            with os.fdopen(descriptor, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
                os.fchmod(handle.fileno(), _mode_for(target))
        except OSError as error:
            raise _named(error, target) from None

    def _make_folders(self, folder: Path) -> None:
        """Create missing folders, remembering them so that a discarded group removes them."""
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for created in reversed(missing):
            created.mkdir()
            self._created.append(created)

    def commit(self) -> list[Path]:
        """Rename every staged file over its target; returns the targets."""
        targets = []
        for temporary, target in self._staged:
            try:
                os.replace(temporary, target)
            except OSError as error:  # an immutable or vanished target: name it, not our temporary file
                raise _named(error, target) from None
            targets.append(target)
        for folder in {target.parent for target in targets}:
            _fsync_folder(folder)
        self._staged.clear()
        self._created.clear()
        return targets

    def discard(self) -> None:
        """Remove every temporary file not yet renamed."""
        for temporary, _ in self._staged:
            with suppress(OSError):
                temporary.unlink()
        for folder in reversed(self._created):
            with suppress(OSError):
                folder.rmdir()
        self._staged.clear()
        self._created.clear()


def _mode_for(target: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(target).st_mode)  # keep an existing file's permissions
    except OSError:
        return _default_mode()


def _fsync_folder(folder: Path) -> None:
    with suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextmanager
def staged_files() -> Iterator[StagedFiles]:
    """``with staged_files() as files: files.stage(p, data); ...`` — all renamed at the end, or
    none if anything in the block raises (the exception propagates)."""
    files = StagedFiles()
    try:
        yield files
        files.commit()
    except BaseException:
        files.discard()
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``; raises OSError naming ``path``."""
    with staged_files() as files:
        return files.stage(path, data)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Atomically replace ``path`` with ``text`` encoded as ``encoding``."""
    return write_bytes(path, text.encode(encoding))


@contextmanager
def temporary_folder(parent: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh folder inside ``parent`` (same file system as the targets), removed on exit
    whatever happens: for writers that must produce several files under fixed names."""
    folder = Path(tempfile.mkdtemp(prefix=".redaudit-", suffix=_TEMP_SUFFIX, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
