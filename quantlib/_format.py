"""On-disk format of quantlib indexes and rescoring pipelines (``.qlx``).

One file = a fixed header, a section table, a header checksum, then the
sections (raw little-endian arrays, each starting on a 64-byte boundary so
memory maps are SIMD-aligned). Everything is little-endian.

Layout, version 1.0::

    offset  size  field
    0       8     magic            b"\\x89QLIDX\\r\\n"  (binary marker; catches text-mode mangling)
    8       2     version_major    uint16 = 1 (a reader rejects any other major)
    10      2     version_minor    uint16 = 0 (see "Versions" below)
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

Versions: a reader rejects any major version but its own. A newer minor
version may only add flags or section kinds; a reader opens a file of a newer
minor version as long as the file uses none of them, and otherwise rejects it
with a message naming both versions (upgrade quantlib to read it).

Reads are consistent: ``load_index`` opens the path once and reads the header
and every section (or maps them) through that one descriptor, so a load that
races an atomic save sees the old file or the new one, never a mix. Only
regular files are read (a FIFO or a device is rejected before it is read, so
a load never blocks on one).

Writes are atomic: a temporary file in the destination directory, flush,
fsync, ``os.replace``, fsync of the directory. A crash leaves either the old
file or the new one, never a torn one (``tests/test_crash_safety.py`` kills
writers with SIGKILL at random points to show it). A writer killed mid-save
can leave its temporary file (``.<name>.<random>.tmp``) in the directory:
quantlib never reads it, and it is safe to delete. New files get the mode
``0666 & ~umask`` like any file the process creates (the temporary file is
created with that mode, so the umask applies); saving over an existing file
keeps that file's permission bits. Saving through a symbolic link replaces the
link's target (the link stays); a path that exists and is not a regular file
(a directory, FIFO, socket or device) is refused.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import os
import secrets
import stat
import struct
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Dict, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from . import _precision as P

__all__ = ["FormatError", "MAGIC", "VERSION", "Header", "SectionInfo", "write_file", "read_header", "read_section",
           "open_read", "atomic_open"]

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

PRECISION_CODES = {p.name: p.file_code for p in P.PRECISIONS.values()}  # from the registry
PRECISION_NAMES = {v: k for k, v in PRECISION_CODES.items()}

SEC_CODES = 1
SEC_IDS = 2
SEC_RANGES = 3
SEC_RESCORE = 4
SECTION_NAMES = {SEC_CODES: "codes", SEC_IDS: "ids", SEC_RANGES: "ranges", SEC_RESCORE: "rescore codes"}

DTYPE_CODES: Dict[np.dtype, int] = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype("<f4"): 3,
                                    np.dtype("<i8"): 4}
DTYPE_BY_CODE: Dict[int, np.dtype] = {v: k for k, v in DTYPE_CODES.items()}

FLAG_IDS = 1
FLAG_RANGES = 2
_KNOWN_FLAGS = FLAG_IDS | FLAG_RANGES


class FormatError(ValueError):
    """A quantlib index file is truncated, corrupted, of an unsupported
    version, or not a quantlib index file at all."""


@dataclass
class SectionInfo:
    kind: int
    dtype: Any  # anything np.dtype() takes; normalised to a little-endian np.dtype by write_file
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
    header_crc: int = 0  # CRC32 of the header, which covers every section's CRC: the file's content identity


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
            yield memoryview(flat[s: s + _WRITE_CHUNK])  # type: ignore[arg-type]  # ndarray is a buffer


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


def _name_max(directory: str) -> int:
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # pragma: no cover - non-POSIX
        return 255


def _resolve_target(path: str) -> str:
    """The file a save to ``path`` replaces: the path itself, or the final
    target of a symbolic link (so saving through a link updates what it points
    to and keeps the link). Refuses a path that exists and is not a regular
    file (replacing a FIFO, socket, device or directory would be a surprise)."""
    target = os.path.realpath(path) if os.path.islink(path) else path
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target
    if not stat.S_ISREG(st.st_mode):
        what = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or
                stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise ValueError(f"path {path!r} exists and is {what}; quantlib saves only to regular files (remove it or "
                         "choose another path)")
    return target


def _create_temp(directory: str, base: str) -> "tuple[int, str]":
    """Create a new temporary file in ``directory`` with mode 0666 (the umask
    applies, as for any new file); its name stays within NAME_MAX even for a
    long ``base``."""
    room = max(1, _name_max(directory) - len(".." + "0" * 16 + ".tmp"))
    stem = base if len(base) <= room else base[:room]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{stem}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue
    raise FileExistsError(_errno.EEXIST, "could not create a unique temporary file", directory)  # pragma: no cover


def _user_error(exc: OSError, path: str) -> OSError:
    """The same OSError, naming the user's path instead of the temporary file."""
    new = type(exc)(exc.errno, f"{exc.strerror or exc} (while saving; nothing was written to this path)", path) \
        if exc.errno is not None else type(exc)(f"{exc} (while saving {path!r})")
    return new


@contextlib.contextmanager
def atomic_open(path: Union[str, os.PathLike], mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on a clean exit
    flush + fsync it, ``os.replace`` it over ``path`` and fsync the directory;
    on an exception delete it. Readers see the old file or the new one.

    The new file gets mode ``0666 & ~umask``, or the permission bits of the
    regular file it replaces. A symbolic link at ``path`` is written through
    (its target is replaced). A ``path`` that exists and is not a regular file
    raises ``ValueError``. An ``OSError`` names ``path``, not the temporary file.
    """
    path = os.fspath(path)
    target = _resolve_target(path)
    directory = os.path.dirname(os.path.abspath(target))
    try:
        keep_mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        keep_mode = None
    try:
        fd, tmp = _create_temp(directory, os.path.basename(target))
    except OSError as exc:
        raise _user_error(exc, path) from exc
    try:
        try:
            if keep_mode is not None and hasattr(os, "fchmod"):
                os.fchmod(fd, keep_mode)
            f = os.fdopen(fd, mode, **kwargs)
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and getattr(exc, "filename", None) in (tmp, None):
            raise _user_error(exc, path) from exc
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
        dt = np.dtype(s.dtype)
        s.dtype = dt.newbyteorder("<") if dt.itemsize > 1 else dt
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


def open_read(path: Union[str, os.PathLike]) -> Any:
    """Open a quantlib file for reading: one descriptor for the header and
    every section. Refuses anything but a regular file before reading a byte
    (a FIFO would block forever, a device is never an index)."""
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "a device")
            raise _fail(path, f"is {what}, not a regular file; quantlib reads index files only")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def _reading(src: Any) -> Iterator[Any]:
    """``src`` as an open binary file: opened (and closed) here for a path,
    used as it is for a file."""
    if hasattr(src, "read"):
        yield src
    else:
        with open_read(src) as f:
            yield f


def _name_of(src: Any) -> str:
    return str(getattr(src, "name", "<file>")) if hasattr(src, "read") else str(os.fspath(src))


def read_header(src: Any, path: Optional[str] = None) -> Header:
    """Read and validate the header and section table (nothing else).

    ``src`` is a path or a binary file from :func:`open_read` (then every
    later :func:`read_section` of the same file object reads the same file,
    whatever happens to the path meanwhile); ``path`` names it in errors."""
    path = path if path is not None else str(_name_of(src))
    with _reading(src) as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(0)
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
        newer = (f" (the file is format version {vmaj}.{vmin}, newer than the {VERSION[0]}.{VERSION[1]} this "
                 "quantlib writes: it uses a feature added since; upgrade quantlib to read it)") \
            if vmin > VERSION[1] else ""
        if not 1 <= nsec <= MAX_SECTIONS:
            raise _fail(path, f"invalid section count {nsec} (expected 1..{MAX_SECTIONS}){newer}")
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
            raise _fail(path, f"unknown file kind {fkind}{newer}")
        if prec not in PRECISION_NAMES:
            raise _fail(path, f"unknown precision code {prec}{newer}")
        if flags & ~_KNOWN_FLAGS:
            raise _fail(path, f"unknown flags 0x{flags:x}{newer}")
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
                raise _fail(path, f"section {i}: unknown kind {kind}{newer}")
            if kind in sections:
                raise _fail(path, f"section {i}: duplicate {SECTION_NAMES[kind]} section")
            if dcode not in DTYPE_BY_CODE:
                raise _fail(path, f"section {i}: unknown dtype code {dcode}{newer}")
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
    h = Header(fkind, PRECISION_NAMES[prec], dim, count, flags, sections, size, (vmaj, vmin), crc)
    _check_shapes(path, h)
    return h


def _code_dtype(precision: str) -> np.dtype:
    """The on-disk (little-endian) dtype of a precision's codes."""
    dt = P.PRECISIONS[precision].code_dtype
    return dt.newbyteorder("<") if dt.itemsize > 1 else dt


def _expect(path: str, h: Header, kind: int, dtype, rows: int, cols: int) -> None:
    s = h.sections.get(kind)
    if s is None:
        raise _fail(path, f"missing {SECTION_NAMES[kind]} section")
    if s.dtype != np.dtype(dtype) or s.rows != rows or s.cols != cols:
        raise _fail(path, f"{SECTION_NAMES[kind]} section is {s.rows} x {s.cols} {s.dtype}, expected "
                          f"{rows} x {cols} {np.dtype(dtype)}")


def _check_shapes(path: str, h: Header) -> None:
    allowed = {SEC_CODES}
    prec = P.PRECISIONS[h.precision]
    _expect(path, h, SEC_CODES, _code_dtype(h.precision), h.count, prec.width(h.dim))
    if h.flags & FLAG_IDS:
        _expect(path, h, SEC_IDS, "<i8", h.count, 1)
        allowed.add(SEC_IDS)
    if h.flags & FLAG_RANGES:
        _expect(path, h, SEC_RANGES, "<f4", 2, h.dim)
        allowed.add(SEC_RANGES)
    if h.file_kind == KIND_PIPELINE:
        if not prec.is_bits:
            raise _fail(path, f"pipeline retrieval codes must be binary/ubinary, got {h.precision}")
        if not h.flags & FLAG_RANGES:
            raise _fail(path, "pipeline file without calibration ranges")
        s = h.sections.get(SEC_RESCORE)
        if s is None or s.dtype not in {P.PRECISIONS[n].code_dtype for n in P.where(family="scalar")}:
            raise _fail(path, "pipeline file without int8/uint8 rescore codes section")
        _expect(path, h, SEC_RESCORE, s.dtype, h.count, h.dim)
        allowed.add(SEC_RESCORE)
    elif not prec.needs_ranges and h.flags & FLAG_RANGES:
        raise _fail(path, f"ranges stored for a {h.precision} index")
    extra = set(h.sections) - allowed
    if extra:
        raise _fail(path, f"unexpected sections {sorted(SECTION_NAMES[k] for k in extra)} for a "
                          f"{FILE_KINDS[h.file_kind]} file with flags 0x{h.flags:x}")


def _crc_of(arr: np.ndarray) -> int:
    flat = arr.reshape(-1).view(np.uint8)
    crc = 0
    for s in range(0, flat.size, _WRITE_CHUNK):
        crc = zlib.crc32(memoryview(np.ascontiguousarray(flat[s: s + _WRITE_CHUNK])), crc)  # type: ignore[arg-type]
    return crc & 0xFFFFFFFF


def read_section(src: Any, s: SectionInfo, *, mmap: bool, verify: bool,
                 path: Optional[str] = None) -> np.ndarray:
    """Return the section as a (rows, cols) array: a read-only np.memmap when
    ``mmap`` (and the section is not empty), else an in-memory array whose
    checksum is always verified. ``verify`` also checks mapped sections.

    ``src`` is a path or the file object :func:`read_header` read (pass the
    same one for every section so they all come from one file)."""
    path = path if path is not None else str(_name_of(src))
    shape = (s.rows, s.cols)
    if s.nbytes == 0:
        arr = np.zeros(shape, s.dtype)
        if s.crc32 != 0:
            raise _fail(path, f"{s.name} section checksum mismatch (corrupted data)")
        return arr
    with _reading(src) as f:
        if os.fstat(f.fileno()).st_size < s.offset + s.nbytes:
            raise _fail(path, f"{s.name} section: the file is shorter than its header says (truncated while open)")
        if mmap:
            arr = np.memmap(f, dtype=s.dtype, mode="r", offset=s.offset, shape=shape)
        else:
            arr = np.empty(shape, s.dtype)
            f.seek(s.offset)
            got = f.readinto(memoryview(arr.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
            if got != s.nbytes:
                raise _fail(path, f"{s.name} section: short read ({got} of {s.nbytes} bytes; file changed?)")
            verify = True
    if verify and _crc_of(arr) != s.crc32:
        raise _fail(path, f"{s.name} section checksum mismatch (corrupted data)")
    if s.dtype.itemsize > 1 and not s.dtype.isnative:
        arr = arr.astype(s.dtype.newbyteorder("="))
    return arr
