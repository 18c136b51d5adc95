"""Sharded exact search on a Dask cluster, with results identical to one index.

A corpus too large for one machine is split into contiguous **shards**, each an
ordinary quantlib file (an :class:`~quantlib.Index` or a
:class:`~quantlib.RescorePipeline`), plus a small JSON **manifest** naming the
shard files in order with their sizes, content checksums (each file's header
CRC32), global offsets, precision, dimension and calibration ranges. Shard
files must lie inside the manifest's directory. Shard ``i`` holds the global rows
``[offset_i, offset_i + count_i)``. The files must be readable at the same
path by the client (it validates them on open, unless ``check_files=False``)
and by every worker.

Install with ``pip install "quantlib-embed[dask]"``; ``import quantlib`` never
imports Dask.

Usage::

    from distributed import Client
    from quantlib.distributed import build_sharded, open_sharded

    client = Client(..., direct_to_workers=True)          # any dask.distributed cluster
    sharded = build_sharded(embeddings, "corpus/", n_shards=8, rescore=True, client=client)
    scores, ids = sharded.search(queries, 10)             # == RescorePipeline.search(queries, 10)
    sharded = open_sharded("corpus/", client)             # later, from the manifest

Worker residency: actors
------------------------
Every shard is served by one Dask **actor** (``_ShardServer``) created on a
worker when the sharded index is opened. It opens its file once (codes and
ids memory-mapped; a pipeline's packed bits read into RAM) and keeps it, so a
query ships only the query codes and receives only ``k'`` (value, id) pairs
per shard. Actors were chosen over a worker-resident cache reached by ordinary
tasks because actor calls go straight from the client to the worker, without a
scheduler round trip: on a 2-worker ``LocalCluster`` a 4-shard round costs
about 0.5 ms in-process / 3 ms with worker processes through actors versus
10-15 ms through ``client.submit`` (the scheduler batches its messages every
2-10 ms). That difference is the whole latency budget of a one-query search.
Create the client with ``direct_to_workers=True`` where it can reach the
workers: otherwise Dask proxies every actor call through the scheduler, which
doubles the bytes on the network and adds a hop (measured: 2.3 vs 3.3 ms for
4 calls, 400 kB vs 800 kB on the wire for a 400 kB argument).
The price of actors is failure handling, which Dask does not do for them (a
dead worker's actor is gone and calls to it fail or hang), so this module does
it (below). Shards are placed on workers greedily by row count (largest
first, least-loaded worker), i.e. round robin for equal shards.

Search
------
Queries are validated and quantized once on the client (with the manifest's
ranges, the same for every shard), then:

* Index shards: one round. Every shard returns its local top ``k`` with
  **global** ids (``offset + row``); :func:`quantlib.merge_topk` (the function
  the single-machine thread split also uses) keeps the global top ``k``.
* Pipeline shards, ``rescore_mode="exact"`` (default): two rounds, equal to
  :meth:`RescorePipeline.search` on the concatenated corpus. (1) every shard
  returns its Hamming top ``k * rescore_multiplier`` (distances + global ids);
  the merge gives the global candidate list, exactly the single pipeline's.
  (2) every shard rescores the candidates it owns, on the worker where its
  int8 rows live (they never travel), and returns its best ``k`` (float64
  score, global id); the merge keeps the top ``k``.
* ``rescore_mode="local"``: one round, every shard rescores its *own*
  Hamming top ``k * rescore_multiplier``. It rescores up to ``S`` times more
  candidates (a superset of the exact mode's), so its ``i``-th score is never
  lower, but its result can differ from the single pipeline's: it is not
  the default and is not identical.

Ties: values ascending (Hamming) or descending (scores), ties to the lower
**global row** (shard order, then row within the shard), as in one index.
Shards built with user ids report them instead of global rows: the id mapping
is applied after the merge, so ties still go to the lower global row, not to
the lower user id, exactly like :class:`~quantlib.Index` and
:class:`~quantlib.RescorePipeline` built from the concatenation.

Failure behaviour
-----------------
A shard call fails when its worker dies (``OSError`` "Unable to contact
Actor's worker"), times out (``timeout=``), or raises. Non-deterministic
failures are retried ``retries`` times (default 1): the shard's actor is
re-created on another live worker (which reopens the file) and the call is
repeated. Validation errors (``ValueError``/``TypeError``, e.g. a shard file
that no longer matches the manifest) are not retried. When a shard still has
no answer, :meth:`ShardedIndex.search` raises :class:`ShardError` naming the
shard index and file; it never returns a silently partial answer. With
``allow_partial=True`` it instead returns ``(values, ids, answered)``:
``answered[q, s]`` is False for shards that did not answer, and slots that
could not be filled are padded (id ``-1``, value ``-inf``/``+inf``/int32
extreme, worst for the order).

The build uses ordinary tasks, not pinned to workers (Dask never wakes a
``no-worker`` task restricted to a dead worker). The scheduler reruns a task
whose worker died when its input can be re-read (memmap, dask array); rows
given in memory are scattered from the client and, when lost with their
worker, scattered again and the task resubmitted (``retries``). The whole build
is bounded by ``timeout`` (default 3600 s), and a cluster without any worker
for 60 s fails it. A shard whose build still fails raises :class:`ShardError`
naming the cause and no manifest is written (the shard files already written
stay on disk).
"""
from __future__ import annotations

try:
    import distributed as _dd
    from distributed import Client
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'quantlib.distributed needs Dask (dask.distributed): pip install "quantlib-embed[dask]"'
    ) from _exc

import json
import mmap as _mmap_mod
import os
import socket
import stat as _stat
import threading
import time
import uuid
import warnings
from concurrent.futures import CancelledError as _CancelledError
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _format as F
from ._format import FormatError
from ._validate import as_2d, check_k, check_precision, to_numpy
from .index import Index, _write_index_file, load_index
from .pipeline import Progress, RescorePipeline, _progress_callback
from . import _precision as P
from .quantization import _coerce_ranges, _minmax_ranges, quantize_embeddings
from .search import _FLOAT_BLOCK, merge_topk
from .search import rescore as _rescore
from .search import search as _search

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "ManifestError",
    "ShardError",
    "ShardInfo",
    "ShardedIndex",
    "build_sharded",
    "open_sharded",
    "read_manifest",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
_FORMAT = "quantlib-sharded"
_VERSION = (1, 1)  # 1.1: shards record "crc32" (their header checksum = content identity)
_KINDS = ("index", "pipeline")
_BINARY = P.where(family="bits")
_SCALAR = P.where(family="scalar")
_FIRST_STAGE = P.PRECISIONS["ubinary"]  # the pipeline's in-RAM retrieval codes

# Testing seam: when set in a worker process, called as hook(shard_index, method)
# before every shard call (the tests use it to kill a worker mid-query).
_SHARD_CALL_HOOK: Optional[Callable[[int, str], None]] = None
# Testing seam: when set in a worker process, called as hook(shard_index, what) at
# the start of every build task ("ranges" or "build"; the tests kill a worker there).
_BUILD_TASK_HOOK: Optional[Callable[[int, str], None]] = None
# A build fails (ShardError naming the cause) when the cluster has had no worker at all for
# this many seconds: nothing can run, and a dead cluster must not hang the build until the timeout.
_NO_WORKER_GRACE = 60.0


# ---------------------------------------------------------------------- errors
class ShardError(RuntimeError):
    """A shard did not answer (its worker died, the call timed out or raised)
    after all retries.

    Attributes
    ----------
    shard : int
        Index of the shard in the manifest.
    path : str
        The shard's file.
    attempts : int
        Calls made (1 + retries used).
    cause : BaseException
        The last error (also chained as ``__cause__``).
    """

    def __init__(self, shard: int, path: str, cause: BaseException, attempts: int = 1, what: str = "search"):
        self.shard = shard
        self.path = path
        self.attempts = attempts
        self.cause = cause
        self.what = what
        super().__init__(f"shard {shard} ({path}) failed to {what} after {attempts} attempt(s): "
                         f"{type(cause).__name__}: {cause}")

    def __reduce__(self):
        return (ShardError, (self.shard, self.path, self.cause, self.attempts, self.what))


class ManifestError(FormatError):
    """The manifest is malformed or does not match its shard files (missing
    file, size, kind, precision, dimension, count, ids or ranges mismatch)."""


# ---------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class ShardInfo:
    """One shard: its file, number of rows, first global row, file size, and
    content identity ``crc32``: the CRC32 that closes the file's header, which
    covers every section's CRC32, so it changes whenever any byte of codes,
    ids or ranges does (``None`` in a manifest written before version 1.1)."""

    path: str
    count: int
    offset: int
    nbytes: int
    crc32: Optional[int] = None


@dataclass(frozen=True, eq=False)
class Manifest:
    """What a sharded index is made of (see :func:`read_manifest`).

    ``kind`` is ``"index"`` (shards are :class:`~quantlib.Index` files) or
    ``"pipeline"`` (:class:`~quantlib.RescorePipeline` files, retrieval
    ``precision`` ``"ubinary"``). ``ranges`` are the calibration ranges every
    shard was quantized with (one set for all: required for exact results).
    """

    kind: str
    precision: str
    dim: int
    count: int
    has_ids: bool
    shards: Tuple[ShardInfo, ...]
    ranges: Optional[np.ndarray] = None
    rescore_precision: Optional[str] = None
    path: Optional[str] = field(default=None, compare=False)

    def to_json(self, base: Optional[str] = None) -> str:
        def rel(p: str) -> str:
            if base is not None:
                r = os.path.relpath(p, base)
                if not r.startswith(os.pardir):
                    return r
            return p

        doc = {
            "format": _FORMAT, "version": list(_VERSION), "kind": self.kind, "precision": self.precision,
            "rescore_precision": self.rescore_precision, "dim": self.dim, "count": self.count,
            "has_ids": self.has_ids,
            "ranges": None if self.ranges is None else np.asarray(self.ranges, np.float64).tolist(),
            "shards": [{"path": rel(s.path), "count": s.count, "offset": s.offset, "bytes": s.nbytes,
                        "crc32": s.crc32} for s in self.shards],
        }
        return json.dumps(doc, indent=1)


def _manifest_path(path: Union[str, os.PathLike]) -> str:
    p = os.path.abspath(os.fspath(path))
    return os.path.join(p, MANIFEST_NAME) if os.path.isdir(p) else p


def _short(v: Any, n: int = 80) -> str:
    r = repr(v) if not isinstance(v, (list, dict)) or len(v) < 20 else f"<{type(v).__name__} of {len(v)}>"
    return r if len(r) <= n else r[: n - 3] + "..."


def _req(doc: dict, key: str, types, where: str):
    if key not in doc:
        raise ManifestError(f"{where}: missing key {key!r}")
    v = doc[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ManifestError(f"{where}: {key!r} must be {types.__name__}, got {v!r}")
    if not isinstance(v, types):
        raise ManifestError(f"{where}: {key!r} has the wrong type ({type(v).__name__}: {_short(v)}), expected "
                            f"{types.__name__}")
    return v


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


def _no_crc_error(where: str, mpath: Optional[str]) -> ManifestError:
    p = repr(mpath) if mpath else "manifest_path"
    return ManifestError(
        f"{where}: the manifest records no content checksum ('crc32'; it was written by a quantlib that did not, "
        "manifest version 1.0), so a swapped or rebuilt shard file could not be detected. Check that the shard "
        "files are the right ones, then regenerate the manifest: from quantlib.distributed import read_manifest, "
        f"write_manifest; write_manifest([s.path for s in read_manifest({p}).shards], {p})")


def _os_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def _within(path: str, base: str) -> bool:
    """``path`` is strictly inside directory ``base`` (both normalised)."""
    try:
        return path != base and os.path.commonpath([path, base]) == base
    except ValueError:  # different drives (Windows), mixed absolute/relative
        return False


def _confine(p: str, base: str, where: str) -> str:
    """Lexical check of a manifest shard path: relative (or absolute) but
    inside the manifest directory, no NUL, encodable. Returns the absolute,
    normalised path."""
    if not p:
        raise ManifestError(f"{where}: 'path' is empty")
    if "\0" in p:
        raise ManifestError(f"{where}: 'path' contains a NUL character")
    try:
        os.fsencode(p)
    except UnicodeError:
        raise ManifestError(f"{where}: 'path' {p!r} cannot be encoded for the filesystem") from None
    full = os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))
    if not _within(full, base):
        raise ManifestError(f"{where}: path {p!r} is outside the manifest directory {base} (shard files must be "
                            "inside the directory that holds the manifest)")
    return full


def read_manifest(path: Union[str, os.PathLike]) -> Manifest:
    """Read and check a manifest (a directory holding ``manifest.json``, or
    the file itself). Checks its structure and internal consistency only; the
    shard files are checked by :func:`open_sharded`.

    Shard paths must lie inside the manifest's directory (relative paths,
    or absolute ones under it; ``..`` that leaves it is refused) and each
    file may be listed once.

    Raises
    ------
    FileNotFoundError
        No manifest at ``path``.
    ManifestError
        Not a regular file, not JSON, unknown format/version, missing or
        mistyped keys, offsets that are not the running sum of the counts,
        bad ranges, a shard path outside the manifest directory, the same
        shard path listed twice.
    """
    mpath = _manifest_path(path)
    if not os.path.exists(mpath):
        raise FileNotFoundError(f"no sharded-index manifest at {mpath}")
    fd, _ = _open_regular(mpath, mpath)
    with os.fdopen(fd, "rb") as f:
        raw = f.read()
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, int digit limit
        raise ManifestError(f"{mpath}: not a JSON manifest: {exc}") from None
    except RecursionError:
        raise ManifestError(f"{mpath}: not a JSON manifest: nested too deeply") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise ManifestError(f"{mpath}: not a quantlib sharded-index manifest (format "
                            f"{doc.get('format') if isinstance(doc, dict) else None!r:.80}, expected {_FORMAT!r})")
    ver = doc.get("version")
    if not (isinstance(ver, list) and len(ver) == 2 and all(type(v) is int for v in ver) and ver[0] == _VERSION[0]
            and ver[1] >= 0):
        raise ManifestError(f"{mpath}: manifest version {ver!r:.80} is not supported (this quantlib reads "
                            f"{_VERSION[0]}.x)")
    kind = _req(doc, "kind", str, mpath)
    if kind not in _KINDS:
        raise ManifestError(f"{mpath}: kind must be 'index' or 'pipeline', got {kind!r:.80}")
    precision = _req(doc, "precision", str, mpath)
    try:
        check_precision(precision)
    except ValueError as exc:
        raise ManifestError(f"{mpath}: {exc}") from None
    rp = doc.get("rescore_precision")
    if kind == "pipeline":
        if precision != _FIRST_STAGE.name or rp not in _SCALAR:
            raise ManifestError(f"{mpath}: a pipeline manifest needs precision 'ubinary' and rescore_precision "
                                f"'int8' or 'uint8', got {precision!r} / {rp!r:.80}")
    elif rp is not None:
        raise ManifestError(f"{mpath}: rescore_precision only applies to kind 'pipeline'")
    dim = _req(doc, "dim", int, mpath)
    count = _req(doc, "count", int, mpath)
    has_ids = _req(doc, "has_ids", bool, mpath)
    if dim < 1 or dim > F.MAX_DIM or count < 0 or count > F.MAX_COUNT:
        raise ManifestError(f"{mpath}: bad dim {dim} (must be in [1, {F.MAX_DIM}]) or count {count} (must be in "
                            f"[0, {F.MAX_COUNT}])")
    ranges = doc.get("ranges")
    if ranges is not None:
        try:
            r = np.asarray(ranges, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise ManifestError(f"{mpath}: ranges must be a 2 x dim list of numbers") from None
        if r.shape != (2, dim):
            raise ManifestError(f"{mpath}: ranges must be a finite 2 x {dim} list, got shape {r.shape}")
        with np.errstate(over="ignore"):
            ranges = r.astype(np.float32)
        if not np.isfinite(ranges).all():
            raise ManifestError(f"{mpath}: ranges must be a finite 2 x {dim} list (finite in float32)")
        ranges.setflags(write=False)
        if kind == "index" and not P.PRECISIONS[precision].needs_ranges:
            raise ManifestError(f"{mpath}: ranges only apply to int8/uint8 indexes, not {precision!r}")
    elif kind == "pipeline":
        raise ManifestError(f"{mpath}: a pipeline manifest must record the calibration ranges")
    entries = _req(doc, "shards", list, mpath)
    if not entries:
        raise ManifestError(f"{mpath}: the manifest lists no shards")
    base = os.path.dirname(mpath)
    shards = []
    seen: Dict[str, int] = {}
    pos = 0
    for i, e in enumerate(entries):
        where = f"{mpath}: shard {i}"
        if not isinstance(e, dict):
            raise ManifestError(f"{where}: entry must be an object, got {type(e).__name__}")
        p = _req(e, "path", str, where)
        n = _req(e, "count", int, where)
        off = _req(e, "offset", int, where)
        nb = _req(e, "bytes", int, where)
        if n < 0 or nb < 0:
            raise ManifestError(f"{where}: count and bytes must be >= 0, got {n} and {nb}")
        if off != pos:
            raise ManifestError(f"{where}: offset {off} is not the sum of the previous shards' counts ({pos})")
        crc = e.get("crc32")
        if crc is not None and (type(crc) is not int or not 0 <= crc < 2 ** 32):
            raise ManifestError(f"{where}: 'crc32' must be an int in [0, 2**32) or absent, got {_short(crc)}")
        full = _confine(p, base, where)
        key = os.path.normcase(full)
        if key in seen:
            raise ManifestError(f"{where}: {p!r} is the same file as shard {seen[key]} (each shard file may be "
                                "listed once)")
        seen[key] = i
        shards.append(ShardInfo(full, n, off, nb, crc))
        pos += n
    if pos != count:
        raise ManifestError(f"{mpath}: the shards hold {pos} rows but the manifest says count {count}")
    return Manifest(kind, precision, dim, count, has_ids, tuple(shards), ranges,
                    rp if kind == "pipeline" else None, mpath)


def _write_json_atomic(path: str, text: str) -> None:
    with F.atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _file_ranges(path: str, h: F.Header) -> Optional[np.ndarray]:
    if not h.flags & F.FLAG_RANGES:
        return None
    return F.read_section(path, h.sections[F.SEC_RANGES], mmap=False, verify=True)


def _check_shard_file(i: int, shard: ShardInfo, m: Manifest) -> Tuple[F.Header, Tuple[int, int]]:
    """Check one shard file against the manifest; ManifestError naming it.

    Returns the header and the file's (st_dev, st_ino) identity. The file's
    content identity (header CRC) is read before and after the checks, so a
    file replaced in between is reported, not half-checked."""
    where = f"shard {i} ({shard.path})"
    if shard.crc32 is None:
        raise _no_crc_error(where, m.path)
    if m.path is not None:  # symlinks must not lead out of the manifest directory either
        base = os.path.dirname(m.path)
        real, real_base = os.path.realpath(shard.path), os.path.realpath(base)
        if not _within(real, real_base):
            raise ManifestError(f"{where}: resolves to {real}, outside the manifest directory {real_base} "
                                "(a symlink leaving the directory is refused)")
    fd, st = _open_regular(shard.path, where)
    try:
        crc = _header_crc_fd(fd)
    finally:
        os.close(fd)
    if st.st_size != shard.nbytes:
        raise ManifestError(f"{where}: file has {st.st_size} bytes but the manifest records {shard.nbytes} "
                            "(was the shard rebuilt without rewriting the manifest?)")
    try:
        h = F.read_header(shard.path)
    except FormatError as exc:
        raise ManifestError(f"{where}: {exc}") from exc
    except OSError as exc:
        raise ManifestError(f"{where}: cannot read the file ({_os_reason(exc)})") from None
    hc = getattr(h, "header_crc", None)  # the CRC of the header read_header validated, where it reports it
    if hc is not None and hc != crc:
        raise ManifestError(f"{where}: the file was replaced while it was being checked")
    if crc != shard.crc32:
        raise ManifestError(f"{where}: content checksum 0x{crc or 0:08x} but the manifest records "
                            f"0x{shard.crc32:08x}: the file was replaced or rebuilt after the manifest was written "
                            "(e.g. two shards swapped); rebuild the sharded index, or rewrite the manifest with "
                            "write_manifest if these are the right files")
    kind = "pipeline" if h.file_kind == F.KIND_PIPELINE else "index"
    if kind != m.kind:
        raise ManifestError(f"{where}: file holds a {F.FILE_KINDS[h.file_kind]} but the manifest is of kind "
                            f"{m.kind!r}")
    if h.precision != m.precision:
        raise ManifestError(f"{where}: precision {h.precision!r} but the manifest says {m.precision!r}")
    if h.dim != m.dim:
        raise ManifestError(f"{where}: dim {h.dim} but the manifest says {m.dim}")
    if h.count != shard.count:
        raise ManifestError(f"{where}: {h.count} rows but the manifest says {shard.count}")
    if bool(h.flags & F.FLAG_IDS) != m.has_ids:
        raise ManifestError(f"{where}: {'has' if h.flags & F.FLAG_IDS else 'has no'} ids but the manifest says "
                            f"has_ids={m.has_ids}")
    if m.kind == "pipeline":
        rp = P.where(family="scalar", code_dtype=h.sections[F.SEC_RESCORE].dtype)[0]
        if rp != m.rescore_precision:
            raise ManifestError(f"{where}: rescore precision {rp!r} but the manifest says {m.rescore_precision!r}")
    try:
        r = _file_ranges(shard.path, h)
    except FormatError as exc:
        raise ManifestError(f"{where}: {exc}") from exc
    if (r is None) != (m.ranges is None) or (r is not None and not np.array_equal(r, m.ranges)):
        raise ManifestError(f"{where}: calibration ranges differ from the manifest's (every shard must be "
                            "quantized with the same ranges for exact results)")
    if _shard_identity(shard.path, where) != (st.st_dev, st.st_ino, crc):
        raise ManifestError(f"{where}: the file was replaced while it was being checked")
    return h, (st.st_dev, st.st_ino)


def _check_files(m: Manifest) -> None:
    """The client-side checks of :func:`open_sharded` (no cluster needed):
    every shard file against the manifest, and no file listed twice under
    two names (hard link, symlink, case-insensitive filesystem)."""
    seen: Dict[Tuple[int, int], int] = {}

    def once(i: int, s: ShardInfo, ident: Tuple[int, int]) -> None:
        j = seen.setdefault(ident, i)
        if j != i:
            raise ManifestError(f"shard {i} ({s.path}): is the same file as shard {j} ({m.shards[j].path}) "
                                "(each shard file may be listed once)")

    base = os.path.realpath(os.path.dirname(m.path)) if m.path is not None else None
    for i, s in enumerate(m.shards):  # first by identity alone, so a duplicate is named as such
        if base is None or _within(os.path.realpath(s.path), base):
            try:
                st = os.stat(s.path)
            except (OSError, ValueError):
                continue  # reported by the full check below
            once(i, s, (st.st_dev, st.st_ino))
    seen.clear()
    for i, s in enumerate(m.shards):
        _, ident = _check_shard_file(i, s, m)
        once(i, s, ident)


def write_manifest(shard_paths: Sequence[Union[str, os.PathLike]],
                   path: Union[str, os.PathLike]) -> Manifest:
    """Describe existing shard files (e.g. built separately with
    :meth:`Index.save` or :meth:`RescorePipeline.build`) in a manifest.

    Parameters
    ----------
    shard_paths : sequence of path
        The shard files in global order: shard ``i`` gets global rows
        ``[sum(counts[:i]), sum(counts[:i + 1]))``.
    path : path
        A directory (the manifest is ``path/manifest.json``) or the manifest
        file name. Written atomically. Every shard file must be inside the
        manifest's directory (or below it): shard paths are stored relative
        to the manifest, and :func:`read_manifest` refuses paths that leave
        its directory.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        The files are not all of one kind, precision, dimension, id presence
        or rescore precision, or their calibration ranges differ; a file is
        missing, not a regular file, outside the manifest directory, or
        listed twice.
    """
    if isinstance(shard_paths, (str, bytes, os.PathLike)) or not hasattr(shard_paths, "__len__") \
            or not len(shard_paths):
        raise ValueError("shard_paths must be a non-empty sequence of shard file paths, got "
                         f"{type(shard_paths).__name__}")
    mpath = _manifest_path(path)
    base = os.path.dirname(mpath)
    infos, headers = [], []
    pos = 0
    for i, p in enumerate(shard_paths):
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"shard_paths[{i}] must be a path (str or os.PathLike), got {type(p).__name__}")
        p = os.path.abspath(os.fspath(p))
        if not _within(p, base):
            raise ManifestError(f"shard {i} ({p}): is not inside the manifest directory {base} (shard paths are "
                                "stored relative to the manifest and must stay inside its directory: write the "
                                "manifest into the directory holding the shards, or a parent of it)")
        where = f"shard {i} ({p})"
        dev, ino, crc = _shard_identity(p, where)
        try:
            h = F.read_header(p)
        except FormatError as exc:
            raise ManifestError(f"{where}: {exc}") from exc
        size = os.stat(p).st_size
        infos.append(ShardInfo(p, h.count, pos, size, crc))
        headers.append(h)
        pos += h.count
    h0 = headers[0]
    kind = "pipeline" if h0.file_kind == F.KIND_PIPELINE else "index"
    rp = None
    if kind == "pipeline":
        rp = P.where(family="scalar", code_dtype=h0.sections[F.SEC_RESCORE].dtype)[0]
    m = Manifest(kind, h0.precision, h0.dim, pos, bool(h0.flags & F.FLAG_IDS), tuple(infos),
                 _file_ranges(infos[0].path, h0), rp, mpath)
    _check_files(m)  # the same checks open_sharded makes (and no file listed twice)
    if m.kind == "index" and P.PRECISIONS[m.precision].is_float:
        _warn_float_alignment([s.count for s in infos])
    _write_json_atomic(mpath, m.to_json(os.path.dirname(mpath)))
    return m


# ---------------------------------------------------------------------- row sources (build)
class _MemmapRows:
    """Rows of a C-contiguous memory-mapped file, reopened by path on the worker."""

    def __init__(self, filename: str, offset: int, dtype: np.dtype, shape: Tuple[int, int]):
        self.filename, self.offset, self.dtype, self.shape = filename, offset, np.dtype(dtype), shape

    def open(self):
        if self.shape[0] == 0:
            return np.empty(self.shape, self.dtype)
        return np.memmap(self.filename, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)


def _memmap_source(x: np.ndarray) -> Optional[Tuple[str, int]]:
    """(filename, byte offset) of a C-contiguous read-through memmap, else None."""
    mm = getattr(x, "_mmap", None)
    fname = getattr(x, "filename", None)
    if not isinstance(x, np.memmap) or mm is None or not fname or not x.flags.c_contiguous:
        return None
    if getattr(x, "mode", "r") == "c":  # copy-on-write: the file does not hold the data
        return None
    try:
        base = np.frombuffer(mm, np.uint8).ctypes.data
    except (TypeError, ValueError, BufferError):
        return None
    start = x.offset - x.offset % _mmap_mod.ALLOCATIONGRANULARITY
    if x.flags.writeable:
        x.flush()
    return os.fspath(fname), start + (x.ctypes.data - base)


class _DaskRows:
    """Rows of a dask array, computed block by block on the worker."""

    def __init__(self, arr: Any):
        self.arr = arr
        self.shape = tuple(int(s) for s in arr.shape)
        self.dtype = np.dtype(arr.dtype)

    def open(self):
        return _DaskRowReader(self.arr)


def _compute_dask(arr: Any) -> np.ndarray:
    try:
        _dd.get_worker()
    except ValueError:
        return np.asarray(arr.compute())
    with _dd.worker_client() as c:  # secedes: the blocks may be computed anywhere in the cluster
        return np.asarray(c.compute(arr).result())


class _DaskRowReader:
    """Row slicing over a dask array that computes each row block once when
    read in order (RescorePipeline.build and the index writer read chunks
    sequentially; a chunk that straddles blocks reuses the cached one)."""

    def __init__(self, arr: Any):
        self.arr = arr
        self.shape = tuple(int(s) for s in arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self._bounds = np.concatenate([[0], np.cumsum(arr.chunks[0])]).astype(np.int64)
        self._cache: Dict[int, np.ndarray] = {}

    def _block(self, b: int) -> np.ndarray:
        if b not in self._cache:
            s, e = int(self._bounds[b]), int(self._bounds[b + 1])
            blk = _compute_dask(self.arr[s:e])
            self._cache = {b: blk}  # keep only the latest block
        return self._cache[b]

    def __getitem__(self, sl: slice) -> np.ndarray:
        s, e, _ = sl.indices(self.shape[0])
        if e <= s:
            return np.empty((0,) + self.shape[1:], self.dtype)
        first = int(np.searchsorted(self._bounds, s, side="right")) - 1
        parts = []
        b = first
        while b < len(self._bounds) - 1 and self._bounds[b] < e:
            blk = self._block(b)
            lo = max(s, int(self._bounds[b])) - int(self._bounds[b])
            hi = min(e, int(self._bounds[b + 1])) - int(self._bounds[b])
            parts.append(blk[lo:hi])
            b += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __len__(self) -> int:
        return self.shape[0]


def _open_rows(rows: Any) -> Any:
    return rows.open() if isinstance(rows, (_MemmapRows, _DaskRows)) else rows


def _minmax_task(shard: int, rows: Any, start: int, chunk_size: int, threads: int) -> Optional[np.ndarray]:
    """float32 (2, d) min/max of a shard's rows (None when empty); exact, so
    combining shards with np.minimum/np.maximum gives calibration_ranges of
    the whole matrix."""
    if _BUILD_TASK_HOOK is not None:
        _BUILD_TASK_HOOK(shard, "ranges")
    x = _open_rows(rows)
    n = x.shape[0]
    out = None
    for s in range(0, n, chunk_size):
        block = np.asarray(x[s: s + chunk_size])
        try:
            r = _minmax_ranges(block, chunk_size=chunk_size, threads=threads)  # a 1-row block is fine here
        except ValueError as exc:
            raise ValueError(f"data rows [{start + s}, {start + s + len(block)}): {exc}") from None
        if out is None:
            out = r
        else:
            np.minimum(out[0], r[0], out=out[0])
            np.maximum(out[1], r[1], out=out[1])
    return out


def _build_shard_task(shard: int, rows: Any, path: str, kind: str, precision: str, dim: int,
                      ranges: Optional[np.ndarray], ids: Optional[np.ndarray], chunk_size: int, threads: int,
                      rescore_precision: str) -> Dict[str, int]:
    """Write one shard file (streams chunk by chunk; atomically replaced, so a
    rerun after a worker death rewrites it whole); returns count, size, crc."""
    if _BUILD_TASK_HOOK is not None:
        _BUILD_TASK_HOOK(shard, "build")
    x = _open_rows(rows)
    n = int(x.shape[0])
    if kind == "pipeline":
        # build() reopens the file it wrote; that object is dropped here (the actor opens its own)
        RescorePipeline.build(x, path, ranges=ranges, chunk_size=chunk_size, ids=ids,
                              rescore_precision=rescore_precision, threads=threads)
    else:
        template = Index(dim, precision, ranges)

        def chunks():
            for s in range(0, n, chunk_size):
                codes, _ = template._as_codes(np.asarray(x[s: s + chunk_size]), "data", threads)
                yield codes

        _write_index_file(path, precision, dim, n, chunks(), ids, ranges)
    _, _, crc = _shard_identity(path, path)
    return {"count": n, "bytes": os.path.getsize(path), "crc32": crc}


# ---------------------------------------------------------------------- the shard actor
class _ShardServer:
    """Dask actor serving one shard: opens the file once and keeps it."""

    def __init__(self, shard: int, info: ShardInfo, manifest: Manifest):
        self.shard = shard
        self.path = info.path
        self.offset = info.offset
        where = f"shard {shard} ({info.path})"
        _check_shard_file(shard, info, manifest)  # the file this worker sees matches the manifest
        self.obj = load_index(info.path, mmap=True)
        # The file actually loaded must be the one checked (content identity): load_index reports the
        # header CRC of the descriptor it read when it can (``_file_crc``); otherwise re-read the header
        # after loading (the check above read it before).
        crc = getattr(self.obj, "_file_crc", None)
        if crc is None:
            crc = _shard_identity(info.path, where)[2]
        if crc != info.crc32 or len(self.obj) != info.count:
            raise ManifestError(f"{where}: the file changed while the shard was being opened (content checksum "
                                f"0x{crc or 0:08x}, the manifest records 0x{info.crc32:08x}); rebuild the sharded "
                                "index, or rewrite the manifest with write_manifest if these are the right files")
        self.kind = manifest.kind
        self.pid = os.getpid()
        try:
            self.worker = _dd.get_worker().address
        except ValueError:  # pragma: no cover - always created as an actor
            self.worker = None

    def _hook(self, method: str) -> None:
        if _SHARD_CALL_HOOK is not None:
            _SHARD_CALL_HOOK(self.shard, method)

    def where(self) -> Dict[str, Any]:
        return {"shard": self.shard, "path": self.path, "worker": self.worker, "host": socket.gethostname(),
                "pid": self.pid, "memory": self.obj.memory_usage()}

    def _global(self, pos: np.ndarray, valid: Optional[np.ndarray] = None):
        ids = getattr(self.obj, "_idbuf", None) if self.kind == "index" else self.obj.ids
        g = pos + self.offset if valid is None else np.where(valid, pos + self.offset, -1)
        if ids is None:
            return g, None
        flat = np.asarray(ids).reshape(-1)
        u = flat[pos] if valid is None else np.where(valid, flat[np.where(valid, pos, 0)], -1)
        return g, u

    def search(self, q: np.ndarray, k: int, threads: int):
        """Index shard: local top-k of prepared codes -> (values, global rows, user ids or None)."""
        self._hook("search")
        vals, pos, _ = self.obj._search_codes(q, k, threads)
        g, u = self._global(pos)
        return vals, g, u

    def binary_topk(self, qb: np.ndarray, kk: int, threads: int):
        """Pipeline shard, round 1: Hamming top-kk -> (distances, global rows)."""
        self._hook("binary_topk")
        p = self.obj
        if len(p) == 0:
            return np.empty((qb.shape[0], 0), np.int32), np.empty((qb.shape[0], 0), np.int64)
        d, pos = _search(qb, p.binary_codes, kk, precision=_FIRST_STAGE.name, threads=threads)
        return d, pos + self.offset

    def rescore(self, q: np.ndarray, local: np.ndarray, k: int, threads: int):
        """Pipeline shard, round 2: rescore the given local rows (-1 = empty
        slot) -> (float64 scores, global rows, user ids or None), best k."""
        self._hook("rescore")
        p = self.obj
        s, ids = _rescore(q, p.rescore_codes, local, precision=p.rescore_precision, ranges=p.ranges,
                          k=k, threads=threads)
        g, u = self._global(ids, ids >= 0)
        return s, g, u

    def local_search(self, q: np.ndarray, qb: np.ndarray, top_k: int, mult: int, threads: int):
        """Pipeline shard, one round: own Hamming top (top_k*mult), rescored, best top_k."""
        self._hook("local_search")
        p = self.obj
        if len(p) == 0:
            return np.empty((q.shape[0], 0), np.float64), np.empty((q.shape[0], 0), np.int64), \
                (np.empty((q.shape[0], 0), np.int64) if p.ids is not None else None)
        _, cand = _search(qb, p.binary_codes, top_k * mult, precision=_FIRST_STAGE.name, threads=threads)
        s, ids = _rescore(q, p.rescore_codes, cand, precision=p.rescore_precision, ranges=p.ranges,
                          k=top_k, threads=threads)
        g, u = self._global(ids)
        return s, g, u


# ---------------------------------------------------------------------- helpers
def _get_client(client: Optional[Client]) -> Client:
    if client is None:
        try:
            return _dd.get_client()
        except ValueError:
            raise ValueError("no Dask client: pass client=distributed.Client(...) or create one first") from None
    if not isinstance(client, Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    return client


def _live_workers(client: Client) -> List[str]:
    """Addresses of the workers the scheduler knows now (a fresh query)."""
    return sorted(client.nthreads())


def _place(counts: Sequence[int], workers: Sequence[str]) -> List[str]:
    """Greedy placement: shards by decreasing rows onto the least-loaded worker."""
    if not workers:
        raise RuntimeError("the Dask cluster has no workers")
    load = [0] * len(workers)
    nshards = [0] * len(workers)
    out = [""] * len(counts)
    for i in sorted(range(len(counts)), key=lambda j: (-counts[j], j)):
        w = min(range(len(workers)), key=lambda j: (load[j], nshards[j], j))
        out[i] = workers[w]
        load[w] += counts[i]
        nshards[w] += 1
    return out


def _nbytes(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    if obj is None:
        return 0
    return 8


def _warn_float_alignment(counts: Sequence[int]) -> None:
    """float32 scores come from BLAS, whose rounding depends on the block
    geometry: shards match one index bit for bit only when every shard
    boundary is a multiple of the float32 search block."""
    offsets = np.cumsum([0] + list(counts))[1:-1]
    live_end = int(np.cumsum(counts)[-1])
    bad = [int(o) for o in offsets if o % _FLOAT_BLOCK and o < live_end]
    if bad:
        warnings.warn(
            f"float32 shard boundaries {bad[:3]} are not multiples of {_FLOAT_BLOCK} rows: BLAS may round a "
            "score differently than on one index (last bit), so near-ties can come out in another order; "
            f"use shard sizes that are multiples of {_FLOAT_BLOCK} (build_sharded's default) for identical results",
            UserWarning, stacklevel=3)


def _check_timeout(timeout: Any) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, (bool, np.bool_)) or not isinstance(timeout, (int, float, np.integer, np.floating)):
        raise TypeError(f"timeout must be a number of seconds or None, got {type(timeout).__name__}")
    if not timeout > 0:  # also NaN
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    return float(timeout)


def _check_retries(retries: Any) -> int:
    if not isinstance(retries, (int, np.integer)) or isinstance(retries, (bool, np.bool_)):
        raise TypeError(f"retries must be an int >= 0, got {type(retries).__name__} {retries!r}")
    if retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries}")
    return int(retries)


def _task_states(client: Client, futs: Sequence[Any]) -> str:
    """'shard-key: state' of the given futures on the scheduler (best effort, for error messages)."""
    if not futs:
        return ""
    keys = [f.key for f in futs]
    try:
        st = client.run_on_scheduler(
            lambda dask_scheduler, keys=keys: {k: (dask_scheduler.tasks[k].state if k in dask_scheduler.tasks
                                                   else "forgotten") for k in keys})
    except Exception:  # pragma: no cover - the scheduler is gone too
        return "scheduler unreachable"
    by_state: Dict[str, int] = {}
    for v in st.values():
        by_state[v] = by_state.get(v, 0) + 1
    hint = {"no-worker": " (no worker can run them)", "processing": " (running)", "queued": " (queued)"}
    return ", ".join(f"{c} {k}{hint.get(k, '')}" for k, c in sorted(by_state.items()))


def _deterministic(exc: BaseException) -> bool:
    """Errors that a retry cannot fix (bad input, file/manifest mismatch)."""
    return isinstance(exc, (ValueError, TypeError))


def _check_finite_queries(raw: Any, q: np.ndarray) -> None:
    """float32 queries must be finite (a shard would refuse them; refuse them
    here, as :meth:`Index.search` does, with a ValueError naming the value)."""
    bad = ~np.isfinite(q)
    if not bad.any():
        return
    pos = tuple(int(v) for v in np.argwhere(bad)[0])
    src = np.asarray(to_numpy(raw, "queries"))
    src = src.reshape(q.shape) if src.size == q.size else None
    if src is not None and src.dtype.kind in "fiu" and np.isfinite(src[pos]):
        raise ValueError(f"queries contain finite values too large for float32 (first at index {pos}: "
                         f"{float(src[pos])!r} overflows to inf)")
    raise ValueError(f"queries contain NaN or infinite values (first at index {pos}: {float(q[pos])!r})")


def _is_dask_array(x: Any) -> bool:
    return type(x).__module__.startswith("dask.array") and hasattr(x, "chunks") and hasattr(x, "dask")


def _map_user_ids(cand_g: np.ndarray, cand_u: np.ndarray, sel_g: np.ndarray, n_total: int) -> np.ndarray:
    """User id of every selected global row (-1 stays -1). Rows are unique per
    query among the candidates, so a sorted (query, row) key finds them."""
    out = np.full(sel_g.shape, -1, np.int64)
    if sel_g.size == 0 or cand_g.size == 0:
        return out
    q = cand_g.shape[0]
    span = n_total + 2
    if q * span >= 2 ** 62:  # pragma: no cover - astronomically large; per-row fallback
        for r in range(q):
            o = np.argsort(cand_g[r], kind="stable")
            p = np.searchsorted(cand_g[r][o], sel_g[r])
            out[r] = np.where(sel_g[r] >= 0, cand_u[r][o][np.minimum(p, len(o) - 1)], -1)
        return out
    base = (np.arange(q, dtype=np.int64) * span)[:, None]
    keys = (cand_g + 1 + base).ravel()  # +1: the -1 padding stays inside its row's span
    order = np.argsort(keys, kind="stable")
    pos = np.searchsorted(keys[order], (sel_g + 1 + base).ravel())
    found = cand_u.ravel()[order[np.minimum(pos, len(order) - 1)]].reshape(sel_g.shape)
    return np.where(sel_g >= 0, found, -1)


def _pad(vals: np.ndarray, ids: np.ndarray, width: int, fill) -> Tuple[np.ndarray, np.ndarray]:
    if vals.shape[1] >= width:
        return vals, ids
    extra = width - vals.shape[1]
    v = np.concatenate([vals, np.full((vals.shape[0], extra), fill, vals.dtype)], axis=1)
    i = np.concatenate([ids, np.full((ids.shape[0], extra), -1, np.int64)], axis=1)
    return v, i


# ---------------------------------------------------------------------- build
def build_sharded(
    data: Any,
    directory: Union[str, os.PathLike],
    *,
    n_shards: Optional[int] = None,
    shard_sizes: Optional[Sequence[int]] = None,
    precision: str = "ubinary",
    rescore: bool = False,
    rescore_precision: str = "int8",
    ranges: Optional[Any] = None,
    ids: Optional[Any] = None,
    dim: Optional[int] = None,
    client: Optional[Client] = None,
    progress: Progress = False,
    chunk_size: int = 65536,
    threads: int = 1,
    overwrite: bool = False,
    timeout: Optional[float] = 3600.0,
    retries: int = 2,
) -> "ShardedIndex":
    """Quantize a large matrix into shard files in parallel on a Dask cluster.

    Parameters
    ----------
    data : numpy.ndarray, numpy.memmap or dask.array.Array, shape (N, d)
        Float embeddings, or codes of ``precision`` (int8/uint8 scalar codes,
        int8/uint8 packed bits) for an index. A C-contiguous ``np.memmap`` is
        reopened by path on the workers (nothing is shipped; the file must be
        readable there); a dask array is computed block by block on the
        workers; other arrays are scattered to the workers shard by shard.
    directory : path
        Where the shard files (``shard-00000.qlx``, ...) and
        ``manifest.json`` go; created if needed. Workers write the shards, so
        it must be on a filesystem they share with the client.
    n_shards : int, optional
        Number of contiguous shards of near-equal size (the first ``N % S``
        get one extra row). Default: one per worker.
    shard_sizes : sequence of int, optional
        Explicit rows per shard instead (sum ``N``; zeros allowed).
    precision : {"ubinary", "binary", "int8", "uint8", "float32"}
        Precision of index shards. With ``rescore=True`` it must be
        ``"ubinary"`` (the pipeline's retrieval codes).
    rescore : bool
        Build :class:`~quantlib.RescorePipeline` shards (ubinary codes in
        RAM + ``rescore_precision`` codes memory-mapped) from float data.
    rescore_precision : {"int8", "uint8"}
    ranges : array_like, shape (2, d), optional
        Calibration ranges for int8/uint8 codes. Default (float data): the
        global per-dimension min/max over **all** rows, computed by one
        parallel pass on the cluster, so every shard quantizes exactly like a
        single index built from the whole matrix would.
    ids : array_like of int, shape (N,), optional
        User ids stored in the shards and reported by ``search`` (the tie
        rule stays "lower global row", see the module docstring).
    dim : int, optional
        Number of bits of packed binary codes given as ``data`` (default
        ``8 * width``). Not needed otherwise.
    client : distributed.Client, optional
        Default: the current client (``distributed.get_client()``).
    progress : bool or callable
        True: a tqdm bar over rows (if tqdm is installed), advanced as shards
        finish; a callable is called as ``progress(rows_done, rows_total)``
        after each shard.
    chunk_size : int
        Rows read, quantized and written at a time on a worker.
    threads : int
        quantlib threads per build task (default 1: Dask runs one task per
        worker thread).
    overwrite : bool
        Replace an existing manifest in ``directory`` (the old manifest is
        removed first, so a failed rebuild never leaves a manifest pointing at
        half-rebuilt shards).
    timeout : float or None
        Seconds the whole build may take (ranges pass, shard files, manifest
        and opening the result); default 3600. ``None``: no limit. When it
        expires the build raises :class:`ShardError` naming the shards that
        had not finished and what they were waiting for. Independently of it,
        a cluster with no worker at all for 60 s fails the build.
    retries : int
        Times a shard's task is resubmitted after a failure that a new attempt
        may fix (default 2): its in-memory rows lost with a dead worker (they
        are scattered again from the client), the task cancelled, or an
        exception other than ``ValueError``/``TypeError``. Worker deaths
        during a task whose input can be re-read (memmap, dask array, rows
        still held by a live worker) are rerun by the scheduler itself and
        do not count, up to Dask's ``distributed.scheduler.allowed-failures``
        (default 3); beyond that Dask gives up on the task (``KilledWorker``:
        the task itself probably kills its worker, e.g. out of memory) and
        the build fails with that cause, without resubmitting.

    Returns
    -------
    ShardedIndex
        Opened on ``client`` from the written manifest.

    Raises
    ------
    TypeError, ValueError
        Bad arguments (naming them, with expected and actual dtype/shape),
        NaN in the data while computing ranges.
    FileExistsError
        ``directory`` already holds a manifest and ``overwrite`` is False.
    ShardError
        A shard's build task failed for another reason, naming the shard and
        the cause: it killed its worker repeatedly (``KilledWorker``), its
        in-memory rows were lost more than ``retries`` times, the cluster had
        no workers for 60 s, or ``timeout`` expired.
    """
    timeout = _check_timeout(timeout)
    retries = _check_retries(retries)
    t_start = time.monotonic()
    deadline = None if timeout is None else t_start + timeout
    client = _get_client(client)
    if not isinstance(rescore, (bool, np.bool_)):
        raise TypeError(f"rescore must be a bool, got {type(rescore).__name__}")
    is_dask = _is_dask_array(data)
    x = data if (is_dask or isinstance(data, np.ndarray)) else to_numpy(data, "data")
    if len(x.shape) != 2:
        raise ValueError(f"data must be 2-D (N, d), got shape {tuple(x.shape)}")
    if is_dask and any(np.isnan(c) for c in x.shape):
        raise ValueError(f"data is a dask array of unknown shape {x.shape}: call data.compute_chunk_sizes() first")
    n, width = int(x.shape[0]), int(x.shape[1])
    dt = np.dtype(x.dtype)
    if dt.kind not in "fiu":
        raise TypeError(f"data must be float embeddings or int8/uint8 codes, got dtype {dt}")
    is_codes = dt in (np.dtype(np.int8), np.dtype(np.uint8))
    if rescore:
        if precision != _FIRST_STAGE.name:
            raise ValueError("rescore=True builds RescorePipeline shards, whose retrieval precision is 'ubinary'; "
                             f"got precision={precision!r}")
        rescore_precision = check_precision(rescore_precision, _SCALAR, "rescore_precision")
        if is_codes:
            raise TypeError(f"data must be float embeddings for rescore=True, got {dt} codes")
        kind = "pipeline"
    else:
        precision = check_precision(precision)
        kind = "index"
        if P.PRECISIONS[precision].is_float and is_codes:
            raise TypeError(f"data must be float embeddings for precision='float32', got dtype {dt}")
    if width < 1:
        raise ValueError("data must have at least one column")
    if dim is not None:
        dim = check_k(dim, "dim")
        if not (is_codes and precision in _BINARY and not rescore):
            if dim != width:
                raise ValueError(f"dim={dim} but data have {width} columns (dim is only for packed binary codes)")
        elif (dim + 7) // 8 != width:
            raise ValueError(f"dim={dim} bits pack to {(dim + 7) // 8} bytes but the codes have {width} bytes")
    if dim is None:
        dim = 8 * width if (is_codes and precision in _BINARY and not rescore) else width
    chunk_size = check_k(chunk_size, "chunk_size")
    threads = check_k(threads, "threads")

    # shard boundaries
    if n_shards is not None and shard_sizes is not None:
        raise ValueError("pass n_shards or shard_sizes, not both")
    if shard_sizes is not None:
        if isinstance(shard_sizes, (str, bytes)) or not hasattr(shard_sizes, "__len__"):
            raise TypeError(f"shard_sizes must be a sequence of ints, got {type(shard_sizes).__name__}")
        sizes = []
        for j, s in enumerate(shard_sizes):
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 0:
                raise ValueError(f"shard_sizes[{j}] must be an int >= 0, got {s!r}")
            sizes.append(int(s))
        if not sizes or sum(sizes) != n:
            raise ValueError(f"shard_sizes must sum to the {n} rows of data, got {sum(sizes)} over {len(sizes)} shards")
    else:
        if n_shards is None:
            n_shards = max(1, len(_live_workers(client)))
        n_shards = check_k(n_shards, "n_shards")
        if P.PRECISIONS[precision].is_float and not rescore:
            # cut at multiples of the float32 search block so BLAS sees the blocks one index sees
            step = -(-n // n_shards)
            step = -(-step // _FLOAT_BLOCK) * _FLOAT_BLOCK
            sizes = [max(0, min(step, n - j * step)) for j in range(n_shards)]
        else:
            base, extra = divmod(n, n_shards)
            sizes = [base + (1 if j < extra else 0) for j in range(n_shards)]
    if P.PRECISIONS[precision].is_float and not rescore:
        _warn_float_alignment(sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    # ids
    id_arr = None
    if ids is not None:
        raw = ids.compute() if _is_dask_array(ids) else ids
        id_arr = to_numpy(raw, "ids")
        if id_arr.shape != (n,) or (id_arr.dtype.kind not in "iu" and n):
            raise ValueError(f"ids must be a 1-D integer array of {n} ids, got {id_arr.dtype} {id_arr.shape}")
        if id_arr.dtype == np.uint64 and n and id_arr.max() > np.iinfo(np.int64).max:
            raise ValueError("ids must fit in int64")
        id_arr = id_arr.astype(np.int64)

    # ranges
    needs_ranges = rescore or (P.PRECISIONS[precision].needs_ranges and not is_codes)
    r = None
    if ranges is not None:
        if not (rescore or P.PRECISIONS[precision].needs_ranges):
            raise ValueError(f"ranges only apply to int8/uint8 codes, not precision {precision!r}")
        r = _coerce_ranges(to_numpy(ranges, "ranges"), dim)
    elif needs_ranges and n == 0:
        raise ValueError("cannot compute ranges from 0 rows: pass ranges=")

    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    mpath = os.path.join(directory, MANIFEST_NAME)
    if os.path.exists(mpath):
        if not overwrite:
            raise FileExistsError(f"{mpath} exists; pass overwrite=True to rebuild the sharded index there")
        os.remove(mpath)

    workers = _live_workers(client)
    place: List[Optional[str]] = list(_place(sizes, workers)) if workers else [None] * len(sizes)
    mm = _memmap_source(x) if not is_dask else None
    in_memory = not is_dask and mm is None
    S = len(sizes)
    sources: List[Any] = []
    for j, (s, e) in enumerate(zip(starts[:-1], starts[1:])):
        s, e = int(s), int(e)
        if is_dask:
            import dask

            (part,) = dask.optimize(x[s:e])
            sources.append(_DaskRows(part))
        elif mm is not None:
            sources.append(_MemmapRows(mm[0], mm[1] + s * width * dt.itemsize, dt, (e - s, width)))
        else:  # scattered by run() (spread over the workers); the tasks then run where their rows are
            sources.append(None)
    token = uuid.uuid4().hex[:12]
    paths = [os.path.join(directory, f"shard-{j:05d}.qlx") for j in range(S)]

    def left() -> Optional[float]:
        return None if deadline is None else deadline - time.monotonic()

    def run(fn, what: str, args_of) -> List[Any]:
        """Run fn for every shard; resubmit what a new attempt can fix; bounded by the deadline.

        Tasks are not pinned to workers: Dask never wakes a ``no-worker`` task restricted to a
        dead worker when another worker joins, even with ``allow_other_workers`` (a 1-worker
        cluster whose worker restarted hung forever). In-memory rows are scattered, and a task
        runs where its rows are."""
        futs: Dict[int, Any] = {}
        attempts = [0] * S
        causes: Dict[int, BaseException] = {}
        resubmit: List[int] = list(range(S))
        out: List[Any] = [None] * S
        no_worker_since: Optional[float] = None
        unpinned: set = set()
        scatter_errors: Dict[int, BaseException] = {}

        def fail(j: int, cause: BaseException):
            err = ShardError(j, paths[j], cause, max(attempts[j], 1), what=what)
            err.__cause__ = cause
            return err

        try:
            while resubmit or futs:
                rem = left()
                if rem is not None and rem <= 0:
                    pend = sorted(set(futs) | set(resubmit))
                    states = _task_states(client, [futs[j] for j in pend if j in futs])
                    lost = [j for j in pend if j in resubmit and j in scatter_errors]
                    if lost:
                        e = scatter_errors[lost[0]]
                        states = ", ".join(filter(None, [states, f"shard(s) {lost[:8]} could not scatter their rows "
                                                                 f"({type(e).__name__}: {e})"]))
                    raise fail(pend[0], TimeoutError(
                        f"build_sharded did not finish within timeout={timeout:g} s: shard(s) {pend[:8]} of {S} "
                        f"unfinished ({states or 'waiting to be resubmitted'}); pass a larger timeout= "
                        "(or None) for a larger build"))
                for j in list(resubmit):
                    if in_memory and (sources[j] is None or sources[j].status != "finished"):
                        # first time, or the rows were lost with their worker: the client still has them
                        live = _live_workers(client)
                        if not live:
                            break  # no worker to receive them yet: try again on the next turn
                        to = [place[j]] if sources[j] is None and j not in unpinned and place[j] in live else None
                        try:
                            sources[j] = client.scatter(np.ascontiguousarray(x[int(starts[j]):int(starts[j + 1])]),
                                                        workers=to, hash=False,
                                                        timeout=max(0.1, min(2.0, rem if rem is not None else 2.0)))
                        except (TimeoutError, OSError, KeyError) as exc:  # no worker yet (TimeoutError), or
                            # the chosen worker died meanwhile (KeyError from the scheduler, CommClosedError):
                            # try again on the next turn, unpinned; the deadline bounds the retries
                            scatter_errors[j] = exc
                            unpinned.add(j)
                            break
                    attempts[j] += 1
                    futs[j] = client.submit(fn, *args_of(j), key=f"quantlib-{what}-{token}-{j}-{attempts[j]}",
                                            pure=False)
                    resubmit.remove(j)
                if futs:
                    try:
                        _dd.wait(list(futs.values()), timeout=max(0.05, min(1.0, rem if rem is not None else 1.0)),
                                 return_when="FIRST_COMPLETED")
                    except (TimeoutError, _CancelledError):  # cancelled/lost tasks are handled just below
                        pass
                else:
                    time.sleep(0.2)
                for j, f in sorted(futs.items()):
                    st = f.status
                    if st == "pending":
                        continue
                    del futs[j]
                    if st == "finished":
                        try:
                            out[j] = f.result()
                        except _CancelledError:  # its result was lost with its worker before we fetched it
                            st = "lost"
                        else:
                            if what == "build" and cb is not None:
                                done[0] += sizes[j]
                                cb(done[0], n)
                            continue
                    exc: Optional[BaseException] = None
                    if st == "error":
                        try:
                            exc = f.exception()
                        except BaseException as e:  # pragma: no cover
                            exc = e
                    if exc is not None and _deterministic(exc):
                        raise exc
                    if isinstance(exc, _dd.KilledWorker):
                        deaths = getattr(exc, "allowed_failures", None)
                        raise fail(j, RuntimeError(
                            f"the task's worker died {'' if deaths is None else f'{deaths + 1} time(s) '}while "
                            f"running it, so Dask gave up on it ({type(exc).__name__}; see Dask's "
                            "distributed.scheduler.allowed-failures): the task probably kills its worker (out of "
                            "memory? a crash in native code?)"))
                    if exc is None:  # cancelled / lost: say why
                        if in_memory and (sources[j] is None or sources[j].status != "finished"):
                            exc = RuntimeError(f"its in-memory rows, scattered to a worker, were lost when that "
                                               f"worker died (task {st})")
                        else:
                            exc = RuntimeError(f"the task was {st} by the cluster (its worker died, or the "
                                               "scheduler or another client cancelled it)")
                    causes[j] = exc
                    if attempts[j] > retries:
                        raise fail(j, exc)
                    resubmit.append(j)
                if not futs and not resubmit:
                    break
                if _live_workers(client):
                    no_worker_since = None
                else:
                    now = time.monotonic()
                    no_worker_since = no_worker_since or now
                    if now - no_worker_since > _NO_WORKER_GRACE:
                        pend = sorted(set(futs) | set(resubmit))
                        raise fail(pend[0], RuntimeError(
                            f"the Dask cluster has had no workers for {_NO_WORKER_GRACE:g} s (all workers died and "
                            f"none came back); shard(s) {pend[:8]} unfinished"))
        finally:
            pend = [f for f in futs.values() if not f.done()]
            if pend:
                client.cancel(pend)
        return out

    cb, bar = None, None
    done = [0]
    if r is None and needs_ranges:
        parts = [p for p in run(_minmax_task, "ranges",
                                lambda j: (j, sources[j], int(starts[j]), chunk_size, threads)) if p is not None]
        r = parts[0].copy()
        for p in parts[1:]:
            np.minimum(r[0], p[0], out=r[0])
            np.maximum(r[1], p[1], out=r[1])
        if not np.isfinite(r).all():
            raise ValueError("data contain infinite values, so the int8/uint8 ranges computed from them are not "
                             "finite; pass finite ranges=")
    if r is not None:
        r = np.ascontiguousarray(r, np.float32)
    cb, bar = _progress_callback(progress, n)
    try:
        results = run(_build_shard_task, "build", lambda j: (
            j, sources[j], paths[j], kind, precision, dim, r, None if id_arr is None else
            id_arr[int(starts[j]):int(starts[j + 1])], chunk_size, threads, rescore_precision))
    finally:
        if bar is not None:
            bar.close()
    shards = tuple(ShardInfo(paths[j], int(res["count"]), int(starts[j]), int(res["bytes"]), int(res["crc32"]))
                   for j, res in enumerate(results))
    m = Manifest(kind, precision, dim, n, id_arr is not None, shards, r,
                 rescore_precision if rescore else None, mpath)
    _write_json_atomic(mpath, m.to_json(directory))
    rem = left()
    if rem is not None and rem <= 0:
        raise ShardError(0, paths[0], TimeoutError(
            f"build_sharded wrote every shard and the manifest ({mpath}) but timeout={timeout:g} s expired before "
            "the result could be opened: open it with open_sharded"), what="open")
    return open_sharded(mpath, client, timeout=rem)


# ---------------------------------------------------------------------- open
def open_sharded(path: Union[str, os.PathLike], client: Optional[Client] = None, *,
                 check_files: bool = True, timeout: Optional[float] = None) -> "ShardedIndex":
    """Open a sharded index: check its manifest, start one actor per shard.

    Parameters
    ----------
    path : path
        The directory holding ``manifest.json``, or the manifest file.
    client : distributed.Client, optional
        Default: the current client.
    check_files : bool
        Check every shard file against the manifest on the client first
        (inside the manifest directory, a regular file, listed once, size,
        content checksum, kind, precision, dim, count, ids, ranges). Each
        actor makes the same checks on its worker in any case (also when it
        is re-created after a worker death), and checks that the file it
        loaded is the one it checked; turn this off when the client cannot
        see the workers' filesystem.
    timeout : float, optional
        Seconds to wait for the actors to open their shards (all of them
        together; a worker that died meanwhile cannot hang the open).

    Raises
    ------
    ManifestError
        The manifest is malformed or a shard file does not match it (the
        message names the shard and its file), e.g. a shard whose content
        checksum differs from the manifest's (swapped or rebuilt files), or
        a manifest written before shard checksums were recorded (manifest
        version 1.0: the message says how to regenerate it with
        :func:`write_manifest`).
    ShardError
        A worker could not open its shard.
    """
    if not isinstance(check_files, (bool, np.bool_)):
        raise TypeError(f"check_files must be a bool, got {type(check_files).__name__}")
    timeout = _check_timeout(timeout)
    m = _checked_manifest(path, bool(check_files))
    return ShardedIndex(m, _get_client(client), timeout=timeout)


def _checked_manifest(path: Union[str, os.PathLike], check_files: bool) -> Manifest:
    """Everything :func:`open_sharded` checks before it starts the actors (no
    cluster needed; the manifest fuzzer drives this)."""
    m = read_manifest(path)
    for i, s in enumerate(m.shards):
        if s.crc32 is None:
            raise _no_crc_error(f"shard {i} ({s.path})", m.path)
    if check_files:
        _check_files(m)
    return m


@dataclass
class _Server:
    future: Any  # the actor's creation future (keeps the actor alive)
    actor: Any
    worker: Optional[str]


class ShardedIndex:
    """Exact search over shard files served by Dask actors.

    Create with :func:`build_sharded` or :func:`open_sharded`. ``search``
    returns exactly what one :class:`~quantlib.Index` (or
    :class:`~quantlib.RescorePipeline`) built from the concatenated shards
    returns. Safe to call from several client threads. Use as a context
    manager, or call :meth:`close`, to release the actors.
    """

    def __init__(self, manifest: Manifest, client: Client, *, timeout: Optional[float] = None):
        self.manifest = manifest
        self.client = client
        self._token = uuid.uuid4().hex[:12]
        self._gen = 0
        self._lock = threading.Lock()
        self._dead: set = set()
        self._servers: List[Optional[_Server]] = [None] * len(manifest.shards)
        self._closed = False
        if manifest.kind == "index":
            self._template = Index(manifest.dim, manifest.precision, manifest.ranges)
        deadline = None if timeout is None else time.monotonic() + timeout  # for all the actors together
        place = _place([s.count for s in manifest.shards], _live_workers(client))
        futs = [self._submit_actor(i, place[i]) for i in range(len(manifest.shards))]
        try:
            for i, f in enumerate(futs):
                rem = None if deadline is None else max(0.001, deadline - time.monotonic())
                self._servers[i] = self._finish_actor(i, f, rem)
        except BaseException:
            self.close()
            try:
                client.cancel(futs)
            except Exception:  # pragma: no cover
                pass
            raise

    # ------------------------------------------------------------ properties
    @property
    def kind(self) -> str:
        """``"index"`` or ``"pipeline"``."""
        return self.manifest.kind

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def ranges(self) -> Optional[np.ndarray]:
        return self.manifest.ranges

    @property
    def n_shards(self) -> int:
        return len(self.manifest.shards)

    @property
    def shards(self) -> Tuple[ShardInfo, ...]:
        return self.manifest.shards

    def __len__(self) -> int:
        return self.manifest.count

    def __repr__(self) -> str:
        extra = f", rescore_precision={self.manifest.rescore_precision!r}" if self.kind == "pipeline" else ""
        return (f"quantlib.distributed.ShardedIndex(kind={self.kind!r}, precision={self.precision!r}{extra}, "
                f"dim={self.dim}, len={len(self)}, shards={self.n_shards}, manifest={self.manifest.path!r})")

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the shard actors (the workers drop their open files)."""
        self._closed = True
        futs = [s.future for s in self._servers if s is not None]
        self._servers = [None] * len(self._servers)
        if futs:
            try:
                self.client.cancel(futs)
            except Exception:  # pragma: no cover - client already closed
                pass

    def locations(self) -> List[Dict[str, Any]]:
        """Per shard: worker address, host, pid, and memory use of the opened shard."""
        return [self._live(i).actor.where().result() for i in range(self.n_shards)]

    # ------------------------------------------------------------ actors
    def _submit_actor(self, i: int, worker: Optional[str]):
        self._gen += 1
        key = f"quantlib-shard-{self._token}-{i}-{self._gen}"
        return self.client.submit(_ShardServer, i, self.manifest.shards[i], self.manifest, actor=True,
                                  workers=[worker] if worker else None, allow_other_workers=True, key=key,
                                  pure=False)

    def _finish_actor(self, i: int, fut, timeout: Optional[float]) -> _Server:
        try:
            actor = fut.result(timeout=timeout)
            worker = actor.where().result(timeout=timeout)["worker"]
        except Exception as exc:
            try:
                self.client.cancel([fut])
            except Exception:  # pragma: no cover
                pass
            if isinstance(exc, FormatError):
                raise
            raise ShardError(i, self.manifest.shards[i].path, exc, what="open") from exc
        return _Server(fut, actor, worker)

    def _live(self, i: int) -> _Server:
        if self._closed:
            raise RuntimeError("this ShardedIndex is closed")
        srv = self._servers[i]
        if srv is None or srv.future.status != "finished" or srv.worker in self._dead:
            srv = self._respawn(i, None)
        return srv

    def _respawn(self, i: int, failed: Optional[_Server], lost: bool = False,
                 timeout: Optional[float] = None) -> _Server:
        """Re-create shard i's actor, preferably on another live worker.

        ``lost``: the failure looked like a lost worker (connection error or
        timeout), so the worker is avoided for every shard from now on (its
        other shards are moved on their next call)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this ShardedIndex is closed")
            if lost and failed is not None and failed.worker:
                self._dead.add(failed.worker)
            cur = self._servers[i]
            if cur is not None and cur is not failed and cur.future.status == "finished" \
                    and cur.worker not in self._dead:
                return cur  # another thread already replaced it
            everyone = _live_workers(self.client)
            live = [w for w in everyone if w not in self._dead]
            if failed is not None and len(live) > 1:
                live = [w for w in live if w != failed.worker] or live
            if not live:  # only "suspect" workers left: better them than nothing
                live = everyone
            if not live:
                raise RuntimeError("the Dask cluster has no live workers left")
            load = {w: 0 for w in live}
            for srv in self._servers:
                if srv is not None and srv.worker in load:
                    load[srv.worker] += 1
            worker = min(live, key=lambda w: (load[w], w))
            srv = self._finish_actor(i, self._submit_actor(i, worker), timeout)
            old, self._servers[i] = self._servers[i], srv
        if old is not None:
            try:
                self.client.cancel([old.future])
            except Exception:  # pragma: no cover
                pass
        return srv

    def _round(self, method: str, args: Dict[int, tuple], retries: int, timeout: Optional[float],
               allow_partial: bool, st: Dict[str, Any]) -> Tuple[Dict[int, Any], Dict[int, ShardError]]:
        """Call ``method`` on the given shards concurrently; retry failures.

        Returns the results and the failures (ShardError per shard); without
        ``allow_partial`` the first failure is raised."""
        t0 = time.perf_counter()
        calls: Dict[int, Any] = {}
        servers: Dict[int, Optional[_Server]] = {}
        early: Dict[int, BaseException] = {}
        for i, a in args.items():
            try:
                srv = self._live(i)
                servers[i] = srv
                calls[i] = getattr(srv.actor, method)(*a)
            except Exception as exc:  # the actor could not be (re)created
                servers[i] = None
                early[i] = exc
        results: Dict[int, Any] = {}
        failures: Dict[int, ShardError] = {}
        for i, a in args.items():
            attempt = 1
            errors: List[BaseException] = []
            exc: Optional[BaseException] = early.get(i)
            while True:
                if exc is None:
                    try:
                        results[i] = calls[i].result(timeout=timeout)
                        break
                    except Exception as e:
                        exc = e
                errors.append(exc)
                cause = exc.cause if isinstance(exc, ShardError) else exc
                if _deterministic(cause) or attempt > retries:
                    break
                attempt += 1
                st["retries"] += 1
                try:
                    srv = self._respawn(i, servers[i], lost=isinstance(cause, OSError), timeout=timeout)
                    servers[i] = srv
                    calls[i] = getattr(srv.actor, method)(*a)
                    exc = None
                except Exception as e:
                    exc = e
            if i in results:
                continue
            first = errors[0].cause if isinstance(errors[0], ShardError) else errors[0]
            last = errors[-1].cause if isinstance(errors[-1], ShardError) else errors[-1]
            err = ShardError(i, self.manifest.shards[i].path, last, attempt, what=method)
            if last is not first:
                err.args = (f"{err.args[0]} (first error: {type(first).__name__}: {first})",)
            err.__cause__ = last
            failures[i] = err
            if not allow_partial:
                raise err
        st["rounds"].append({"method": method, "shards": len(args),
                             "bytes_sent": sum(_nbytes(a) for a in args.values()),
                             "bytes_received": sum(_nbytes(r) for r in results.values()),
                             "seconds": time.perf_counter() - t0})
        return results, failures

    # ------------------------------------------------------------ search
    def search(self, queries: Any, k: int = 10, *, rescore_multiplier: Optional[int] = None,
               rescore_mode: str = "exact", allow_partial: bool = False, retries: int = 1,
               timeout: Optional[float] = None, threads: int = 1,
               stats: Optional[Dict[str, Any]] = None):
        """Exact top-k over all shards.

        Parameters
        ----------
        queries : array_like, shape (Q, dim) or (dim,)
            As for :meth:`Index.search` (float embeddings, quantized with the
            manifest's ranges, or codes) or :meth:`RescorePipeline.search`
            (float embeddings).
        k : int
            ``k > len(self)`` returns ``len(self)`` columns.
        rescore_multiplier : int, optional
            Pipelines only (default 4): candidates per query = ``k *
            rescore_multiplier``.
        rescore_mode : {"exact", "local"}
            Pipelines only. ``"exact"``: two rounds, equal to
            :meth:`RescorePipeline.search`. ``"local"``: one round, each
            shard rescores its own top ``k * rescore_multiplier``; not
            identical (see the module docstring).
        allow_partial : bool
            False (default): a shard without an answer raises
            :class:`ShardError`. True: return ``(values, ids, answered)``.
        retries : int
            Times a failed shard call is retried on a re-created actor.
        timeout : float, optional
            Seconds to wait for one shard call (per attempt).
        threads : int
            quantlib threads per shard call on its worker (default 1: the
            cluster's parallelism comes from the shards).
        stats : dict, optional
            Filled with timings and payload bytes: ``rounds`` (per round:
            method, shards, bytes_sent, bytes_received, seconds),
            ``bytes_sent``, ``bytes_received``, ``merge_seconds``,
            ``total_seconds``, ``retries``, ``failed_shards``.

        Returns
        -------
        values : numpy.ndarray, shape (Q, min(k, len(self)))
            As :meth:`Index.search` (int32 Hamming ascending, int32 dot or
            float32 descending) or float64 rescored scores.
        ids : numpy.ndarray of int64
            Global rows (or user ids). 1-D queries give 1-D results.
        answered : numpy.ndarray of bool, shape (Q, n_shards)
            Only with ``allow_partial=True``: which shards contributed.

        Raises
        ------
        TypeError, ValueError
            Bad arguments or queries (as the single-machine classes).
        ShardError
            A shard did not answer after ``retries`` (unless
            ``allow_partial``).
        """
        t_start = time.perf_counter()
        if self._closed:
            raise RuntimeError("this ShardedIndex is closed")
        k = check_k(k)
        retries = _check_retries(retries)
        threads = check_k(threads, "threads")
        timeout = _check_timeout(timeout)
        if not isinstance(allow_partial, (bool, np.bool_)):
            raise TypeError(f"allow_partial must be a bool, got {type(allow_partial).__name__}")
        if stats is not None and not isinstance(stats, dict):
            raise TypeError(f"stats must be a dict or None, got {type(stats).__name__}")
        st: Dict[str, Any] = {"rounds": [], "retries": 0, "failed_shards": [], "merge_seconds": 0.0}
        m = self.manifest
        S = self.n_shards
        if m.kind == "index":
            if rescore_multiplier is not None:
                raise ValueError("rescore_multiplier only applies to pipeline (rescore=True) shards")
            if rescore_mode != "exact":
                raise ValueError("rescore_mode only applies to pipeline (rescore=True) shards")
            is_float = P.PRECISIONS[m.precision].is_float
            with np.errstate(over="ignore" if is_float else "warn"):  # reported just below
                q, was_1d = self._template._as_codes(queries, "queries", None)
            if is_float:
                _check_finite_queries(queries, q)  # on the client, before any round (as Index.search)
            vals, ids, answered = self._search_index(q, k, retries, timeout, threads, allow_partial, st)
        else:
            mult = 4 if rescore_multiplier is None else check_k(rescore_multiplier, "rescore_multiplier")
            if rescore_mode not in ("exact", "local"):
                raise ValueError(f"rescore_mode must be 'exact' or 'local', got {rescore_mode!r}")
            q2, was_1d = as_2d(to_numpy(queries, "queries"), "queries")
            if q2.dtype.kind not in "fiu" or q2.dtype in (np.int8, np.uint8):
                raise TypeError(f"queries must be float embeddings, got dtype {q2.dtype}")
            if q2.shape[1] != m.dim:
                raise ValueError(f"queries have {q2.shape[1]} dims but the sharded pipeline has {m.dim}")
            q2 = np.ascontiguousarray(q2)
            if not np.isfinite(q2).all():
                pos = tuple(int(v) for v in np.argwhere(~np.isfinite(q2))[0])
                raise ValueError(f"queries contain NaN or infinite values (first at index {pos}: "
                                 f"{float(q2[pos])!r})")
            vals, ids, answered = self._search_pipeline(q2, k, mult, rescore_mode, retries, timeout, threads,
                                                        allow_partial, st)
        st["failed_shards"] = [i for i in range(S) if answered.shape[0] and not answered[0, i]]
        st["bytes_sent"] = sum(r["bytes_sent"] for r in st["rounds"])
        st["bytes_received"] = sum(r["bytes_received"] for r in st["rounds"])
        st["total_seconds"] = time.perf_counter() - t_start
        if stats is not None:
            stats.clear()
            stats.update(st)
        if was_1d:
            vals, ids, answered = vals[0], ids[0], answered[0]
        return (vals, ids, answered) if allow_partial else (vals, ids)

    def _merge(self, parts: List[tuple], nq: int, k: int, descending: bool, vdtype, width: int, fill,
               st: Dict[str, Any]):
        t0 = time.perf_counter()
        if parts:
            v = np.concatenate([p[0] for p in parts], axis=1)
            g = np.concatenate([p[1] for p in parts], axis=1)
        else:
            v = np.empty((nq, 0), vdtype)
            g = np.empty((nq, 0), np.int64)
        if descending and v.dtype.kind == "f":
            # empty rescoring slots (-inf, id -1) must sort after every real hit
            g_sort = np.where(g < 0, np.iinfo(np.int64).max, g)
            mv, mg = merge_topk(v, g_sort, k, descending=True)
            mg = np.where(mg == np.iinfo(np.int64).max, -1, mg)
        else:
            mv, mg = merge_topk(v, g, k, descending=descending)
        if self.manifest.has_ids:
            u = np.concatenate([p[2] for p in parts], axis=1) if parts else np.empty((nq, 0), np.int64)
            out_ids = _map_user_ids(g, u, mg, self.manifest.count)
        else:
            out_ids = mg
        mv, out_ids = _pad(mv, out_ids, width, fill)
        st["merge_seconds"] += time.perf_counter() - t0
        return mv, out_ids

    def _search_index(self, q: np.ndarray, k: int, retries: int, timeout, threads: int, allow_partial: bool,
                      st: Dict[str, Any]):
        m = self.manifest
        nq = q.shape[0]
        p = m.precision
        descending = p not in _BINARY
        vdtype = P.PRECISIONS[p].value_dtype
        width = min(k, m.count)
        answered = np.ones((nq, self.n_shards), bool)
        if nq == 0:
            return np.empty((0, width), vdtype), np.empty((0, width), np.int64), answered
        res, fail = self._round("search", {i: (q, k, threads) for i in range(self.n_shards)}, retries, timeout,
                                allow_partial, st)
        answered[:, list(fail)] = False
        parts = [res[i] for i in sorted(res)]
        fill = (-np.inf if P.PRECISIONS[p].is_float else np.iinfo(np.int32).min) if descending \
            else np.iinfo(np.int32).max
        vals, ids = self._merge(parts, nq, k, descending, vdtype, width, fill, st)
        return vals, ids, answered

    def _search_pipeline(self, q2: np.ndarray, k: int, mult: int, mode: str, retries: int, timeout, threads: int,
                         allow_partial: bool, st: Dict[str, Any]):
        m = self.manifest
        nq = q2.shape[0]
        width = min(k, m.count)
        answered = np.ones((nq, self.n_shards), bool)
        if nq == 0:
            return np.empty((0, width), np.float64), np.empty((0, width), np.int64), answered
        qb = quantize_embeddings(q2, _FIRST_STAGE.name)
        if mode == "local":
            res, fail = self._round("local_search", {i: (q2, qb, k, mult, threads) for i in range(self.n_shards)},
                                    retries, timeout, allow_partial, st)
            answered[:, list(fail)] = False
            parts = [res[i] for i in sorted(res)]
            vals, ids = self._merge(parts, nq, k, True, np.float64, width, -np.inf, st)
            return vals, ids, answered
        # round 1: global Hamming candidates, exactly RescorePipeline.search's
        kk = k * mult
        res, fail = self._round("binary_topk", {i: (qb, kk, threads) for i in range(self.n_shards)}, retries,
                                timeout, allow_partial, st)
        answered[:, list(fail)] = False
        t0 = time.perf_counter()
        parts = [res[i] for i in sorted(res)]
        if parts:
            _, cand = merge_topk(np.concatenate([p[0] for p in parts], axis=1),
                                 np.concatenate([p[1] for p in parts], axis=1), kk, descending=False)
        else:
            cand = np.empty((nq, 0), np.int64)
        # round 2: every shard rescores the candidates it owns, where its int8 rows live
        args = {}
        for i, s in enumerate(m.shards):
            if i in fail or s.count == 0:
                continue
            owned = (cand >= s.offset) & (cand < s.offset + s.count)
            w = int(owned.sum(axis=1).max()) if cand.size else 0
            if w == 0:
                continue
            order = np.argsort(~owned, axis=1, kind="stable")[:, :w]
            local = np.take_along_axis(cand, order, axis=1) - s.offset
            local[~np.take_along_axis(owned, order, axis=1)] = -1
            local = local.astype(np.int32 if s.count < 2 ** 31 else np.int64)
            args[i] = (q2, local, k, threads)
        st["merge_seconds"] += time.perf_counter() - t0
        res2, fail2 = self._round("rescore", args, retries, timeout, allow_partial, st)
        answered[:, list(fail2)] = False
        parts = [res2[i] for i in sorted(res2)]
        vals, ids = self._merge(parts, nq, k, True, np.float64, width, -np.inf, st)
        return vals, ids, answered
