"""Exact top-k search over quantized (and float) embeddings.

All results are exact and deterministic: distances ascending / scores
descending, ties to the lower corpus index, identical for every thread
count and every kernel level (scalar, AVX2, AVX-512, NEON).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _core
from . import _precision as P
from ._threads import resolve_threads, run_parallel, split_range
from ._validate import (
    as_2d,
    check_codes,
    check_k,
    check_same_width,
    contiguous,
    infer_precision,
    to_numpy,
    width_desc,
)

__all__ = ["search", "hamming_distance", "int8_dot", "rescore", "merge_topk"]

# Work (query-rows x corpus-bytes) below which a call stays on one thread.
_PARALLEL_MIN_WORK = 1 << 22
# Rows per block when scanning a float32 corpus for its first non-finite row
# (error path only); kept as a name because tests build layouts around it.
_FLOAT_BLOCK = 16384


# ------------------------------------------------------------------ merging
def merge_topk(values: np.ndarray, ids: np.ndarray, k: int, *, descending: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k of concatenated candidate lists, row by row.

    ``values`` and ``ids`` are (Q, m) arrays; the best ``min(k, m)`` pairs
    per row are returned, ordered by value (descending if ``descending``)
    then by the lower id. Used to merge the partial results of corpus shards
    (threads, index segments, distributed shards) with the same tie rule as
    the kernels.
    """
    k = check_k(k)  # a negative k would silently slice from the end
    values = np.asarray(values)
    if ids is None:
        raise TypeError("ids must be an integer array, got None")
    ids = to_numpy(ids, "ids")
    if values.shape != ids.shape or values.ndim != 2:
        raise ValueError(f"values and ids must be 2-D arrays of one shape, got {values.shape} and {ids.shape}")
    if ids.dtype.kind not in "iu" and ids.size:
        # a float id would be truncated silently (2.7 -> 2)
        raise TypeError(f"ids must be an integer array, got dtype {ids.dtype}")
    if ids.dtype == np.uint64 and ids.size and ids.max() > np.iinfo(np.int64).max:
        raise ValueError(f"ids must fit in int64, got max {ids.max()}")
    ids = ids.astype(np.int64, copy=False)
    kk = min(k, values.shape[1])
    if values.shape[1] == 0:
        return values[:, :0], ids[:, :0]
    if values.dtype.kind in "iu":
        # bitwise NOT reverses the order of any integer dtype without overflow
        # (~x == -x - 1); negation would wrap INT_MIN (and every unsigned value)
        primary = ~values if descending else values
    else:
        primary = -values if descending else values
    m = values.shape[1]
    if m > 2 * kk + 16 and values.shape[0] and not (values.dtype.kind in "fc" and np.isnan(primary).any()):
        # Long rows (many shards / blocks): select first, sort only the survivors.
        # Every entry whose key is <= the row's kk-th smallest key survives (ties
        # at the threshold included, so the lower-id rule still sees all of them).
        thr = np.partition(primary, kk - 1, axis=1)[:, kk - 1:kk]
        keep = primary <= thr
        width = int(keep.sum(axis=1).max())
        if width <= m // 2:
            cols = np.argsort(~keep, axis=1, kind="stable")[:, :width]  # survivors first (radix sort)
            valid = np.take_along_axis(keep, cols, axis=1)
            order = np.lexsort((np.take_along_axis(ids, cols, axis=1), np.take_along_axis(primary, cols, axis=1),
                                ~valid), axis=-1)[:, :kk]
            order = np.take_along_axis(cols, order, axis=1)
            return np.take_along_axis(values, order, axis=1), np.take_along_axis(ids, order, axis=1)
    order = np.lexsort((ids, primary), axis=-1)[:, :kk]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(ids, order, axis=1)


# ------------------------------------------------------------------ kernels
def _split_topk(run, q: np.ndarray, c: np.ndarray, kk: int, threads: int, work: int, descending: bool):
    """The thread policy of every top-k kernel. ``run(qa, ca, offset)`` returns
    (values, ids, ok) for queries ``qa`` over corpus rows ``ca`` numbered from
    ``offset``. Small problems stay on the calling thread; with at least 8
    queries per thread the queries are split (every thread scans the corpus);
    otherwise the corpus is split and the partial top-k lists are merged.
    Returns (values, ids, ok) with ``ok`` true only if every part was."""
    nq, nc = q.shape[0], c.shape[0]
    if threads <= 1 or work < _PARALLEL_MIN_WORK:
        return run(q, c, 0)
    if nq >= 8 * threads:
        parts = run_parallel(lambda a, b: run(q[a:b], c, 0), split_range(nq, threads))
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                all(p[2] for p in parts))
    parts = run_parallel(lambda a, b: run(q, c[a:b], a), split_range(nc, threads, align=64))
    if not all(p[2] for p in parts):
        return None, None, False
    vals, idx = merge_topk(np.concatenate([p[0] for p in parts], axis=1),
                           np.concatenate([p[1] for p in parts], axis=1), kk, descending=descending)
    return vals, idx, True


def _kernel_topk(q: np.ndarray, c: np.ndarray, k: int, precision: str, threads: int):
    """q, c: C-contiguous uint8 views. Returns (keys int32, ids int64) of (nq, min(k, nc))."""
    nq, width = q.shape
    nc = c.shape[0]
    rec = P.PRECISIONS[precision]
    binary = rec.kernel == "hamming"
    signed = rec.signed

    def run(qa: np.ndarray, ca: np.ndarray, offset: int):
        kq = min(k, ca.shape[0])
        vals = np.empty((qa.shape[0], kq), np.int32)
        idx = np.empty((qa.shape[0], kq), np.int64)
        # pass the clamped k: a huge Python int k (> 2**64) must mean "all rows", not OverflowError
        if binary:
            _core.hamming_topk(qa, ca, kq, offset, vals, idx)
        else:
            _core.dot_topk(qa, ca, signed, kq, offset, vals, idx)
        return vals, idx, True

    vals, idx, _ = _split_topk(run, q, c, min(k, nc), threads, nq * nc * width, descending=not binary)
    return vals, idx


def _float_topk(q: np.ndarray, c: np.ndarray, k: int, threads: int, c_src: Optional[np.ndarray] = None):
    """Inner-product top-k of C-contiguous float32 arrays with the fused C kernel
    (csrc/f32: register-tiled FMA products, selection inside the scan, no score
    matrix). Every score is computed in one fixed summation order per row (16
    FMA lanes, a fixed reduction tree), so the result does not depend on the
    thread count, the corpus split or the ISA level (threads as in _split_topk)."""
    nq, d = q.shape
    nc = c.shape[0]

    def run(qa: np.ndarray, ca: np.ndarray, offset: int):
        kq = min(k, ca.shape[0])
        vals = np.empty((qa.shape[0], kq), np.float32)
        idx = np.empty((qa.shape[0], kq), np.int64)
        finite = _core.f32_topk(qa, ca, kq, offset, vals, idx)
        return vals, idx, finite

    vals, idx, finite = _split_topk(run, q, c, min(k, nc), threads, nq * nc * d * 4, descending=True)
    if not finite:
        _raise_nonfinite(q, c, c_src)
    return vals, idx


def _raise_nonfinite(q: np.ndarray, c: np.ndarray, c_src: Optional[np.ndarray]):
    """The kernel saw a NaN or infinite score: say why (error path only)."""
    step = _FLOAT_BLOCK
    for s in range(0, c.shape[0], step):
        block = c[s : s + step]
        bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if bad.size:
            r = s + int(bad[0])
            if c_src is not None and c_src is not c and np.isfinite(c_src[r]).all():
                raise ValueError(f"corpus row {r} overflows float32 (a {c_src.dtype} value beyond ±3.4e38 "
                                 "becomes infinite); scale the embeddings down")
            raise ValueError(f"corpus contains NaN or infinite values (e.g. row {r})")
    for s in range(0, c.shape[0], step):
        block = c[s : s + step]
        with np.errstate(over="ignore", invalid="ignore"):
            ok = np.isfinite(q.astype(np.float64) @ block.astype(np.float64).T).all() and \
                np.isfinite(q @ block.T).all()
        if not ok:
            raise ValueError("float32 inner products overflowed (|query . row| beyond 3.4e38, first in corpus rows "
                             f"{s}..{s + block.shape[0] - 1}); scale the embeddings down")
    raise ValueError("float32 inner products overflowed (|query . row| beyond 3.4e38); scale the embeddings down")


def _topk(q: np.ndarray, c: np.ndarray, k: int, rec: "P.Precision", threads: int,
          c_src: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k of prepared 2-D arrays, no argument checks: the callers
    (:func:`search`, :class:`Index`, the pipeline, shard servers) have
    validated dtype, width, finiteness and ``threads`` once. Float precisions
    take float32 arrays, the others their code arrays (viewed as bytes here)."""
    nq, nc = q.shape[0], c.shape[0]
    kk = min(k, nc)
    if rec.is_float:
        q = contiguous(q, np.float32)
        c = contiguous(c, np.float32)
        if nq == 0 or nc == 0 or q.shape[1] == 0:
            # no queries, empty corpus, or d = 0 (every score 0: the lowest k indices)
            vals = np.zeros((nq, kk), rec.value_dtype)
            return vals, np.broadcast_to(np.arange(kk, dtype=np.int64), vals.shape).copy()
        return _float_topk(q, c, k, threads, c_src=c_src)
    if nq == 0 or nc == 0:
        return np.empty((nq, kk), rec.value_dtype), np.empty((nq, kk), np.int64)
    return _kernel_topk(contiguous(q).view(np.uint8), contiguous(c).view(np.uint8), k, rec.name, threads)


# ------------------------------------------------------------------ public
def search(
    queries: Any,
    corpus: Any,
    k: int = 10,
    *,
    precision: Optional[str] = None,
    threads: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k search of ``queries`` in ``corpus``.

    Parameters
    ----------
    queries : array_like, shape (Q, w) or (w,)
        Query codes of ``precision``, or float embeddings: for float32 as
        they are, for binary/ubinary quantized by sign here (like
        :meth:`Index.search`); int8/uint8 queries must be codes (quantize
        them with the corpus's ranges, or use an :class:`Index` that holds
        them).
    corpus : array_like, shape (N, w)
        Corpus codes of the same precision and width. Memory-mapped arrays
        are scanned in place (no copy when C-contiguous).
    k : int
        Number of neighbours; ``k > N`` returns N columns (never padding).
    precision : {"binary", "ubinary", "int8", "uint8", "float32"}, optional
        ``binary``/``ubinary``: packed bits (int8 / uint8 from
        :func:`quantize_embeddings`), compared by Hamming distance; both give
        identical distances. ``int8``/``uint8``: scalar codes, compared by
        their exact integer dot product. ``float32``: inner product computed
        with numpy's BLAS. Inferred from the dtype when unambiguous (float
        input), otherwise required.
    threads : int or None
        Worker threads, None = all usable cores. Policy: small problems stay
        on the calling thread; with at least 8 queries per thread the queries
        are split across threads (each scans the corpus); with fewer queries
        the corpus is split and the partial top-k lists are merged. Results
        are identical for every thread count.

    Returns
    -------
    values : numpy.ndarray, shape (Q, min(k, N))
        int32 Hamming distances (ascending) for binary/ubinary, int32 dot
        products (descending) for int8/uint8, float32 inner products
        (descending) for float32.
    indices : numpy.ndarray of int64, same shape
        Corpus row numbers; ties go to the lower index.
        A 1-D query gives 1-D results.

    Raises
    ------
    TypeError
        Wrong dtype for the precision, non-integer ``k``, non-array input.
    ValueError
        Unknown or ambiguous precision, ``k < 1``, mismatched widths, wrong
        rank, dimension too large for exact int32 dot products.
    """
    q = to_numpy(queries, "queries")
    c = to_numpy(corpus, "corpus")
    k = check_k(k)
    if precision is None:
        precision = infer_precision(c, "corpus")
    rec = P.get(precision)
    precision = rec.name
    t = resolve_threads(threads)
    q2, was_1d = as_2d(q, "queries")
    if c.ndim != 2:
        raise ValueError(f"corpus must be 2-D (N, w), got {c.ndim}-D array of shape {c.shape}")

    if rec.is_float:
        for arr, name in ((q2, "queries"), (c, "corpus")):
            if arr.dtype.kind not in "fiu" or arr.dtype in (np.int8, np.uint8):
                raise TypeError(f"{name} must be float embeddings for precision='float32', got dtype {arr.dtype}")
        check_same_width(q2, c, precision)
        if not np.isfinite(q2).all():
            raise ValueError("queries contain NaN or infinite values")
        with np.errstate(over="ignore"):  # overflow is reported below as ValueError
            qf = contiguous(q2, np.float32)
            cf = contiguous(c, np.float32)
        if not np.isfinite(qf).all():
            raise ValueError("queries overflow float32 (values beyond ±3.4e38 become infinite)")
        vals, idx = _topk(qf, cf, k, rec, t, c_src=c)
    else:
        if rec.is_bits and q2.dtype.kind == "f":
            # float queries for a packed-bit corpus are quantized by sign, as Index.search does
            if c.dtype == rec.code_dtype and c.shape[1] != (q2.shape[1] + 7) // 8:
                raise ValueError(f"queries have {q2.shape[1]} float dims, which pack to {(q2.shape[1] + 7) // 8} "
                                 f"bytes, but corpus has {width_desc(c.shape[1], precision)}")
            from .quantization import _pack_sign

            q2 = _pack_sign(q2, rec.xor_mask, t).view(rec.code_dtype)
        check_codes(q2, precision, "queries")
        check_codes(c, precision, "corpus")
        check_same_width(q2, c, precision)
        width = c.shape[1]
        if width == 0:
            raise ValueError("codes must have at least one byte / dimension, got width 0")
        if rec.max_dim is not None and width > rec.max_dim:
            raise ValueError(f"{precision} dot products are exact in int32 up to {rec.max_dim} dims, got {width}")
        vals, idx = _topk(q2, c, k, rec, t)
    if was_1d:
        return vals[0], idx[0]
    return vals, idx


def _pairwise(a: Any, b: Any, threads: Optional[int], binary: bool, names=("a", "b")):
    x = to_numpy(a, names[0])
    y = to_numpy(b, names[1])
    x2, x1d = as_2d(x, names[0])
    y2, y1d = as_2d(y, names[1])
    if binary:
        for arr, nm in ((x2, names[0]), (y2, names[1])):
            if arr.dtype not in (np.int8, np.uint8):
                raise TypeError(f"{nm} must be packed binary codes (int8 or uint8), got dtype {arr.dtype}")
        if x2.dtype != y2.dtype:
            # binary (int8) = ubinary ^ 0x80 bytewise: undo the offset on the int8 side so a
            # mix of binary and ubinary codes of the same embeddings gives the same distances
            if x2.dtype == np.int8:
                x2 = x2.view(np.uint8) ^ np.uint8(0x80)
            else:
                y2 = y2.view(np.uint8) ^ np.uint8(0x80)
        prec = P.where(family="bits", signed=False)[0]
        signed = False
    else:
        if x2.dtype != y2.dtype or x2.dtype not in (np.int8, np.uint8):
            raise TypeError(
                f"{names[0]} and {names[1]} must both be int8 or both uint8 codes, got {x2.dtype} and {y2.dtype}")
        rec = P.PRECISIONS[P.where(family="scalar", code_dtype=x2.dtype)[0]]
        prec = rec.name
        signed = rec.signed
        limit = rec.max_dim
        if x2.shape[1] > limit:
            raise ValueError(f"{prec} dot products are exact in int32 up to {limit} dims, got {x2.shape[1]}")
    check_same_width(x2, y2, prec, names[0], names[1])
    xa = contiguous(x2).view(np.uint8)
    ya = contiguous(y2).view(np.uint8)
    na, nb = xa.shape[0], ya.shape[0]
    out = np.zeros((na, nb), np.int32)
    if na and nb and xa.shape[1]:
        t = resolve_threads(threads)
        kern = (lambda s, e: _core.hamming_matrix(xa[s:e], ya, out[s:e])) if binary else \
            (lambda s, e: _core.dot_matrix(xa[s:e], ya, signed, out[s:e]))
        if t <= 1 or na * nb * xa.shape[1] < _PARALLEL_MIN_WORK:
            kern(0, na)
        elif na >= t:
            run_parallel(kern, split_range(na, t))
        else:  # few rows in a: split b's columns into separate outputs
            def col(s: int, e: int):
                o = np.empty((na, e - s), np.int32)
                if binary:
                    _core.hamming_matrix(xa, ya[s:e], o)
                else:
                    _core.dot_matrix(xa, ya[s:e], signed, o)
                out[:, s:e] = o

            run_parallel(col, split_range(nb, t))
    if x1d and y1d:
        return out[0, 0]
    if x1d:
        return out[0]
    if y1d:
        return out[:, 0]
    return out


def hamming_distance(a: Any, b: Any, *, threads: Optional[int] = None) -> np.ndarray:
    """All-pairs Hamming distances between packed binary codes (a cdist).

    Parameters
    ----------
    a : array_like, shape (na, nbytes) or (nbytes,)
    b : array_like, shape (nb, nbytes) or (nbytes,)
        Packed codes, int8 (``binary``) or uint8 (``ubinary``), in any mix:
        the -128 offset of ``binary`` is an XOR with 0x80 on every byte, so
        distances are the same.
    threads : int or None
        Worker threads (None: all usable cores).

    Returns
    -------
    numpy.ndarray of int32, shape (na, nb)
        Computed in tiles by the SIMD kernels. 1-D inputs drop their axis.
    """
    return _pairwise(a, b, threads, binary=True)


def int8_dot(a: Any, b: Any, *, threads: Optional[int] = None) -> np.ndarray:
    """All-pairs exact integer dot products of int8 (or uint8) codes.

    Parameters
    ----------
    a : array_like, shape (na, d) or (d,)
    b : array_like, shape (nb, d) or (d,)
        Both int8 or both uint8.
    threads : int or None

    Returns
    -------
    numpy.ndarray of int32, shape (na, nb)
        Exact (``d`` is limited so the int32 sum cannot overflow: 131071 dims
        for int8, 33025 for uint8).
    """
    return _pairwise(a, b, threads, binary=False)


def _rescore(q64: np.ndarray, c: np.ndarray, ids: np.ndarray, rec: "P.Precision", ranges32: Optional[np.ndarray],
             k: Optional[int], t: int) -> Tuple[np.ndarray, np.ndarray]:
    """Rescoring of prepared arguments, no argument checks: ``q64`` a private
    C-contiguous float64 (Q, d) array of finite queries, ``c`` the (N, width)
    codes of ``rec``, ``ids`` a private C-contiguous int64 (Q, m) array of
    rows in [0, N) or -1, ``ranges32`` the coerced (2, d) float32 ranges of
    scalar codes (None for bits), ``t`` a resolved thread count."""
    nq, m = ids.shape
    d = q64.shape[1]
    out = np.empty((nq, m), np.float64)
    cc = contiguous(c).view(np.uint8)
    if rec.is_bits:
        mask = rec.xor_mask
        kern = lambda s, e: _core.rescore_bits(q64[s:e], cc, mask, ids[s:e], out[s:e])
        bias = None
    else:
        from .quantization import _dequantization_steps

        if ranges32 is None:  # pragma: no cover - every caller passes the ranges of scalar codes
            raise TypeError("internal: scalar codes are rescored with their ranges")
        starts, steps = _dequantization_steps(ranges32)
        w = np.ascontiguousarray(q64 * steps.astype(np.float64))
        bias = q64 @ starts.astype(np.float64)  # int8 codes: the kernel reads c + 128
        signed = rec.signed
        kern = lambda s, e: _core.rescore_codes(w[s:e], cc, signed, ids[s:e], out[s:e])
    if nq and m:
        if t > 1 and nq >= 2 * t and nq * m * d > _PARALLEL_MIN_WORK // 4:
            run_parallel(kern, split_range(nq, t))
        else:
            kern(0, nq)
        if bias is not None:
            # empty slots stay -inf (an overflowed bias must not turn them into NaN)
            np.add(out, bias[:, None], out=out, where=ids >= 0)
        if not np.isfinite(out[ids >= 0]).all():
            raise ValueError("queries are too large: the float64 rescoring sums overflowed to inf/NaN; "
                             "scale the query embeddings down")
    kk = m if k is None else min(k, m)
    # order: score descending, then id ascending; empty slots (-inf, id -1) last
    sort_ids = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((sort_ids, -out), axis=-1)[:, :kk]
    return np.take_along_axis(out, order, axis=1), np.take_along_axis(ids, order, axis=1)


def rescore(
    queries: Any,
    codes: Any,
    candidates: Any,
    *,
    precision: str,
    ranges: Optional[Any] = None,
    k: Optional[int] = None,
    threads: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Rescore candidate rows with float queries, as sentence-transformers 6.2 does.

    Parameters
    ----------
    queries : array_like, shape (Q, d) or (d,)
        Float query embeddings.
    codes : array_like
        The corpus codes the candidates index into: (N, d) int8/uint8 for
        ``precision="int8"/"uint8"`` or (N, ceil(d/8)) int8/uint8 packed bits
        for ``"binary"/"ubinary"``. May be a memory map: only the candidate
        rows are read.
    candidates : array_like of int, shape (Q, m) or (m,)
        Row numbers into ``codes`` per query (e.g. from :func:`search`); -1
        marks an empty slot.
    precision : {"int8", "uint8", "binary", "ubinary"}
    ranges : array_like, shape (2, d)
        Required for int8/uint8: the ranges the codes were quantized with.
        Candidates are dequantized to ``(code [+128]) * step + min`` and dotted
        with the query in float64.
    k : int, optional
        Keep the best ``k`` (default: all m).
    threads : int or None

    Returns
    -------
    scores : numpy.ndarray of float64, shape (Q, min(k, m))
        Descending; ties to the lower corpus id. Binary scores are the sum of
        the query components whose bit is 1. Empty slots score -inf, come last
        and keep id -1.
    ids : numpy.ndarray of int64, same shape
    """
    rec = P.get(precision, P.where(family="scalar") + P.where(family="bits"))
    precision = rec.name
    if k is not None:
        k = check_k(k)
    q = to_numpy(queries, "queries")
    q2, was_1d = as_2d(q, "queries")
    if q2.dtype.kind not in "fiu" or q2.dtype in (np.int8, np.uint8):
        raise TypeError(f"queries must be float embeddings, got dtype {q2.dtype}")
    c = to_numpy(codes, "codes")
    if c.ndim != 2:
        raise ValueError(f"codes must be 2-D, got shape {c.shape}")
    check_codes(c, precision, "codes")
    cand = to_numpy(candidates, "candidates")
    if cand.ndim == 1:
        cand = cand[None, :]
    if cand.dtype.kind not in "iu":
        raise TypeError(f"candidates must be a 2-D integer array (Q, m), got dtype {cand.dtype} shape {cand.shape}")
    if cand.ndim != 2:
        raise ValueError(f"candidates must be a 2-D integer array (Q, m) or 1-D (m,), got shape {cand.shape}")
    if cand.dtype == np.uint64 and cand.size and cand.max() > np.iinfo(np.int64).max:
        raise ValueError(f"candidates must be in [0, {c.shape[0]}) or -1 for an empty slot; got max {cand.max()}")
    if cand.shape[0] != q2.shape[0]:
        raise ValueError(f"candidates has {cand.shape[0]} rows but there are {q2.shape[0]} queries")
    n = c.shape[0]
    # a private copy: the kernel reads these ids without the GIL, so another
    # thread writing the caller's array after the bounds check below must not
    # be able to turn a checked id into an out-of-bounds read
    ids = np.array(cand, dtype=np.int64, order="C", copy=True)
    if ids.size and (ids.max() >= n or ids.min() < -1):
        raise ValueError(f"candidates must be in [0, {n}) or -1 for an empty slot; "
                         f"got min {ids.min()}, max {ids.max()}")
    d = q2.shape[1]
    q64 = np.array(q2, dtype=np.float64, order="C", copy=True)  # private, like ids
    if not np.isfinite(q64).all():
        raise ValueError("queries contain NaN or infinite values")
    t = resolve_threads(threads)
    if rec.is_bits:
        if c.shape[1] != (d + 7) // 8:
            raise ValueError(
                f"codes have {c.shape[1]} bytes per row ({c.shape[1] * 8} bits) but queries have {d} dims, "
                f"which pack to {(d + 7) // 8} bytes")
        r32 = None
    else:
        if c.shape[1] != d:
            raise ValueError(f"codes have {c.shape[1]} dims but queries have {d}")
        if ranges is None:
            raise ValueError(f"ranges is required to dequantize {precision} codes "
                             f"(the (2, {d}) ranges they were quantized with)")
        from .quantization import _coerce_ranges

        r32 = _coerce_ranges(to_numpy(ranges, "ranges"), d)
    scores, rid = _rescore(q64, c, ids, rec, r32, k, t)
    if was_1d:
        return scores[0], rid[0]
    return scores, rid
