"""On-disk format of quantlib indexes and rescoring pipelines (``.qlx``).

One file = a fixed header, a section table, a header checksum, then the
sections (raw little-endian arrays, each starting on a 64-byte boundary so
memory maps are SIMD-aligned). Everything is little-endian.

Layout, version 1.0::

    offset  size  field
    0       8     magic            b"\\x89QLIDX\\r\\n"  (binary marker; catches text-mode mangling)
    8       2     version_major    uint16 = 1 (a reader rejects any other major)
    10      2     version_minor    uint16 = 0 (additive changes only)
    12      4     header_size      uint32 = 48 + 48 * n_sections + 4
    16      4     file_kind        uint32: 1 = Index, 2 = RescorePipeline
    20      4     precision        uint32: 0 float32, 1 int8, 2 uint8, 3 binary, 4 ubinary
                                   (pipeline: precision of the in-RAM retrieval codes)
    24      8     dim              uint64: embedding dimension (bits for binary codes)
    32      8     count            uint64: number of vectors
    40      4     flags            uint32: bit 0 = has ids, bit 1 = has ranges
    44      4     n_sections       uint32, 1..8
    48      48*n  section table, one entry per section:
                    kind  uint32  (1 codes, 2 ids, 3 ranges, 4 rescore codes)
                    dtype uint32  (1 uint8, 2 int8, 3 float32, 4 int64)
                    rows  uint64, cols uint64
                    offset uint64 (multiple of 64), nbytes uint64 (= rows*cols*itemsize)
                    crc32 uint32 of the section bytes, 4 bytes reserved (zero)
    ...     4     header crc32     zlib.crc32 of bytes [0, header_size - 4)
    then the sections in table order, zero padding between them, and the file
    ends exactly where the last section ends.

Validation (``read_header``) happens before anything is allocated or mapped:
file length, magic, version, section count, header checksum, every enum,
dimension/count bounds, ``rows*cols*itemsize`` computed in Python integers
(no overflow) and compared with the declared size and the file length,
alignment, ordering/overlap, zero padding, and the shapes each file kind
needs. Any violation raises :class:`FormatError`. Section checksums are
verified when a section is read into memory (``mmap=False``) or when
``verify=True``; a memory-mapped section is not read in full on open (that is
the point of mapping it), so a bit flip inside mapped codes is only caught
with ``verify=True``.

Writes are atomic: a temporary file in the destination directory, flush,
fsync, ``os.replace``, fsync of the directory. A crash leaves either the old
file or the new one, never a torn one (``tests/test_crash_safety.py`` kills
writers with SIGKILL at random points to show it). A writer killed mid-save
can leave its temporary file (``.<name>.<random>.tmp``) in the directory:
quantlib never reads it, and it is safe to delete.
"""
from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from typing import Dict, Iterable, Sequence, Union

import numpy as np

__all__ = ["FormatError", "MAGIC", "VERSION", "Header", "SectionInfo", "write_file", "read_header", "read_section"]

MAGIC = b"\x89QLIDX\r\n"
VERSION = (1, 0)
_FIXED = struct.Struct("<8sHHIIIQQII")
_ENTRY = struct.Struct("<IIQQQQI4x")
_CRC = struct.Struct("<I")
ALIGN = 64
MAX_SECTIONS = 8
MAX_DIM = 1 << 24
MAX_COUNT = 1 << 48

KIND_INDEX = 1
KIND_PIPELINE = 2
FILE_KINDS = {KIND_INDEX: "Index", KIND_PIPELINE: "RescorePipeline"}

PRECISION_CODES = {"float32": 0, "int8": 1, "uint8": 2, "binary": 3, "ubinary": 4}
PRECISION_NAMES = {v: k for k, v in PRECISION_CODES.items()}

SEC_CODES = 1
SEC_IDS = 2
SEC_RANGES = 3
SEC_RESCORE = 4
SECTION_NAMES = {SEC_CODES: "codes", SEC_IDS: "ids", SEC_RANGES: "ranges", SEC_RESCORE: "rescore codes"}

DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype("<f4"): 3, np.dtype("<i8"): 4}
DTYPE_BY_CODE = {v: k for k, v in DTYPE_CODES.items()}

FLAG_IDS = 1
FLAG_RANGES = 2
_KNOWN_FLAGS = FLAG_IDS | FLAG_RANGES


class FormatError(ValueError):
    """A quantlib index file is truncated, corrupted, of an unsupported
    version, or not a quantlib index file at all."""


@dataclass
class SectionInfo:
    kind: int
    dtype: np.dtype
    rows: int
    cols: int
    offset: int = 0
    nbytes: int = 0
    crc32: int = 0

    @property
    def name(self) -> str:
        return SECTION_NAMES.get(self.kind, str(self.kind))


@dataclass
class Header:
    file_kind: int
    precision: str
    dim: int
    count: int
    flags: int
    sections: Dict[int, SectionInfo] = field(default_factory=dict)
    file_size: int = 0
    version: tuple = VERSION


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def header_size(n_sections: int) -> int:
    return _FIXED.size + _ENTRY.size * n_sections + _CRC.size


def _pack_header(h: Header, sections: Sequence[SectionInfo]) -> bytes:
    hs = header_size(len(sections))
    fixed = _FIXED.pack(MAGIC, VERSION[0], VERSION[1], hs, h.file_kind, PRECISION_CODES[h.precision],
                        h.dim, h.count, h.flags, len(sections))
    table = b"".join(_ENTRY.pack(s.kind, DTYPE_CODES[s.dtype], s.rows, s.cols, s.offset, s.nbytes, s.crc32)
                     for s in sections)
    body = fixed + table
    return body + _CRC.pack(zlib.crc32(body) & 0xFFFFFFFF)


# Source of a section: an array, or an iterable of arrays whose bytes are
# concatenated in order (for streaming builds).
Source = Union[np.ndarray, Iterable[np.ndarray]]

_WRITE_CHUNK = 1 << 24  # bytes per write() call for large arrays


def _iter_bytes(src: Source, dtype: np.dtype):
    if isinstance(src, np.ndarray):
        src = [src]
    for arr in src:
        a = np.ascontiguousarray(arr)
        if a.dtype != dtype:
            raise TypeError(f"internal: section chunk has dtype {a.dtype}, expected {dtype}")
        flat = a.reshape(-1).view(np.uint8)
        for s in range(0, flat.size, _WRITE_CHUNK):
            yield memoryview(flat[s: s + _WRITE_CHUNK])


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Union[str, os.PathLike], mode: str = "wb", **kwargs):
    """Open a temporary file next to ``path`` for writing; on a clean exit
    flush + fsync it, ``os.replace`` it over ``path`` and fsync the directory;
    on an exception delete it. Readers see the old file or the new one."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def write_file(path: Union[str, os.PathLike], header: Header,
               sections: Sequence[tuple]) -> int:
    """Write a file atomically. ``sections`` is a list of
    ``(SectionInfo(kind, dtype, rows, cols), source)``; offsets, sizes and
    checksums are filled in here. Returns the file size."""
    path = os.fspath(path)
    infos = [s for s, _ in sections]
    pos = _align(header_size(len(infos)))
    for s in infos:
        s.dtype = np.dtype(s.dtype).newbyteorder("<") if np.dtype(s.dtype).itemsize > 1 else np.dtype(s.dtype)
        s.nbytes = s.rows * s.cols * s.dtype.itemsize
        s.offset = pos
        pos = _align(pos + s.nbytes) if s is not infos[-1] else pos + s.nbytes
    total = pos if infos else _align(header_size(0))
    with atomic_open(path, "wb") as f:
        f.write(b"\0" * infos[0].offset)  # placeholder header + padding
        for s, src in sections:
            f.seek(s.offset)
            crc = 0
            written = 0
            for mv in _iter_bytes(src, s.dtype):
                f.write(mv)
                crc = zlib.crc32(mv, crc)
                written += mv.nbytes
            if written != s.nbytes:
                raise ValueError(f"internal: section {s.name} produced {written} bytes, expected {s.nbytes}")
            s.crc32 = crc & 0xFFFFFFFF
            pad = (_align(f.tell()) - f.tell()) if s is not infos[-1] else 0
            if pad:
                f.write(b"\0" * pad)
        f.truncate(total)
        f.seek(0)
        f.write(_pack_header(header, infos))
    return total


def _fail(path: str, msg: str) -> FormatError:
    return FormatError(f"{path}: {msg}")


def read_header(path: Union[str, os.PathLike]) -> Header:
    """Read and validate the header and section table (nothing else)."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError:
        raise
    with open(path, "rb") as f:
        if size < _FIXED.size:
            raise _fail(path, f"file is {size} bytes, shorter than the {_FIXED.size}-byte quantlib header "
                              "(truncated or not a quantlib index)")
        fixed = f.read(_FIXED.size)
        (magic, vmaj, vmin, hsize, fkind, prec, dim, count, flags, nsec) = _FIXED.unpack(fixed)
        if magic != MAGIC:
            raise _fail(path, f"not a quantlib index file (magic {magic!r}, expected {MAGIC!r})")
        if vmaj != VERSION[0]:
            raise _fail(path, f"unsupported format version {vmaj}.{vmin}; this quantlib reads version "
                              f"{VERSION[0]}.x")
        if not 1 <= nsec <= MAX_SECTIONS:
            raise _fail(path, f"invalid section count {nsec} (expected 1..{MAX_SECTIONS})")
        if hsize != header_size(nsec):
            raise _fail(path, f"header size {hsize} does not match {nsec} sections ({header_size(nsec)})")
        if hsize > size:
            raise _fail(path, f"file is {size} bytes, shorter than its {hsize}-byte header (truncated)")
        rest = f.read(hsize - _FIXED.size)
        if len(rest) != hsize - _FIXED.size:
            raise _fail(path, "short read of the header (file truncated while reading)")
        body = fixed + rest[:-_CRC.size]
        (crc,) = _CRC.unpack(rest[-_CRC.size:])
        if zlib.crc32(body) & 0xFFFFFFFF != crc:
            raise _fail(path, "header checksum mismatch (corrupted header)")
        if fkind not in FILE_KINDS:
            raise _fail(path, f"unknown file kind {fkind}")
        if prec not in PRECISION_NAMES:
            raise _fail(path, f"unknown precision code {prec}")
        if flags & ~_KNOWN_FLAGS:
            raise _fail(path, f"unknown flags 0x{flags:x}")
        if not 1 <= dim <= MAX_DIM:
            raise _fail(path, f"dimension {dim} out of range [1, {MAX_DIM}]")
        if count > MAX_COUNT:
            raise _fail(path, f"vector count {count} out of range (max {MAX_COUNT})")
        sections: Dict[int, SectionInfo] = {}
        prev_end = hsize
        gaps = []
        for i in range(nsec):
            kind, dcode, rows, cols, off, nbytes, scrc = _ENTRY.unpack_from(rest, i * _ENTRY.size)
            if kind not in SECTION_NAMES:
                raise _fail(path, f"section {i}: unknown kind {kind}")
            if kind in sections:
                raise _fail(path, f"section {i}: duplicate {SECTION_NAMES[kind]} section")
            if dcode not in DTYPE_BY_CODE:
                raise _fail(path, f"section {i}: unknown dtype code {dcode}")
            dt = DTYPE_BY_CODE[dcode]
            want = rows * cols * dt.itemsize  # Python ints: cannot overflow
            if want != nbytes:
                raise _fail(path, f"section {SECTION_NAMES[kind]}: {rows} x {cols} x {dt.itemsize} bytes = {want} "
                                  f"but the table says {nbytes}")
            if off % ALIGN or off < prev_end:
                raise _fail(path, f"section {SECTION_NAMES[kind]}: bad offset {off} (must be a multiple of "
                                  f"{ALIGN} after byte {prev_end})")
            if off + nbytes > size:
                raise _fail(path, f"section {SECTION_NAMES[kind]}: bytes [{off}, {off + nbytes}) lie beyond the "
                                  f"end of the {size}-byte file (truncated)")
            if off - prev_end >= ALIGN:
                raise _fail(path, f"section {SECTION_NAMES[kind]}: unexpected gap before offset {off}")
            gaps.append((prev_end, off))
            prev_end = off + nbytes
            sections[kind] = SectionInfo(kind, dt, rows, cols, off, nbytes, scrc)
        if prev_end != size:
            raise _fail(path, f"file is {size} bytes but its sections end at byte {prev_end} "
                              f"({'truncated' if size < prev_end else 'trailing data'})")
        for a, b in gaps:
            if b > a:
                f.seek(a)
                if f.read(b - a).strip(b"\0"):
                    raise _fail(path, f"non-zero padding bytes in [{a}, {b})")
    h = Header(fkind, PRECISION_NAMES[prec], dim, count, flags, sections, size, (vmaj, vmin))
    _check_shapes(path, h)
    return h



def _width(precision: str, dim: int) -> int:
    return (dim + 7) // 8 if precision in ("binary", "ubinary") else dim


_CODE_DTYPE = {"float32": np.dtype("<f4"), "int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8),
               "binary": np.dtype(np.int8), "ubinary": np.dtype(np.uint8)}


def _expect(path: str, h: Header, kind: int, dtype, rows: int, cols: int) -> None:
    s = h.sections.get(kind)
    if s is None:
        raise _fail(path, f"missing {SECTION_NAMES[kind]} section")
    if s.dtype != np.dtype(dtype) or s.rows != rows or s.cols != cols:
        raise _fail(path, f"{SECTION_NAMES[kind]} section is {s.rows} x {s.cols} {s.dtype}, expected "
                          f"{rows} x {cols} {np.dtype(dtype)}")


def _check_shapes(path: str, h: Header) -> None:
    allowed = {SEC_CODES}
    _expect(path, h, SEC_CODES, _CODE_DTYPE[h.precision], h.count, _width(h.precision, h.dim))
    if h.flags & FLAG_IDS:
        _expect(path, h, SEC_IDS, "<i8", h.count, 1)
        allowed.add(SEC_IDS)
    if h.flags & FLAG_RANGES:
        _expect(path, h, SEC_RANGES, "<f4", 2, h.dim)
        allowed.add(SEC_RANGES)
    if h.file_kind == KIND_PIPELINE:
        if h.precision not in ("binary", "ubinary"):
            raise _fail(path, f"pipeline retrieval codes must be binary/ubinary, got {h.precision}")
        if not h.flags & FLAG_RANGES:
            raise _fail(path, "pipeline file without calibration ranges")
        s = h.sections.get(SEC_RESCORE)
        if s is None or s.dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
            raise _fail(path, "pipeline file without int8/uint8 rescore codes section")
        _expect(path, h, SEC_RESCORE, s.dtype, h.count, h.dim)
        allowed.add(SEC_RESCORE)
    elif h.precision in ("float32", "binary", "ubinary") and h.flags & FLAG_RANGES:
        raise _fail(path, f"ranges stored for a {h.precision} index")
    extra = set(h.sections) - allowed
    if extra:
        raise _fail(path, f"unexpected sections {sorted(SECTION_NAMES[k] for k in extra)} for a "
                          f"{FILE_KINDS[h.file_kind]} file with flags 0x{h.flags:x}")


def _crc_of(arr: np.ndarray) -> int:
    flat = arr.reshape(-1).view(np.uint8)
    crc = 0
    for s in range(0, flat.size, _WRITE_CHUNK):
        crc = zlib.crc32(memoryview(np.ascontiguousarray(flat[s: s + _WRITE_CHUNK])), crc)
    return crc & 0xFFFFFFFF


def read_section(path: Union[str, os.PathLike], s: SectionInfo, *, mmap: bool, verify: bool) -> np.ndarray:
    """Return the section as a (rows, cols) array: a read-only np.memmap when
    ``mmap`` (and the section is not empty), else an in-memory array whose
    checksum is always verified. ``verify`` also checks mapped sections."""
    path = os.fspath(path)
    shape = (s.rows, s.cols)
    if s.nbytes == 0:
        arr = np.zeros(shape, s.dtype)
        if s.crc32 != 0:
            raise _fail(path, f"{s.name} section checksum mismatch (corrupted data)")
        return arr
    if mmap:
        arr = np.memmap(path, dtype=s.dtype, mode="r", offset=s.offset, shape=shape)
    else:
        arr = np.empty(shape, s.dtype)
        with open(path, "rb") as f:
            f.seek(s.offset)
            got = f.readinto(memoryview(arr.reshape(-1).view(np.uint8)))
        if got != s.nbytes:
            raise _fail(path, f"{s.name} section: short read ({got} of {s.nbytes} bytes; file changed?)")
        verify = True
    if verify and _crc_of(arr) != s.crc32:
        raise _fail(path, f"{s.name} section checksum mismatch (corrupted data)")
    if s.dtype.itemsize > 1 and not s.dtype.isnative:
        arr = arr.astype(s.dtype.newbyteorder("="))
    return arr
