"""Shard files on disk: open without blocking, header CRC (content identity),
path confinement, atomic JSON writes (pure: no Dask)."""
from __future__ import annotations

import os
import stat as _stat
from typing import Optional, Tuple

import numpy as np

from .. import _format as F
from ._errors import ManifestError


def _file_kind(mode: int) -> str:
    for test, name in ((_stat.S_ISDIR, "a directory"), (_stat.S_ISFIFO, "a FIFO"), (_stat.S_ISSOCK, "a socket"),
                       (_stat.S_ISCHR, "a character device"), (_stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: str, where: str) -> Tuple[int, os.stat_result]:
    """Open a regular file for reading without ever blocking: a FIFO, device,
    socket or directory is refused (stat first, then opened O_NONBLOCK and
    checked again on the descriptor, so a swap in between cannot hang us)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ManifestError(f"{where}: file is missing") from None
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, EACCES, embedded NUL...
        raise ManifestError(f"{where}: cannot access the file ({_os_reason(exc)})") from None
    if not _stat.S_ISREG(st.st_mode):
        raise ManifestError(f"{where}: is {_file_kind(st.st_mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ManifestError(f"{where}: file is missing") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{where}: cannot open the file ({_os_reason(exc)})") from None
    st = os.fstat(fd)
    if not _stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ManifestError(f"{where}: is {_file_kind(st.st_mode)}, not a regular file")
    return fd, st


_NSEC_AT = F._FIXED.size - 4  # the section count closes the fixed header


def _header_crc_fd(fd: int) -> Optional[int]:
    """The CRC32 stored at the end of a quantlib header (the file's content
    identity: it covers the header and every section's CRC32), read from an
    open descriptor; None when the bytes are not even shaped like a header
    (``read_header`` then says why)."""
    fixed = os.pread(fd, F._FIXED.size, 0)
    if len(fixed) < F._FIXED.size:
        return None
    nsec = int.from_bytes(fixed[_NSEC_AT:_NSEC_AT + 4], "little")
    if not 1 <= nsec <= F.MAX_SECTIONS:
        return None
    hs = F.header_size(nsec)
    tail = os.pread(fd, 4, hs - 4)
    return int.from_bytes(tail, "little") if len(tail) == 4 else None


def _shard_identity(path: str, where: str) -> Tuple[int, int, Optional[int]]:
    """(st_dev, st_ino, header crc) of the regular file at ``path``."""
    fd, st = _open_regular(path, where)
    try:
        return st.st_dev, st.st_ino, _header_crc_fd(fd)
    finally:
        os.close(fd)


def _os_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def _within(path: str, base: str) -> bool:
    """``path`` is strictly inside directory ``base`` (both normalised)."""
    try:
        return path != base and os.path.commonpath([path, base]) == base
    except ValueError:  # different drives (Windows), mixed absolute/relative
        return False


def _write_json_atomic(path: str, text: str) -> None:
    with F.atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _file_ranges(path: str, h: F.Header) -> Optional[np.ndarray]:
    if not h.flags & F.FLAG_RANGES:
        return None
    return F.read_section(path, h.sections[F.SEC_RANGES], mmap=False, verify=True)
