"""Writing an output file so that it is either complete or absent.

The bytes go to a temporary file in the target's own folder (same file system, so the final
``os.replace`` is atomic) and are renamed over the target only when fully written and synced;
any failure (full disk, ``ulimit -f``, read-only folder) removes the temporary file and raises
one :class:`OutputWriteError` line. A target that exists but is not a regular file
(``/dev/full``, a folder) is refused: renaming over a device node would replace it.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from redaudit.history.errors import OutputWriteError


def write_atomically(path: str | os.PathLike[str], data: bytes) -> Path:
    target = Path(path)
    if target.exists() and not target.is_file():
        raise OutputWriteError(f"cannot write {target}: it exists and is not a regular file; "
                               f"give the path of a file to create")
    folder = target.parent
    if not folder.is_dir():
        raise OutputWriteError(f"cannot write {target}: folder {folder} does not exist")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    except OSError as error:
        raise OutputWriteError(f"cannot write {target}: {_reason(error)}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(temporary, target)
    except OSError as error:
        _remove(temporary)
        raise OutputWriteError(f"cannot write {target}: {_reason(error)}") from None
    except BaseException:
        _remove(temporary)
        raise
    return target


def _reason(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return f"{error.strerror} (nothing was written)"
    return error.strerror or str(error)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

