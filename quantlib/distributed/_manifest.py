"""The manifest of a sharded index: its records, JSON I/O, and every check of
the manifest and of the shard files against it (pure: no Dask, no cluster)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _format as F
from .. import _precision as P
from .._format import FormatError
from .._validate import check_precision
from ._errors import ManifestError
from ._files import (_file_ranges, _header_crc_fd, _open_regular, _os_reason, _shard_identity, _within,
                     _write_json_atomic)

MANIFEST_NAME = "manifest.json"
_FORMAT = "quantlib-sharded"
_VERSION = (1, 1)  # 1.1: shards record "crc32" (their header checksum = content identity)
_KINDS = ("index", "pipeline")
_SCALAR = P.where(family="scalar")
_FIRST_STAGE = P.PRECISIONS["ubinary"]  # the pipeline's in-RAM retrieval codes


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


def _no_crc_error(where: str, mpath: Optional[str]) -> ManifestError:
    p = repr(mpath) if mpath else "manifest_path"
    return ManifestError(
        f"{where}: the manifest records no content checksum ('crc32'; it was written by a quantlib that did not, "
        "manifest version 1.0), so a swapped or rebuilt shard file could not be detected. Check that the shard "
        "files are the right ones, then regenerate the manifest: from quantlib.distributed import read_manifest, "
        f"write_manifest; write_manifest([s.path for s in read_manifest({p}).shards], {p})")


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
    kind, precision, rp, dim, count, has_ids = _parse_fields(doc, mpath)
    ranges = _parse_ranges(doc, mpath, kind, precision, dim)
    shards = _parse_shards(doc, mpath, count)
    return Manifest(kind, precision, dim, count, has_ids, tuple(shards), ranges,
                    rp if kind == "pipeline" else None, mpath)


def _parse_fields(doc: dict, mpath: str) -> Tuple[str, str, Optional[str], int, int, bool]:
    """kind, precision, rescore precision, dim, count and has_ids of a manifest document."""
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
    return kind, precision, rp, dim, count, has_ids


def _parse_ranges(doc: dict, mpath: str, kind: str, precision: str, dim: int) -> Optional[np.ndarray]:
    """The manifest's calibration ranges: read-only float32 (2, dim), or None."""
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
    return ranges


def _parse_shards(doc: dict, mpath: str, count: int) -> Tuple[ShardInfo, ...]:
    """The shard entries: offsets are running sums, paths confined to the manifest directory, listed once."""
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
    return tuple(shards)


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
    _write_json_atomic(mpath, m.to_json(os.path.dirname(mpath)))
    return m


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
