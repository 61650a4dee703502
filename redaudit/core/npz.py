"""Read probe inputs from an ``.npz`` as untrusted input.

Why not ``np.load``: it decompresses whatever member is asked for, trusts the ``.npy`` header's
shape (an archive can claim 10¹² samples and make it allocate that) and offers pickle for
object arrays. Here nothing is decompressed before it is checked, and only what the scan uses:

* only members named like a model input are opened; any other array (a zip bomb among them)
  is listed, never read;
* each member's declared size is checked against the zip's compressed size (deflate cannot
  expand more than ~1032:1, stored members do not expand) and the ``.npy`` header's shape ×
  itemsize must add up to exactly that declared size: a header that lies is refused;
* object dtypes (pickle) are refused from the header, before any data is read;
* of a C-ordered array only the first ``rows`` samples are decompressed, and the bytes read
  must fit in half of this machine's memory.
"""
from __future__ import annotations

import lzma
import math
import os
import stat
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from redaudit.errors import ProbeInputError

#: Deflate's largest possible expansion is about 1032:1; a member claiming more lies.
MAX_DEFLATE_RATIO = 1100
_NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 10_000


@dataclass(frozen=True)
class NpzContents:
    """The arrays read (first ``rows`` samples of each wanted member), the first-axis length
    every wanted array declares, and the names of every array in the archive."""

    arrays: dict[str, np.ndarray]
    declared_samples: dict[str, int]
    names: list[str]


def memory_bound() -> int:
    """Half of the physical memory: more than that for probe inputs is refused up front."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def read_npz(path: str | os.PathLike[str], wanted: list[str] | None = None, rows: int | None = None,
             max_bytes: int | None = None) -> NpzContents:
    """The arrays ``wanted`` (every array when None) from the ``.npz`` at ``path``, at most
    ``rows`` samples each; raises :class:`ProbeInputError` with one line for anything wrong."""
    label = os.fspath(path)
    limit = max_bytes if max_bytes is not None else memory_bound()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block, /dev/zero never end
            raise ProbeInputError(f"--inputs {label} is not a regular file; pass an .npz file")
        with open(path, "rb") as handle:
            magic = handle.read(6)
        if magic == _NPY_MAGIC:
            raise ProbeInputError(f"{label} is a single .npy array (renamed?), not an .npz archive; "
                                  "save inputs with numpy.savez(path, input_name=array)")
        if not magic.startswith(b"PK"):
            raise ProbeInputError(f"cannot read {label}: not an .npz archive; save inputs with numpy.savez")
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()
                       if not info.is_dir()}
            names = sorted(members)
            chosen = names if wanted is None else [name for name in wanted if name in members]
            arrays, declared, total = {}, {}, 0
            for name in chosen:
                array, samples = _read_member(archive, members[name], label, name, rows, limit - total)
                arrays[name], declared[name] = array, samples
                total += array.nbytes
            return NpzContents(arrays, declared, names)
    except ProbeInputError:
        raise
    except FileNotFoundError:
        raise ProbeInputError(f"inputs file not found: {label}") from None
    except IsADirectoryError:
        raise ProbeInputError(f"--inputs {label} is a folder; pass an .npz file") from None
    except MemoryError:
        raise ProbeInputError(f"not enough memory to read {label}; pass fewer samples") from None
    except (OSError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, struct.error, EOFError, ValueError,
            LookupError, OverflowError, NotImplementedError, RuntimeError) as error:
        # zipfile's parser raises all of these on crafted archives (fuzzing found IndexError for a
        # member with an empty name, from ZipInfo.is_dir)
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ProbeInputError(f"cannot read {label} as .npz ({detail[:200]}); save inputs with numpy.savez") from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, name: str,
                 rows: int | None, budget: int) -> tuple[np.ndarray, int]:
    where = f"array {name!r} in {label}"
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ProbeInputError(f"{where} declares {info.file_size:,} bytes but stores {info.compress_size:,}; "
                              "the archive is corrupt")
    if info.file_size > MAX_DEFLATE_RATIO * max(info.compress_size, 1) + 1024:
        raise ProbeInputError(f"{where} claims {info.file_size:,} bytes from {info.compress_size:,} compressed, "
                              "more than deflate can expand; the archive is corrupt or crafted")
    with archive.open(info) as member:
        dtype, shape, fortran = _header(member, where)
        header_size = member.tell()
        expected = math.prod(shape) * dtype.itemsize
        if header_size + expected != info.file_size:
            raise ProbeInputError(f"{where}: its header describes {expected:,} bytes of data but the member holds "
                                  f"{info.file_size - header_size:,}; the file is corrupt or crafted")
        if not shape:
            raise ProbeInputError(f"{where} is a scalar; save one row per sample (first axis = samples)")
        samples = shape[0]
        take = samples if fortran or rows is None else min(rows, samples)
        count = take * math.prod(shape[1:])
        if count * dtype.itemsize > budget:
            raise ProbeInputError(f"{where} needs {count * dtype.itemsize / 1024**3:.1f} GiB to read, more than "
                                  f"half of this machine's memory; pass fewer samples (--samples)")
        flat = np.empty(count, dtype=dtype)
        _read_exactly(member, flat.view(np.uint8), where)
        if take == samples:
            member.read(1)  # reaching the end makes zipfile check the member's CRC
    array = flat.reshape((take, *shape[1:]), order="F" if fortran else "C")
    return array, samples


def _header(member, where: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    """dtype, shape and order from the ``.npy`` header, parsed without evaluating code."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(member, max_header_size=_MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(member, max_header_size=_MAX_HEADER)
        else:
            raise ProbeInputError(f"{where} is .npy version {version[0]}.{version[1]}, which redaudit does not read; "
                                  "save plain numeric arrays with numpy.savez")
    except ProbeInputError:
        raise
    except (ValueError, TypeError, SyntaxError, OverflowError, tokenize.TokenError) as error:
        # TokenError: numpy re-tokenises old-style headers; a truncated one ends mid-statement
        # (found by `make fuzz`, .npz harness)
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ProbeInputError(f"{where} is not a valid .npy array ({detail[:160]})") from None
    if dtype.hasobject:
        raise ProbeInputError(f"{where} holds object arrays that need pickle, which redaudit never loads; "
                              "save plain numeric arrays")
    if dtype.itemsize == 0 or any(not isinstance(dim, int) or dim < 0 for dim in shape):
        raise ProbeInputError(f"{where} has an invalid shape or dtype ({shape}, {dtype})")
    return dtype, tuple(shape), bool(fortran)


def _read_exactly(member, buffer: np.ndarray, where: str) -> None:
    view = memoryview(buffer)
    done = 0
    while done < len(view):
        got = member.readinto(view[done:])
        if not got:
            raise ProbeInputError(f"{where} ends early (truncated archive?); re-save the inputs")
        done += got
