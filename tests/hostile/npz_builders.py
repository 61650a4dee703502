"""Hostile .npz probe-input archives for the 8-wide MLP of :mod:`builders` (input "x"), built
in code: lying headers, impossible compression ratios, zip bombs written record by record.

Each builder takes the folder to write into and returns the path to hand to ``--inputs``.
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from builders import WIDTH

# ----------------------------------------------------------------------------- .npz archives


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npz(data: bytes | Callable[[], bytes], name: str = "inputs.npz") -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data() if callable(data) else data)
        return path
    return build


def _good_x(count: int = 64) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((count, WIDTH)).astype(np.float32)


def _npy_renamed() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, _good_x())
    return buffer.getvalue()


def _lying_header() -> bytes:
    """A valid .npz whose member's .npy header claims a shape of 10¹² samples."""
    data = npz_bytes(x=_good_x())
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        member = archive.read("x.npy")
    header_end = member.index(b"\n") + 1
    header = member[:header_end].decode("latin1").replace("(64, 8)", "(1000000000000, 8)")
    padded = header[:-1].ljust(header_end - 1) + "\n"
    padded = padded[:header_end]
    patched = padded.encode("latin1") + member[header_end:]
    return _zip({"x.npy": patched})


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def zip_bomb(unused_bytes: int = 3 * 1024**3, as_input: bool = False, bad_crc: bool = False) -> bytes:
    """Valid inputs plus a ``unused_bytes`` array of zeros deflated ~1000:1 (3 GiB in ~3 MB), or,
    with ``as_input``, the model input itself as that array ((N, 8) float32 zeros).

    Built without compressing gigabytes: one deflate block of 4 MiB of zeros, flushed so that it
    decodes on its own, is repeated; the zip records are written by hand (sizes < 4 GiB)."""
    chunk = 4 * 1024**2
    name = "x.npy" if as_input else "bomb.npy"
    dims = f"({unused_bytes // (4 * WIDTH)}, {WIDTH})" if as_input else f"({unused_bytes},)"
    descr = "<f4" if as_input else "|u1"
    header = _pad_header(b"\x93NUMPY\x01\x00xx{'descr': '" + descr.encode() + b"', 'fortran_order': False, "
                         b"'shape': " + dims.encode() + b", }")
    count = unused_bytes // chunk
    total = len(header) + count * chunk
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(b"\0" * chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush(zlib.Z_FINISH)
    crc = zlib.crc32(header)
    zeros = b"\0" * chunk
    for _ in range(count if total <= 256 * 1024**2 else 0):  # above that the CRC is left wrong
        crc = zlib.crc32(zeros, crc)  # (seconds to compute; the reader never reaches the end)
    if bad_crc:
        crc ^= 0xFFFF
    data = head + block * count + tail
    members = [] if as_input else [("x.npy", _npy(_good_x()), zipfile.ZIP_STORED)]
    return _hand_zip(members + [(name, (data, total, crc), zipfile.ZIP_DEFLATED)])


def _hand_zip(members: list) -> bytes:
    """A zip of (name, payload, method) written record by record; a deflated payload is given
    as (compressed bytes, uncompressed size, crc)."""
    out, central = bytearray(), bytearray()
    for name, payload, method in members:
        if method == zipfile.ZIP_STORED:
            data, size, crc = payload, len(payload), zlib.crc32(payload)
        else:
            data, size, crc = payload
        offset = len(out)
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0x21, crc, len(data), size, len(name), 0)
        out += b"PK\x03\x04" + fields + name.encode() + data
        central += (b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHII", 0, 0, 0, 0, offset)
                    + name.encode())
    end = struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + b"PK\x05\x06" + end)


def _pad_header(first_line: bytes) -> bytes:
    """An .npy v1 header (magic, version, length, dict) padded to a multiple of 64 bytes."""
    dict_text = first_line[10:].rstrip()
    total = 10 + len(dict_text) + 1
    padding = (64 - total % 64) % 64
    text = dict_text + b" " * padding + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def _pickled() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}] * 64, dtype=object))
    return buffer.getvalue()


def _member_crc_bad() -> bytes:
    data = bytearray(npz_bytes(x=_good_x()))
    position = data.index(b"\x93NUMPY") + 200
    data[position] ^= 0xFF
    return bytes(data)


def _fortran_npy() -> bytes:
    return _zip({"x.npy": _npy(np.asfortranarray(_good_x()))})


def _bad_header_dict(text: bytes) -> Callable[[], bytes]:
    def build() -> bytes:
        body = _pad_header(b"\x93NUMPY\x01\x00xx" + text)
        return _zip({"x.npy": body + b"\0" * 64})
    return build


def _ratio_lie() -> bytes:
    """A deflated member whose central directory claims 2 GB from a few bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(_npy(_good_x())) + compressor.flush()
    return _hand_zip([("x.npy", (data, 2 * 10**9, 0), zipfile.ZIP_DEFLATED)])


def _stored_lie() -> bytes:
    member = _npy(_good_x())
    archive = bytearray(_hand_zip([("x.npy", member, zipfile.ZIP_STORED)]))
    central = archive.rindex(b"PK\x01\x02")
    struct.pack_into("<I", archive, central + 24, len(member) * 100)  # uncompressed size field
    return bytes(archive)


#: Accepted .npz files: odd but harmless (extra arrays are never read, only the rows used are).
ACCEPTED_NPZ: dict[str, Callable[[Path], Path]] = {
    "zip bomb (unused 3 GiB array)": _npz(lambda: zip_bomb()),
    "unused array with bad crc (never read)": _npz(lambda: zip_bomb(64 * 1024**2, bad_crc=True)),
    "zip bomb as the input (64 rows read)": _npz(lambda: zip_bomb(1024**3, as_input=True)),
    "fortran order": _npz(_fortran_npy),
    "big-endian floats": _npz(lambda: npz_bytes(x=_good_x().astype(">f4"))),
    "float64 for float32 input": _npz(lambda: npz_bytes(x=_good_x().astype(np.float64))),
    "int array for float input": _npz(lambda: npz_bytes(x=np.arange(64 * WIDTH).reshape(64, WIDTH))),
    "compressed npz": _npz(lambda: _compressed(x=_good_x())),
    "fewer samples than asked": _npz(lambda: npz_bytes(x=_good_x(40))),
    "extra arrays": _npz(lambda: npz_bytes(x=_good_x(), y=np.zeros(3), z=np.ones((2, 2)))),
}


def _compressed(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


#: Refused .npz files for the 8-wide MLP (input "x").
REFUSED_NPZ: dict[str, Callable[[Path], Path]] = {
    "npy renamed npz": _npz(_npy_renamed),
    "empty file": _npz(b""),
    "text file": _npz(b"x,y\n1,2\n"),
    "truncated zip": _npz(lambda: npz_bytes(x=_good_x())[:200]),
    "zip without members": _npz(lambda: _zip({})),
    "member is not npy": _npz(lambda: _zip({"x.npy": b"hello world"})),
    "member crc mismatch": _npz(_member_crc_bad),
    "header lies about size": _npz(_lying_header),
    "header with huge shape": _npz(_bad_header_dict(b"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999, 99999999999), }")),
    "header not a dict": _npz(_bad_header_dict(b"__import__('os').system('echo pwned')")),
    "header object dtype": _npz(_bad_header_dict(b"{'descr': '|O', 'fortran_order': False, 'shape': (64, 8), }")),
    "header negative shape": _npz(_bad_header_dict(b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 8), }")),
    "header bad dtype": _npz(_bad_header_dict(b"{'descr': 'nonsense', 'fortran_order': False, 'shape': (64, 8), }")),
    "pickled object array": _npz(_pickled),
    "missing input array": _npz(lambda: npz_bytes(y=_good_x())),
    "wrong rank": _npz(lambda: npz_bytes(x=_good_x().reshape(64, 2, 4))),
    "wrong width": _npz(lambda: npz_bytes(x=np.zeros((64, 3), np.float32))),
    "zero samples": _npz(lambda: npz_bytes(x=np.zeros((0, WIDTH), np.float32))),
    "string array": _npz(lambda: npz_bytes(x=np.array([["a"] * WIDTH] * 64))),
    "complex array": _npz(lambda: npz_bytes(x=np.zeros((64, WIDTH), np.complex64))),
    "nan inputs": _npz(lambda: npz_bytes(x=np.full((64, WIDTH), np.nan, np.float32))),
    "inf inputs": _npz(lambda: npz_bytes(x=np.full((64, WIDTH), np.inf, np.float32))),
    "deflate ratio impossible": _npz(lambda: _ratio_lie()),
    "stored size mismatch": _npz(lambda: _stored_lie()),
    "scalar array": _npz(lambda: npz_bytes(x=np.float32(1.0))),
    "member with an empty name (fuzz)": _npz(lambda: _hand_zip([("", _npy(_good_x()), zipfile.ZIP_STORED)])),
    "fifo": lambda folder: (os.mkfifo(folder / "inputs.npz"), folder / "inputs.npz")[1],
    "/dev/zero": lambda folder: Path("/dev/zero"),
    "folder": lambda folder: (folder / "inputs.npz").mkdir() or folder / "inputs.npz",
}
