"""Persistent exact indexes over quantized (or float32) embeddings.

One class, :class:`Index`, covers every precision:

==========  ==================  =================================  ===========================
precision   stored codes        ``search`` values                  float input quantized with
==========  ==================  =================================  ===========================
binary      int8 packed bits    int32 Hamming distance, ascending  sign (``x > 0``)
ubinary     uint8 packed bits   int32 Hamming distance, ascending  sign (``x > 0``)
int8        int8 scalar codes   int32 code dot product, descending the index's ``ranges``
uint8       uint8 scalar codes  int32 code dot product, descending the index's ``ranges``
float32     float32             float32 inner product, descending  (cast to float32)
==========  ==================  =================================  ===========================

Thread safety
-------------
Any number of threads may call :meth:`Index.search` at once (the kernels are
reentrant and release the GIL). :meth:`Index.add` is also safe while other
threads search: a short internal lock publishes the new rows, and every
search works on the snapshot of the rows present when it started (growing the
buffer allocates a new one; old snapshots keep the old buffer alive). Two
``add`` calls are serialised. A memory-mapped index (``load_index(...,
mmap=True)``) is read-only: ``add`` raises ``ValueError``.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

import numpy as np

from . import _format as F
from . import _precision as P
from ._format import FormatError
from ._validate import as_2d, check_ids, check_k, to_numpy
from .quantization import _coerce_ranges, quantize_embeddings
from ._threads import resolve_threads
from .search import _topk

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import RescorePipeline

__all__ = ["Index", "load_index", "FormatError"]

_SIBLING = {np.dtype(np.int8): np.dtype(np.uint8), np.dtype(np.uint8): np.dtype(np.int8)}


def _to_dtype(codes: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """int8 <-> uint8 codes of the same family differ by an XOR with 0x80 on
    every byte (int8 = uint8 - 128 for both scalar and packed-bit codes)."""
    if codes.dtype == dtype:
        return codes
    return (codes.view(np.uint8) ^ np.uint8(0x80)).view(dtype)


def _write_index_file(path: Union[str, os.PathLike], precision: str, dim: int, count: int, codes: F.Source,
                      ids: Optional[np.ndarray] = None, ranges: Optional[np.ndarray] = None) -> int:
    """Write an Index file atomically. ``codes`` is a (count, width) array of
    the precision's code dtype or an iterable of such row blocks (streamed, so
    a sharded build never holds a whole shard in memory); ``ids`` a (count,)
    or (count, 1) int64 array. Returns the file size."""
    flags = (F.FLAG_IDS if ids is not None else 0) | (F.FLAG_RANGES if ranges is not None else 0)
    header = F.Header(F.KIND_INDEX, precision, dim, count, flags)
    rec = P.PRECISIONS[precision]
    sections = [(F.SectionInfo(F.SEC_CODES, rec.code_dtype, count, rec.width(dim)), codes)]
    if ids is not None:
        sections.append((F.SectionInfo(F.SEC_IDS, np.int64, count, 1), ids))
    if ranges is not None:
        sections.append((F.SectionInfo(F.SEC_RANGES, np.float32, 2, dim), ranges))
    return F.write_file(path, header, sections)


def _check_finite(a: np.ndarray, name: str, what: str) -> None:
    """ValueError naming the first row of ``a`` that holds a non-finite value."""
    ok = np.isfinite(a).all(axis=1) if a.ndim == 2 else np.isfinite(a)
    if not ok.all():
        r = int(np.flatnonzero(~ok)[0])
        raise ValueError(f"{name} contains {what} (first in row {r}); a float32 index needs finite embeddings")


class Index:
    """Exact top-k index over embeddings stored at one precision.

    Parameters
    ----------
    dim : int
        Embedding dimension (number of bits for binary/ubinary; the codes
        then have ``ceil(dim / 8)`` bytes).
    precision : {"ubinary", "binary", "int8", "uint8", "float32"}
    ranges : array_like, shape (2, dim), optional
        int8/uint8 only: the calibration ranges (row 0 minimum, row 1
        maximum) used to quantize float input to :meth:`add` and float
        queries to :meth:`search`. Without ranges an int8/uint8 index only
        accepts codes. Stored in the saved file.

    Notes
    -----
    Ids are int64. ``add`` without ``ids`` assigns the row positions
    (0, 1, 2, ...); ids need not be unique. See the module docstring for
    thread safety.
    """

    def __init__(self, dim: int, precision: str = "ubinary", ranges: Optional[Any] = None):
        rec = P.get(precision, name="precision")
        dim = check_k(dim, "dim")
        self._rec = rec
        self._precision = rec.name
        self._dim = dim
        self._width = rec.width(dim)
        self._dtype = rec.code_dtype
        if rec.max_dim is not None and dim > rec.max_dim:
            raise ValueError(f"{rec.name} dot products are exact in int32 up to {rec.max_dim} dims, got dim={dim}")
        if ranges is not None:
            if not rec.needs_ranges:
                raise ValueError(f"ranges only apply to int8/uint8 indexes, not {precision!r}")
            ranges = _coerce_ranges(to_numpy(ranges, "ranges"), dim).copy()
            ranges.setflags(write=False)
        self._ranges = ranges
        self._buf = np.empty((0, self._width), self._dtype)
        self._idbuf: Optional[np.ndarray] = None
        self._n = 0
        self._lock = threading.Lock()
        self._readonly = False
        self._path: Optional[str] = None
        self._file_crc: Optional[int] = None  # header CRC of the file this index was loaded from

    # ------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        """A memory-mapped index pickles as its path and file identity (not its
        bytes); an in-memory one as its rows. The lock is never pickled."""
        if self._readonly and self._path is not None:
            return {"mmap_path": self._path, "file_crc": self._file_crc}
        codes, ids = self._snapshot()
        return {"dim": self._dim, "precision": self._precision, "ranges": self._ranges,
                "codes": np.array(codes), "ids": None if ids is None else np.array(ids)}

    def __setstate__(self, state: dict) -> None:
        if "mmap_path" in state:
            other = load_index(state["mmap_path"], mmap=True)
            if not isinstance(other, Index) or state["file_crc"] not in (None, other._file_crc):
                raise FormatError(f"{state['mmap_path']}: the file changed since this memory-mapped index was "
                                  "pickled (its header checksum differs); load it again")
            self.__dict__.update(other.__dict__)
            return
        Index.__init__(self, state["dim"], state["precision"], state["ranges"])
        codes = state["codes"]
        self._buf = codes
        self._n = codes.shape[0]
        self._idbuf = state["ids"]

    # ------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def width(self) -> int:
        """Bytes (binary) or components (scalar / float) per stored vector."""
        return self._width

    @property
    def ranges(self) -> Optional[np.ndarray]:
        return self._ranges

    @property
    def is_mmap(self) -> bool:
        """True for an index opened with ``load_index(path, mmap=True)`` (read-only)."""
        return self._readonly

    def _snapshot(self) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        with self._lock:
            n = self._n
            return self._buf[:n], (None if self._idbuf is None else self._idbuf[:n])

    @property
    def codes(self) -> np.ndarray:
        """The stored codes, shape (len, width) (a read-only view)."""
        c, _ = self._snapshot()
        v = c.view()
        v.setflags(write=False)
        return v

    @property
    def ids(self) -> np.ndarray:
        """int64 id of every stored row."""
        _, ids = self._snapshot()
        return np.arange(len(self), dtype=np.int64) if ids is None else ids.reshape(-1).copy()

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        where = f", mmap={self._path!r}" if self.is_mmap else ""
        return f"quantlib.Index(dim={self._dim}, precision={self._precision!r}, len={self._n}{where})"

    def memory_usage(self) -> dict:
        """Bytes of codes/ids/ranges held in RAM vs mapped from disk."""
        c, ids = self._snapshot()
        data = c.nbytes + (0 if ids is None else ids.nbytes)
        extra = 0 if self._ranges is None else self._ranges.nbytes
        mapped = data if isinstance(c, np.memmap) else 0
        return {"resident_bytes": data - mapped + extra, "mapped_bytes": mapped,
                "disk_bytes": os.path.getsize(self._path) if self._path and os.path.exists(self._path) else None}

    # ------------------------------------------------------------ input
    def _as_codes(self, x: Any, name: str, threads: Optional[int]) -> Tuple[np.ndarray, bool]:
        """Float input -> codes of this index (quantized), codes -> as they are."""
        arr = to_numpy(x, name)
        arr2, was_1d = as_2d(arr, name)
        rec = self._rec
        p = rec.name
        if rec.is_float:
            if arr2.dtype.kind not in "fiu" or arr2.dtype in (np.int8, np.uint8):
                raise TypeError(f"{name} must be float embeddings for a float32 index, got dtype {arr2.dtype}")
            if arr2.dtype.kind == "f":
                _check_finite(arr2, name, "NaN or infinite values")
            with np.errstate(over="ignore"):  # reported just below
                out = np.ascontiguousarray(arr2, dtype=np.float32)
            if arr2.dtype.itemsize > 4 or arr2.dtype.kind != "f":
                _check_finite(out, name, f"values that overflow float32 (beyond ±3.4e38 as {arr2.dtype})")
            width = out.shape[1]
        elif arr2.dtype in (np.int8, np.uint8):
            out = _to_dtype(arr2, self._dtype)
            width = out.shape[1]
        else:
            if arr2.dtype.kind not in "fiu":
                raise TypeError(f"{name} must be float embeddings or {self._dtype} codes, got dtype {arr2.dtype}")
            if rec.needs_ranges:
                if self._ranges is None:
                    raise ValueError(
                        f"this {p} index has no ranges, so float {name} cannot be quantized: create it with "
                        f"Index(dim, {p!r}, ranges=...) or pass {p} codes")
                if arr2.shape[1] != self._dim:
                    raise ValueError(f"{name} have {arr2.shape[1]} dims but the index has {self._dim}")
                out = quantize_embeddings(arr2, p, ranges=self._ranges, threads=threads)
            else:
                if arr2.shape[1] != self._dim:
                    # compare dims, not packed bytes: 16 float dims must not go into a 10-bit index
                    raise ValueError(f"{name} have {arr2.shape[1]} dims but the index has {self._dim} "
                                     f"({self._width} bytes per packed code)")
                out = quantize_embeddings(arr2, p, threads=threads)
            width = out.shape[1]
        if width != self._width:
            what = "bytes" if rec.is_bits else "dims"
            raise ValueError(f"{name} have {width} {what} per vector but the index has {self._width}")
        return out, was_1d

    # ------------------------------------------------------------ mutation
    def add(self, x: Any, ids: Optional[Any] = None, *, threads: Optional[int] = None) -> None:
        """Append vectors.

        Parameters
        ----------
        x : array_like, shape (m, dim) or (dim,)
            Float embeddings (quantized with this index's precision and
            ranges) or codes of the index's precision, taken as they are
            (for int8/uint8 and binary/ubinary the other signedness is also
            accepted and converted exactly with an XOR of 0x80).
        ids : array_like of int, shape (m,), optional
            int64 ids returned by :meth:`search`; default: row positions.
        """
        if self._readonly:
            raise ValueError("this index is memory-mapped read-only; load it with load_index(path, mmap=False) "
                             "to add vectors")
        codes, _ = self._as_codes(x, "x", threads)
        m = codes.shape[0]
        new_ids = None
        if ids is not None:
            new_ids = check_ids(ids, m, "ids")
        if m == 0:
            return
        with self._lock:
            n = self._n
            need = n + m
            if need > self._buf.shape[0]:
                cap = max(need, 2 * self._buf.shape[0], 1024)
                buf = np.empty((cap, self._width), self._dtype)
                buf[:n] = self._buf[:n]
                if self._idbuf is not None:
                    ib = np.empty((cap, 1), np.int64)
                    ib[:n] = self._idbuf[:n]
                    self._idbuf = ib
                self._buf = buf
            if new_ids is not None and self._idbuf is None:
                ib = np.empty((self._buf.shape[0], 1), np.int64)
                ib[:n, 0] = np.arange(n)
                self._idbuf = ib
            self._buf[n:need] = codes
            if self._idbuf is not None:
                self._idbuf[n:need, 0] = np.arange(n, need) if new_ids is None else new_ids
            self._n = need  # publish last: searches snapshot [:n]

    @classmethod
    def _wrap(cls, codes: np.ndarray, precision: str, dim: int, ranges: Optional[np.ndarray]) -> "Index":
        """Adopt a C-contiguous code array without copying (capacity == len,
        so a later add reallocates and never writes into the caller's array)."""
        idx = cls(dim, precision, ranges)
        c = np.ascontiguousarray(_to_dtype(codes, idx._dtype) if codes.dtype != idx._dtype and
                                 codes.dtype in _SIBLING else codes, dtype=idx._dtype)
        if c.ndim != 2 or c.shape[1] != idx._width:
            raise ValueError(f"codes must have shape (n, {idx._width}), got {c.shape}")
        idx._buf = c
        idx._n = c.shape[0]
        return idx

    # ------------------------------------------------------------ search
    def search(self, queries: Any, k: int = 10, *, threads: Optional[int] = None,
               similarity: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Exact top-k.

        Parameters
        ----------
        queries : array_like, shape (Q, dim) or (dim,)
            Float embeddings (quantized like :meth:`add` does) or codes.
        k : int
            ``k > len(self)`` returns ``len(self)`` columns (no padding).
        similarity : bool, keyword-only
            False (default): the precision's own score (see the table in the
            module docstring). True: float64 similarities on one scale, higher
            is better, for every precision: float32 -> the inner product (the
            cosine for normalised embeddings); binary/ubinary ->
            ``1 - 2 * hamming / dim`` (the cosine of the +-1 sign vectors);
            int8/uint8 -> the dot product of the float query (or of the
            dequantized query codes) with the dequantized hits, the exact top-k
            by code dot product re-ordered by that value (ties to the lower
            row); needs the index's ranges.

        Returns
        -------
        values : numpy.ndarray, shape (Q, min(k, len))
            See ``similarity``.
        ids : numpy.ndarray of int64
            The ids of the hits (row positions unless ids were given).
            1-D queries give 1-D results.
        """
        k = check_k(k)
        if not isinstance(similarity, (bool, np.bool_)):
            raise TypeError(f"similarity must be True or False, got {type(similarity).__name__} {similarity!r}")
        q, was_1d = self._as_codes(queries, "queries", threads)
        vals, pos, ids = self._search_codes(q, k, threads)
        if similarity:
            vals, pos = self._similarity(queries, q, vals, pos, threads)
        out = pos if ids is None else ids.reshape(-1)[pos]
        if was_1d:
            return vals[0], out[0]
        return vals, out

    def _similarity(self, queries: Any, q: np.ndarray, vals: np.ndarray, pos: np.ndarray,
                    threads: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        """The values of :meth:`search` on the common scale (``similarity=True``)."""
        rec = self._rec
        if rec.is_float:
            return vals.astype(np.float64), pos
        if rec.is_bits:
            return 1.0 - 2.0 * vals.astype(np.float64) / self._dim, pos
        if self._ranges is None:
            raise ValueError(f"similarity=True for a {rec.name} index needs its ranges (to dequantize the codes): "
                             f"create it with Index(dim, {rec.name!r}, ranges=...)")
        from .quantization import dequantize_embeddings
        from .search import _rescore

        raw, _ = as_2d(to_numpy(queries, "queries"), "queries")
        qf = dequantize_embeddings(q, rec.name, self._ranges) if raw.dtype.kind in "iu" else raw
        q64 = np.array(qf, dtype=np.float64, order="C", copy=True)
        codes, _ = self._snapshot()
        return _rescore(q64, codes, np.ascontiguousarray(pos, dtype=np.int64), rec, self._ranges, None,
                        resolve_threads(threads))

    def _search_codes(self, q: np.ndarray, k: int, threads: Optional[int]):
        """(values, row positions, id array or None) for prepared 2-D codes."""
        codes, ids = self._snapshot()
        # q comes from _as_codes (dtype, width and finiteness checked once): no second validation pass
        vals, pos = _topk(q, codes, k, self._rec, resolve_threads(threads))
        return vals, pos, ids

    # ------------------------------------------------------------ persistence
    def save(self, path: Union[str, os.PathLike]) -> int:
        """Write the index to ``path`` atomically (see :mod:`quantlib._format`):
        a crash leaves the previous file or the new one, never a torn one (a
        killed writer may leave a ``.<name>.*.tmp`` file, safe to delete).
        Returns the file size in bytes."""
        codes, ids = self._snapshot()
        return _write_index_file(path, self._precision, self._dim, codes.shape[0], codes, ids, self._ranges)

    @classmethod
    def _from_file(cls, f, path: str, h: F.Header, mmap: bool, verify: bool) -> "Index":
        """Build from the open file ``f`` whose header ``h`` was read."""
        ranges = None
        if h.flags & F.FLAG_RANGES:
            ranges = F.read_section(f, h.sections[F.SEC_RANGES], mmap=False, verify=True, path=path)
            if not np.isfinite(ranges).all():
                raise FormatError(f"{path}: stored ranges are not finite")
        codes = F.read_section(f, h.sections[F.SEC_CODES], mmap=mmap, verify=verify, path=path)
        ids = None
        if h.flags & F.FLAG_IDS:
            ids = F.read_section(f, h.sections[F.SEC_IDS], mmap=mmap, verify=verify, path=path)
        idx = cls(h.dim, h.precision, ranges)
        idx._buf = codes
        idx._idbuf = ids
        idx._n = h.count
        idx._path = os.path.abspath(path)
        idx._readonly = bool(mmap)  # also when empty (nothing is actually mapped then)
        idx._file_crc = h.header_crc
        return idx


def load_index(path: Union[str, os.PathLike], mmap: bool = True, *,
               verify: bool = False) -> Union["Index", "RescorePipeline"]:
    """Open a file written by :meth:`Index.save` or :meth:`RescorePipeline.save`.

    Parameters
    ----------
    path : str or os.PathLike
    mmap : bool
        True (default): the codes are memory-mapped read-only and searched in
        place (the OS pages them in on demand; nothing is copied into the
        process heap). False: the codes are read into memory and their
        checksums verified; the index can then be extended with ``add``.
    verify : bool
        Also verify the checksums of memory-mapped sections (reads them
        once through the page cache).

    Returns
    -------
    Index or RescorePipeline

    Raises
    ------
    FormatError
        The file is truncated, corrupted, of another format version, or not a
        quantlib index. (``OSError`` if it cannot be opened at all.)

    Notes
    -----
    quantlib replaces files atomically, so saving over a path that is
    currently mapped is safe (the mapping keeps the old contents). Truncating
    a mapped file in place by other means is not: the OS then delivers
    SIGBUS on access, as for any memory map.
    """
    path = os.fspath(path)
    for name, flag in (("mmap", mmap), ("verify", verify)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {type(flag).__name__} {flag!r}")
    # one descriptor for the header and every section: a load racing an atomic
    # save (os.replace) reads the old file or the new one, never parts of both
    with F.open_read(path) as f:
        h = F.read_header(f, path)
        if h.file_kind == F.KIND_PIPELINE:
            from .pipeline import RescorePipeline

            return RescorePipeline._from_file(f, path, h, mmap, verify)
        return Index._from_file(f, path, h, mmap, verify)
