"""Unpacking an uploaded model bundle (.zip or .tar[.gz|.bz2|.xz]) without trusting it.

The policy is the CLI's external-data policy applied to archive members: relative names only,
no ``..``, no absolute paths or drive letters, no links or device files, at most a configured
number of members and bytes. Archive bombs are refused twice: by the sizes the archive declares
(and their ratio to the compressed sizes, for zip) before anything is written, and by counting
the bytes actually written, for archives that lie about their sizes (and for compressed tars,
which declare nothing up front).
"""
from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from redaudit.service.storage import UploadError

_CHUNK = 1 << 20
_RATIO_FLOOR = 1 << 20  # below 1 MiB, high ratios are normal (zeros in a small tensor)


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int
    max_members: int
    max_ratio: float


def _safe_name(name: str) -> PurePosixPath:
    clean = name.replace("\\", "/")
    path = PurePosixPath(clean)
    if not clean or clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        raise UploadError(f"bundle member {name!r} has an absolute path; pack files relative to the model's folder")
    if ".." in path.parts:
        raise UploadError(f"bundle member {name!r} points outside the bundle (..); pack only the model's folder")
    return path


def _copy_limited(source, target: Path, declared: int, budget: list[int], name: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(target, "wb") as handle:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            budget[0] -= len(chunk)
            if written > declared or budget[0] < 0:
                raise UploadError(f"bundle member {name!r} unpacks to more than it declares or than the "
                                  "server's size limit (archive bomb?); refused", 413)
            handle.write(chunk)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError):
        return False


def extract_bundle(archive: Path, folder: Path, limits: ArchiveLimits) -> list[Path]:
    """Unpack ``archive`` into ``folder`` (empty); returns the regular files written."""
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, folder, limits)
    if _is_tar(archive):
        return _extract_tar(archive, folder, limits)
    raise UploadError("bundle is neither a .zip nor a .tar archive; pack the model and its external data "
                      "with zip or tar", 415)


def _extract_zip(archive: Path, folder: Path, limits: ArchiveLimits) -> list[Path]:
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [info for info in bundle.infolist() if not info.is_dir()]
            _check_count(len(members), limits)
            total = 0
            for info in members:
                _safe_name(info.filename)
                kind = stat.S_IFMT(info.external_attr >> 16)  # 0: made by a tool that records no type
                if kind and kind != stat.S_IFREG:
                    raise UploadError(f"bundle member {info.filename!r} is a link or special file; "
                                      "pack regular files only")
                total += info.file_size
                if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
                    raise UploadError(f"bundle member {info.filename!r} expands {info.file_size / max(info.compress_size, 1):,.0f}x "
                                      "(archive bomb?); refused", 413)
            if total > limits.max_bytes:
                raise UploadError(f"bundle unpacks to {total:,} bytes, above the server's limit of "
                                  f"{limits.max_bytes:,}", 413)
            budget, written = [limits.max_bytes], []
            for info in members:
                target = folder / _safe_name(info.filename)
                with bundle.open(info) as source:
                    _copy_limited(source, target, info.file_size, budget, info.filename)
                written.append(target)
            return written
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as error:
        raise UploadError(f"bundle is a damaged zip archive ({type(error).__name__}); re-create it") from None


def _extract_tar(archive: Path, folder: Path, limits: ArchiveLimits) -> list[Path]:
    written, budget, count = [], [limits.max_bytes], 0
    try:
        with tarfile.open(archive, mode="r:*") as bundle:
            for member in bundle:  # streamed: members are checked before their bytes are read
                if member.isdir():
                    _safe_name(member.name)
                    continue
                count += 1
                _check_count(count, limits)
                _safe_name(member.name)
                if not member.isreg():
                    raise UploadError(f"bundle member {member.name!r} is a link or special file; "
                                      "pack regular files only")
                if member.size > budget[0]:
                    raise UploadError(f"bundle unpacks to more than the server's limit of "
                                      f"{limits.max_bytes:,} bytes", 413)
                source = bundle.extractfile(member)
                target = folder / _safe_name(member.name)
                _copy_limited(source, target, member.size, budget, member.name)
                written.append(target)
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        raise UploadError(f"bundle is a damaged tar archive ({type(error).__name__}); re-create it") from None
    return written


def _check_count(count: int, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise UploadError(f"bundle holds more than {limits.max_members:,} files; pack the model and its "
                          "external data only", 413)


def check_npz_archive(path: Path, limits: ArchiveLimits) -> None:
    """Refuse an .npz whose arrays would unpack past the limit before numpy reads a byte of it."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError):
        raise UploadError("inputs are not an .npz archive; save them with numpy.savez") from None
    _check_count(len(infos), limits)
    total = 0
    for info in infos:
        total += info.file_size
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise UploadError(f"inputs member {info.filename!r} expands {info.file_size / max(info.compress_size, 1):,.0f}x "
                              "(archive bomb?); refused", 413)
    if total > limits.max_bytes:
        raise UploadError(f"inputs unpack to {total:,} bytes, above the server's limit of {limits.max_bytes:,}", 413)


def pack_bundle(model: Path, files: list[str], target: Path) -> None:
    """Write ``model`` and its external-data ``files`` (relative to its folder, as
    ``core.model.external_data_files`` returns them) into an uncompressed tar at ``target``.

    Every member is a regular file under a relative name — links are stored as the bytes they
    point to — so the bundle passes the policy :func:`extract_bundle` enforces on the server.
    """
    folder = model.parent
    names = [model.name, *files]
    for name in names:
        _safe_name(name)
    with tarfile.open(target, "w") as archive:
        for name in names:
            source = (folder / name).resolve()
            info = tarfile.TarInfo(name)
            info.size, info.mode = source.stat().st_size, 0o644
            with open(source, "rb") as handle:
                archive.addfile(info, handle)
