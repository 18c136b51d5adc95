"""The binary -> int8 rescoring pipeline as one object.

This is the Hugging Face blog's 41 M-document setup: packed binary codes
(``N * ceil(d/8)`` bytes) live in RAM and are searched exactly by Hamming
distance; the int8 codes (``N * d`` bytes) stay on disk, memory-mapped, and
only the ``k * rescore_multiplier`` candidate rows per query are read to
rescore them with the float query (dequantized codes, float64, exactly as
sentence-transformers 6.2 rescores). The calibration ranges are stored in
the same file.

Thread safety: :meth:`RescorePipeline.search` may be called from many threads
at once (everything it touches is read-only).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Tuple, Union

import numpy as np

from . import _format as F
from . import _precision as P
from ._format import FormatError
from ._validate import as_2d, check_ids, check_k, check_precision, to_numpy
from .quantization import _coerce_ranges, _ranges_from, _self_ranges, calibration_ranges, quantize_embeddings
from ._threads import resolve_threads
from .quantization import _pack_sign
from .search import _rescore, _topk

__all__ = ["RescorePipeline"]

Progress = Union[bool, Callable[[int, int], Any], None]


def _progress_callback(progress: Progress, total: int):
    """True -> a tqdm bar when tqdm is installed (silently none otherwise);
    a callable -> called as progress(rows_done, rows_total)."""
    if callable(progress):
        return progress, None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover
            return None, None
        bar = tqdm(total=total, unit="vec", desc="quantlib build")
        state = {"done": 0}

        def cb(done: int, _total: int) -> None:
            bar.update(done - state["done"])
            state["done"] = done

        return cb, bar
    return None, None


# the in-RAM first stage: packed sign bits held as ubinary (Hamming distance)
_FIRST_STAGE = P.PRECISIONS["ubinary"]


class RescorePipeline:
    """Binary retrieval in RAM + int8 rescoring from a memory-mapped file.

    Create with :meth:`build` (streams float embeddings into a file) and
    reopen with :func:`quantlib.load_index` or :meth:`load`.

    Attributes
    ----------
    dim : int
    ranges : numpy.ndarray of float32, shape (2, dim)
        Calibration ranges the int8 codes were quantized with.
    binary_codes : numpy.ndarray of uint8, shape (N, ceil(dim/8))
        ubinary codes, resident in RAM.
    rescore_codes : numpy.ndarray (np.memmap) of int8, shape (N, dim)
        int8 (or uint8) codes mapped from ``path``.
    path : str
    ids : numpy.ndarray of int64, shape (N, 1), or None
        Optional ids (memory-mapped like the int8 codes); None means the row
        numbers are the ids.
    """

    def __init__(self, dim: int, ranges: np.ndarray, binary_codes: np.ndarray, rescore_codes: np.ndarray,
                 path: Optional[str], rescore_precision: str = "int8", ids: Optional[np.ndarray] = None):
        self.dim = dim
        self.ids = ids  # optional (N, 1) int64 (memmapped with the codes), None = row numbers
        self.ranges = ranges
        self.binary_codes = binary_codes
        self.rescore_codes = rescore_codes
        self.rescore_precision = rescore_precision
        self.path = path
        self._file_crc: Optional[int] = None  # header CRC of the file this pipeline was loaded from

    def __getstate__(self) -> dict:
        """Memory-mapped int8 codes pickle as the file's path and identity (the
        bytes stay on disk); in-memory pipelines pickle their arrays."""
        if self.path is not None and isinstance(self.rescore_codes, np.memmap):
            return {"mmap_path": self.path, "file_crc": self._file_crc}
        state = dict(self.__dict__)
        state["rescore_codes"] = np.array(self.rescore_codes)
        if isinstance(self.ids, np.memmap):
            state["ids"] = np.array(self.ids)
        return state

    def __setstate__(self, state: dict) -> None:
        if "mmap_path" in state:
            other = RescorePipeline.load(state["mmap_path"], mmap=True)
            if state["file_crc"] not in (None, other._file_crc):
                raise FormatError(f"{state['mmap_path']}: the file changed since this pipeline was pickled "
                                  "(its header checksum differs); load it again")
            state = other.__dict__
        self.__dict__.update(state)

    def __len__(self) -> int:
        return self.binary_codes.shape[0]

    def __repr__(self) -> str:
        return (f"quantlib.RescorePipeline(dim={self.dim}, len={len(self)}, "
                f"rescore_precision={self.rescore_precision!r}, path={self.path!r})")

    # ---------------------------------------------------------------- build
    @classmethod
    def build(cls, embeddings: Any, path: Union[str, os.PathLike], ranges: Optional[Any] = None,
              calibration_embeddings: Optional[Any] = None, chunk_size: int = 65536,
              progress: Progress = False, *, ids: Optional[Any] = None, rescore_precision: str = "int8",
              threads: Optional[int] = None) -> "RescorePipeline":
        """Quantize ``embeddings`` chunk by chunk into a pipeline file at ``path``.

        Parameters
        ----------
        embeddings : array_like, shape (N, d)
            Float embeddings; an ``np.memmap`` (or any array supporting row
            slicing) is read ``chunk_size`` rows at a time, so the float
            matrix never has to fit in RAM. Peak memory: the binary codes
            (N*d/8 bytes) plus one chunk.
        path : str or os.PathLike
            Destination, written atomically.
        ranges : array_like, shape (2, d), optional
            int8 calibration ranges. Default: from ``calibration_embeddings``,
            else from ``embeddings`` themselves (one extra chunked pass; at
            least 2 rows, as in sentence-transformers).
        calibration_embeddings : array_like, optional
        chunk_size : int
            Rows per chunk.
        progress : bool or callable
            True shows a tqdm progress bar (if tqdm is installed); a callable
            is called as ``progress(rows_done, rows_total)`` after each chunk.
        ids : array_like of int, shape (N,), keyword-only, optional
            int64 ids reported by :meth:`search` instead of row numbers
            (stored in the file, memory-mapped on load).
        rescore_precision : {"int8", "uint8"}, keyword-only
        threads : int or None, keyword-only

        Returns
        -------
        RescorePipeline
            Opened from the written file (int8 codes memory-mapped).
        """
        rescore_precision = check_precision(rescore_precision, P.where(family="scalar"), "rescore_precision")
        x = embeddings
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            x = to_numpy(x, "embeddings")
        if len(x.shape) != 2:
            raise ValueError(f"embeddings must be 2-D (N, d), got shape {tuple(x.shape)}")
        if np.dtype(x.dtype).kind not in "fiu" or np.dtype(x.dtype) in (np.int8, np.uint8):
            raise TypeError(f"embeddings must be float embeddings, got dtype {x.dtype}")
        n, d = int(x.shape[0]), int(x.shape[1])
        if d < 1:
            raise ValueError("embeddings must have at least one dimension")
        chunk_size = check_k(chunk_size, "chunk_size")
        id_arr = None
        if ids is not None:
            id_arr = check_ids(ids, n, "ids").reshape(n, 1)
        if ranges is not None:
            r = _coerce_ranges(to_numpy(ranges, "ranges"), d)
        elif calibration_embeddings is not None:
            r = _ranges_from(calibration_embeddings, rescore_precision).astype(np.float32)
        else:
            if n == 0:
                raise ValueError("cannot compute ranges from 0 embeddings: pass ranges= or calibration_embeddings=")
            if n < 100:  # upstream's single-embedding ValueError / small-sample warning
                r = _self_ranges(np.asarray(x), rescore_precision)
            else:
                r = calibration_ranges(x, chunk_size=chunk_size, threads=threads)
        r = _coerce_ranges(r, d)
        width = (d + 7) // 8
        binary = np.empty((n, width), np.uint8)
        cb, bar = _progress_callback(progress, n)
        code_dtype = P.PRECISIONS[rescore_precision].code_dtype

        def chunks():
            for s in range(0, n, chunk_size):
                block = np.asarray(x[s: s + chunk_size])
                binary[s: s + len(block)] = quantize_embeddings(block, _FIRST_STAGE.name, threads=threads)  # noqa: F821 (runs before the del)
                yield quantize_embeddings(block, rescore_precision, ranges=r, threads=threads)
                if cb is not None:
                    cb(min(n, s + len(block)), n)

        flags = F.FLAG_RANGES | (F.FLAG_IDS if id_arr is not None else 0)
        header = F.Header(F.KIND_PIPELINE, _FIRST_STAGE.name, d, n, flags)
        sections = [
            (F.SectionInfo(F.SEC_RANGES, np.float32, 2, d), r),
            (F.SectionInfo(F.SEC_RESCORE, code_dtype, n, d), chunks()),  # streamed first: fills `binary`
            (F.SectionInfo(F.SEC_CODES, np.uint8, n, width), binary),
        ]
        if id_arr is not None:
            sections.append((F.SectionInfo(F.SEC_IDS, np.int64, n, 1), id_arr))
        try:
            F.write_file(path, header, sections)
        finally:
            if bar is not None:
                bar.close()
        del binary
        return cls.load(path)

    # ---------------------------------------------------------------- persistence
    @classmethod
    def load(cls, path: Union[str, os.PathLike], mmap: bool = True, *, verify: bool = False) -> "RescorePipeline":
        """Open a pipeline file (see :func:`quantlib.load_index`). The binary
        codes are always read into RAM (checksum verified); the int8 codes
        are memory-mapped when ``mmap`` (default) or read into RAM."""
        path = os.fspath(path)
        for name, flag in (("mmap", mmap), ("verify", verify)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {type(flag).__name__} {flag!r}")
        with F.open_read(path) as f:  # header and sections from one descriptor: never a mix of two files
            h = F.read_header(f, path)
            if h.file_kind != F.KIND_PIPELINE:
                raise FormatError(f"{path}: not a RescorePipeline file (it holds a {F.FILE_KINDS[h.file_kind]})")
            return cls._from_file(f, path, h, mmap, verify)

    @classmethod
    def _from_file(cls, f, path: str, h: F.Header, mmap: bool, verify: bool) -> "RescorePipeline":
        """Build from the open file ``f`` whose header ``h`` was read."""
        ranges = F.read_section(f, h.sections[F.SEC_RANGES], mmap=False, verify=True, path=path)
        if not np.isfinite(ranges).all():
            raise FormatError(f"{path}: stored ranges are not finite")
        binary = F.read_section(f, h.sections[F.SEC_CODES], mmap=False, verify=True, path=path)
        sec = h.sections[F.SEC_RESCORE]
        rescore_codes = F.read_section(f, sec, mmap=mmap, verify=verify, path=path)
        prec = P.where(family="scalar", code_dtype=sec.dtype)[0]
        binary = binary.view(np.uint8) ^ np.uint8(P.PRECISIONS[h.precision].xor_mask)  # held as ubinary
        ids = None
        if h.flags & F.FLAG_IDS:
            ids = F.read_section(f, h.sections[F.SEC_IDS], mmap=mmap, verify=verify, path=path)
        pipe = cls(h.dim, ranges, binary, rescore_codes, os.path.abspath(path), prec, ids)
        pipe._file_crc = h.header_crc
        return pipe

    def save(self, path: Union[str, os.PathLike]) -> int:
        """Write a copy of this pipeline to ``path`` atomically (streams the
        int8 codes). Returns the file size."""
        n, d = self.rescore_codes.shape
        step = max(1, (1 << 24) // max(d, 1))

        def chunks():
            for s in range(0, n, step):
                yield np.asarray(self.rescore_codes[s: s + step])

        flags = F.FLAG_RANGES | (F.FLAG_IDS if self.ids is not None else 0)
        header = F.Header(F.KIND_PIPELINE, _FIRST_STAGE.name, self.dim, n, flags)
        sections = [
            (F.SectionInfo(F.SEC_RANGES, np.float32, 2, self.dim), self.ranges),
            (F.SectionInfo(F.SEC_RESCORE, self.rescore_codes.dtype, n, d), chunks()),
            (F.SectionInfo(F.SEC_CODES, np.uint8, n, self.binary_codes.shape[1]), self.binary_codes),
        ]
        if self.ids is not None:
            sections.append((F.SectionInfo(F.SEC_IDS, np.int64, n, 1), np.asarray(self.ids)))
        if self.path is not None and os.path.exists(path) and os.path.samefile(path, self.path):
            raise ValueError("cannot save a pipeline over its own memory-mapped file; choose another path")
        return F.write_file(path, header, sections)

    def memory_usage(self) -> dict:
        """Resident memory vs disk size, in bytes.

        ``resident_bytes``: arrays held in process memory (the binary codes
        and the ranges, plus the int8 codes if they were loaded with
        ``mmap=False``). ``mapped_bytes``: the int8 codes (and ids) mapped
        from disk (paged in on demand, only the candidate rows are touched).
        ``disk_bytes``: the file size.
        """
        arrays = [self.rescore_codes] + ([self.ids] if self.ids is not None else [])
        mapped = sum(a.nbytes for a in arrays if isinstance(a, np.memmap))
        resident = self.binary_codes.nbytes + self.ranges.nbytes + sum(a.nbytes for a in arrays) - mapped
        disk = os.path.getsize(self.path) if self.path and os.path.exists(self.path) else None
        return {"resident_bytes": int(resident), "mapped_bytes": int(mapped), "disk_bytes": disk,
                "binary_bytes": int(self.binary_codes.nbytes), "rescore_bytes": int(self.rescore_codes.nbytes)}

    # ---------------------------------------------------------------- search
    def search(self, queries: Any, k: int = 10, rescore_multiplier: int = 4, *,
               threads: Optional[int] = None, top_k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Binary retrieval of ``k * rescore_multiplier`` candidates, then
        int8 rescoring with the float query.

        Parameters
        ----------
        queries : array_like, shape (Q, d) or (d,)
            Float query embeddings.
        k : int
            Hits per query (``k > len`` returns ``len`` columns). ``k`` is the
            name every quantlib search uses; ``top_k=`` (the
            sentence-transformers spelling, this method's earlier name) is
            accepted as an alias.
        rescore_multiplier : int
            Binary candidates per hit that are rescored (default 4: 99 % of
            NDCG@10 kept on the demo corpus; the sentence-transformers
            drop-ins keep upstream's default of 2).

        Returns
        -------
        scores : numpy.ndarray of float64, shape (Q, min(k, N))
            ``query . dequantize(int8 code)``, descending; ties to the lower id.
        ids : numpy.ndarray of int64
            Row numbers of the hits (or the ids given to :meth:`build`).
            1-D queries give 1-D results.
        """
        if top_k is not None:
            if k != 10 and k != top_k:
                raise TypeError(f"pass k or its alias top_k, not both (k={k!r}, top_k={top_k!r})")
            k = top_k
            top_k = check_k(k, "top_k")
        else:
            top_k = check_k(k, "k")
        rescore_multiplier = check_k(rescore_multiplier, "rescore_multiplier")
        q = to_numpy(queries, "queries")
        q2, was_1d = as_2d(q, "queries")
        if q2.dtype.kind not in "fiu" or q2.dtype in (np.int8, np.uint8):
            raise TypeError(f"queries must be float embeddings, got dtype {q2.dtype}")
        if q2.shape[1] != self.dim:
            raise ValueError(f"queries have {q2.shape[1]} dims but the pipeline has {self.dim}")
        n = len(self)
        if n == 0:
            scores = np.empty((q2.shape[0], 0), np.float64)
            ids = np.empty((q2.shape[0], 0), np.int64)
        else:
            # one validation pass: the stages below take prepared arrays
            t = resolve_threads(threads)
            q64 = np.array(q2, dtype=np.float64, order="C", copy=True)
            if not np.isfinite(q64).all():
                raise ValueError("queries contain NaN or infinite values")
            qb = _pack_sign(q2, _FIRST_STAGE.xor_mask, t)
            _, cand = _topk(qb, self.binary_codes, top_k * rescore_multiplier, _FIRST_STAGE, t)
            scores, ids = _rescore(q64, self.rescore_codes, cand, P.PRECISIONS[self.rescore_precision],
                                   self.ranges, top_k, t)
            if self.ids is not None:  # fancy indexing a memmap touches only the hit pages
                ids = np.asarray(self.ids).reshape(-1)[ids]
        if was_1d:
            return scores[0], ids[0]
        return scores, ids
