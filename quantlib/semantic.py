"""Semantic search with optional rescoring: a drop-in for sentence-transformers
6.2's ``semantic_search_faiss`` and ``semantic_search_usearch``, running on
quantlib's exact kernels (faiss and usearch are not needed).

Three entry points share one implementation:

* :func:`semantic_search` -- all five corpus precisions; scores as
  ``semantic_search_faiss`` reports them (inner products for float32 and
  scalar codes, Hamming distance for packed bits, float64 dot products when
  rescored).
* :func:`semantic_search_faiss` -- upstream's signature, accepted precisions
  (float32, uint8, ubinary), error messages and score semantics.
* :func:`semantic_search_usearch` -- upstream's signature, accepted
  precisions (float32, int8, ubinary, binary), error messages and score
  semantics (distances: ``1 - cos`` for float32, ``1 - dot`` of the int8
  codes, Hamming for bits).

Results are exact: ``exact=False`` is accepted for compatibility and still
runs the exact search (upstream switches to HNSW there, whose results can
differ from the exact ones). Ties are broken toward the lower corpus id
(upstream's order among exactly tied scores is unspecified).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from . import _precision as P
from ._validate import check_k, to_numpy
from .index import Index
from .quantization import _ranges_from, _self_ranges, quantize_embeddings
from .search import rescore as _rescore

logger = logging.getLogger(__name__)

__all__ = ["semantic_search", "semantic_search_faiss", "semantic_search_usearch"]

#: per query, the hits as {"corpus_id": int, "score": float}, best first
Hits = List[List[Dict[str, Union[int, float]]]]
#: (hits, seconds) or, with output_index=True, (hits, seconds, the Index searched)
SearchResult = Union[Tuple[Hits, float], Tuple[Hits, float, Index]]

_NOT_QUANTIZED = (
    "Rescoring is enabled but the corpus is not quantized. Either pass `rescore=False` or "
    'quantize the corpus embeddings with `quantize_embeddings(embeddings, precision="...") `'
    'and pass `corpus_precision="..."` to `{fn}`.'
)
_QUERY_QUANTIZED = (
    "Rescoring is enabled but the query embeddings are quantized. Either pass `rescore=False` or don't "
    "quantize the query embeddings."
)

_BACKENDS = {
    # name: (accepted precisions, error message)
    "quantlib": (P.NAMES, "corpus_precision must be " + ", ".join(f'"{n}"' for n in P.NAMES[:-1])
                 + f', or "{P.NAMES[-1]}"'),
    "faiss": (("float32", "uint8", "ubinary"), 'corpus_precision must be "float32", "uint8", or "ubinary" for faiss'),
    "usearch": (("float32", "int8", "ubinary", "binary"),
                'corpus_precision must be "float32", "int8", "ubinary", or "binary" for usearch'),
}
_FN_NAME = {"quantlib": "semantic_search", "faiss": "semantic_search_faiss", "usearch": "semantic_search_usearch"}


def _get_ranges(embeddings: np.ndarray, precision: str, calibration_embeddings: Optional[Any]) -> np.ndarray:
    """sentence-transformers' ``_get_quantization_ranges`` (single-embedding
    ValueError, <100 rows warning), on quantlib's min/max kernels."""
    if calibration_embeddings is None:
        return _self_ranges(embeddings, precision)
    return _ranges_from(calibration_embeddings, precision)


def _foreign_index_error(fn: str, obj: Any) -> TypeError:
    t = type(obj)
    return TypeError(
        f"quantlib's {fn} takes a quantlib.Index as corpus_index (e.g. the one returned with "
        f"output_index=True), got {t.__module__}.{t.__qualname__}. faiss/usearch index objects cannot be "
        "searched by quantlib: pass the corpus embeddings (corpus_embeddings=...) instead, or build a "
        "quantlib.Index from them.")


def _check_index(fn: str, index: Any, corpus_precision: str) -> Index:
    if not isinstance(index, Index):
        raise _foreign_index_error(fn, index)
    have, want = P.PRECISIONS[index.precision], P.PRECISIONS[corpus_precision]
    # packed bits of either signedness give the same distances; scalar codes must match exactly
    if have.family != want.family or (want.is_scalar and have is not want):
        raise ValueError(f"corpus_index stores {index.precision!r} codes but corpus_precision={corpus_precision!r}; "
                         "pass the precision the index was built with")
    return index


def _build_index(corpus: Any, precision: str, ranges: Optional[Any], calibration: Optional[Any]) -> Index:
    c = np.asarray(corpus)
    if c.ndim != 2:
        raise ValueError(f"corpus_embeddings must be 2-D (n, d), got shape {c.shape}")
    rec = P.PRECISIONS[precision]
    index_ranges = None
    if rec.needs_ranges:
        if ranges is not None:
            index_ranges = ranges
        elif calibration is not None:
            index_ranges = _ranges_from(calibration, precision)
    if c.dtype in (np.int8, np.uint8) and not rec.is_float:
        dim = c.shape[1] * 8 if rec.is_bits else c.shape[1]
        return Index._wrap(c, precision, max(dim, 1), index_ranges)
    # float corpus: quantized with the ranges (quantlib extension; upstream
    # expects the corpus already at corpus_precision)
    if rec.needs_ranges and index_ranges is None and c.dtype.kind == "f":
        index_ranges = _get_ranges(c, precision, None)
    idx = Index(max(c.shape[1], 1), precision, index_ranges)
    if rec.is_float and c.dtype == rec.code_dtype and c.flags.c_contiguous:
        return Index._wrap(c, precision, c.shape[1], None)
    idx.add(c)
    return idx


def _run(backend: str, query_embeddings: Any, corpus_embeddings: Any, corpus_index: Any, corpus_precision: str,
         top_k: int, ranges: Optional[Any], calibration_embeddings: Optional[Any], rescore: bool,
         rescore_multiplier: int, exact: bool, output_index: bool, threads: Optional[int]):
    fn = _FN_NAME[backend]
    if corpus_embeddings is not None and corpus_index is not None:
        raise ValueError("Only corpus_embeddings or corpus_index should be used, not both.")
    if corpus_embeddings is None and corpus_index is None:
        raise ValueError("Either corpus_embeddings or corpus_index should be used.")
    allowed, message = _BACKENDS[backend]
    if corpus_precision not in allowed:
        raise ValueError(message)
    top_k = check_k(top_k, "top_k")
    rescore_multiplier = check_k(rescore_multiplier, "rescore_multiplier")

    if corpus_index is None:
        corpus_index = _build_index(corpus_embeddings, corpus_precision, ranges, calibration_embeddings)
    else:
        corpus_index = _check_index(fn, corpus_index, corpus_precision)
        if ranges is None and calibration_embeddings is None and corpus_index.ranges is not None:
            # quantlib extension: an index carries the ranges it was built with
            ranges = corpus_index.ranges

    q = to_numpy(query_embeddings, "query_embeddings")
    if q.ndim == 1:  # upstream fails on 1-D queries; quantlib treats them as one query
        q = q[None, :]
    if q.ndim != 2:
        raise ValueError(f"query_embeddings must be 2-D (n, d), got shape {q.shape}")

    rescore_embeddings = None
    k = top_k
    if q.dtype not in (np.uint8, np.int8):
        if rescore:
            if not P.PRECISIONS[corpus_index.precision].is_float:
                rescore_embeddings = q
                k = top_k * rescore_multiplier
            else:
                logger.warning(_NOT_QUANTIZED.format(fn=fn))
        want = P.PRECISIONS[corpus_precision]
        if rescore_embeddings is not None and want.needs_ranges and ranges is None:
            ranges = _get_ranges(q, corpus_precision, calibration_embeddings)
        if want.is_float:
            query_codes = np.ascontiguousarray(q, dtype=want.code_dtype)
        else:
            query_codes = quantize_embeddings(q, precision=corpus_precision, ranges=ranges,
                                              calibration_embeddings=calibration_embeddings)
    else:
        if rescore:
            logger.warning(_QUERY_QUANTIZED)
        query_codes = q
    query_codes, _ = corpus_index._as_codes(query_codes, "query_embeddings", threads)

    index_rec = P.PRECISIONS[corpus_index.precision]
    cosine = backend == "usearch" and index_rec.is_float
    if cosine:
        # usearch metric="cos": search the normalised vectors, report 1 - cos
        query_codes = _normalize(query_codes)

    start_t = time.perf_counter()
    if cosine:
        codes, id_arr = corpus_index._snapshot()
        if codes.shape[0]:
            from .search import search as _search

            values, positions = _search(query_codes, _normalize(codes), k, precision=index_rec.name,
                                        threads=threads)
        else:
            values = np.empty((len(query_codes), 0), np.float32)
            positions = np.empty((len(query_codes), 0), np.int64)
    else:
        values, positions, id_arr = corpus_index._search_codes(query_codes, k, threads)

    if rescore_embeddings is not None and positions.shape[1]:
        values, positions = _rescore(rescore_embeddings, corpus_index._snapshot()[0], positions,
                                     precision=corpus_index.precision, ranges=ranges, k=top_k, threads=threads)
        scores = values
    elif backend == "usearch" and index_rec.is_scalar:
        scores = 1.0 - values.astype(np.float64)
    elif cosine:
        scores = 1.0 - values.astype(np.float64)
    else:
        scores = values
    ids = positions if id_arr is None else id_arr.reshape(-1)[positions]
    delta_t = time.perf_counter() - start_t

    results = [[{"corpus_id": int(i), "score": float(s)} for s, i in zip(srow, irow)]
               for srow, irow in zip(scores.tolist(), ids.tolist())]
    if output_index:
        return results, delta_t, corpus_index
    return results, delta_t


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms[:, None].astype(np.float32))


def semantic_search(
    query_embeddings: np.ndarray,
    corpus_embeddings: Optional[np.ndarray] = None,
    corpus_index: Optional[Index] = None,
    corpus_precision: str = "float32",
    top_k: int = 10,
    ranges: Optional[np.ndarray] = None,
    calibration_embeddings: Optional[np.ndarray] = None,
    rescore: bool = True,
    rescore_multiplier: int = 2,
    exact: bool = True,
    output_index: bool = False,
    *,
    threads: Optional[int] = None,
) -> SearchResult:
    """Exact semantic search over a corpus at any precision, with rescoring.

    The behaviour of sentence-transformers 6.2's ``semantic_search_faiss``,
    extended to all five precisions and run on quantlib's kernels.

    .. warning::
       Despite the name, this is **not** ``sentence_transformers.util.semantic_search``
       (which returns a list and cosine similarities). Like ``semantic_search_faiss`` it
       returns a tuple ``(results, seconds)`` (plus the index with ``output_index=True``)
       and scores that depend on the precision: inner products for float32 (cosine only
       for normalised embeddings), integer code dot products for int8/uint8, Hamming
       distances (lower is better) for binary/ubinary, and float64 dot products with the
       dequantized codes when rescored.

    Parameters
    ----------
    query_embeddings : numpy.ndarray, shape (Q, d)
        Float queries (kept for rescoring) or codes already quantized to
        ``corpus_precision`` (then no rescoring; a warning is logged if
        ``rescore``). A 1-D query is treated as one query.
    corpus_embeddings : numpy.ndarray, optional
        The corpus at ``corpus_precision`` (codes from ``quantize_embeddings``,
        or float32). Float input for a quantized precision is quantized with
        ``ranges``/``calibration_embeddings`` (quantlib extension).
    corpus_index : quantlib.Index, optional
        An index to search instead of ``corpus_embeddings`` (e.g. the one a
        previous call returned with ``output_index=True``). When neither
        ``ranges`` nor ``calibration_embeddings`` is given and the index
        stores ranges, those are used (upstream would calibrate on the
        queries). faiss/usearch objects raise ``TypeError``.
    corpus_precision : {"float32", "int8", "uint8", "binary", "ubinary"}
    top_k : int
        At most ``top_k`` hits per query; fewer when the corpus is smaller
        (never padding).
    ranges, calibration_embeddings : numpy.ndarray, optional
        int8/uint8 calibration, as in ``quantize_embeddings``. Without either,
        the ranges come from the queries (the single-embedding ValueError
        and the <100 rows warning included), exactly as upstream.
    rescore : bool
        With float queries and a quantized corpus, retrieve
        ``top_k * rescore_multiplier`` candidates and rescore them with the
        float query in float64: the query dotted with the unpacked bits
        (binary/ubinary; sum of the query components whose bit is 1) or with
        the dequantized codes ``(code [+128]) * step + min`` (int8/uint8).
    rescore_multiplier : int
    exact : bool
        Accepted for compatibility; the search is always exact.
    output_index : bool
        Also return the :class:`quantlib.Index` that was searched.
    threads : int or None, keyword-only
        Worker threads (None: all usable cores).

    Returns
    -------
    results : list of list of dict
        Per query, ``{"corpus_id": int, "score": float}`` best first. Scores:
        rescored -> float64 dot product (descending); otherwise float32 ->
        inner product (descending), int8/uint8 -> dot product of the codes
        (descending), binary/ubinary -> Hamming distance (ascending).
    search_seconds : float
        Time of the search and rescoring only (building the index and
        quantizing the queries are excluded), as upstream.
    index : quantlib.Index
        Only with ``output_index=True``.
    """
    return _run("quantlib", query_embeddings, corpus_embeddings, corpus_index, corpus_precision, top_k, ranges,
                calibration_embeddings, rescore, rescore_multiplier, exact, output_index, threads)


def semantic_search_faiss(
    query_embeddings: np.ndarray,
    corpus_embeddings: Optional[np.ndarray] = None,
    corpus_index: Optional[Index] = None,
    corpus_precision: str = "float32",
    top_k: int = 10,
    ranges: Optional[np.ndarray] = None,
    calibration_embeddings: Optional[np.ndarray] = None,
    rescore: bool = True,
    rescore_multiplier: int = 2,
    exact: bool = True,
    output_index: bool = False,
) -> SearchResult:
    """Drop-in for ``sentence_transformers.util.quantization.semantic_search_faiss`` (6.2).

    Same signature, defaults, accepted precisions (``"float32"``,
    ``"uint8"``, ``"ubinary"``), ``ValueError`` messages (in the same order)
    and logged warnings. Scores as faiss reports them: float32 -> inner
    product, uint8 -> inner product of the raw 0..255 codes (computed exactly
    in integers; faiss uses float32, identical while the products stay below
    2**24), ubinary -> Hamming distance (ascending); rescored -> float64 dot
    product (descending). ``corpus_index`` must be a :class:`quantlib.Index`
    (a faiss index raises ``TypeError``); ``output_index=True`` returns one.
    ``exact=False`` still searches exactly (upstream uses HNSW). See
    :func:`semantic_search` for the parameters.
    """
    return _run("faiss", query_embeddings, corpus_embeddings, corpus_index, corpus_precision, top_k, ranges,
                calibration_embeddings, rescore, rescore_multiplier, exact, output_index, None)


def semantic_search_usearch(
    query_embeddings: np.ndarray,
    corpus_embeddings: Optional[np.ndarray] = None,
    corpus_index: Optional[Index] = None,
    corpus_precision: str = "float32",
    top_k: int = 10,
    ranges: Optional[np.ndarray] = None,
    calibration_embeddings: Optional[np.ndarray] = None,
    rescore: bool = True,
    rescore_multiplier: int = 2,
    exact: bool = True,
    output_index: bool = False,
) -> SearchResult:
    """Drop-in for ``sentence_transformers.util.quantization.semantic_search_usearch`` (6.2).

    Same signature, defaults, accepted precisions (``"float32"``, ``"int8"``,
    ``"ubinary"``, ``"binary"``), ``ValueError`` messages and logged
    warnings. Scores as usearch reports them (distances, ascending): float32
    -> cosine distance ``1 - cos``, int8 -> ``1 - dot`` of the int8 codes,
    binary/ubinary -> Hamming distance; rescored -> float64 dot product
    (descending). Whether to rescore is decided by the index precision (as
    upstream decides by the index dtype). ``corpus_index`` must be a
    :class:`quantlib.Index` (a usearch index raises ``TypeError``); ids are
    int64 (usearch keys are uint64). ``exact`` is accepted and ignored: the
    search is always exact. The float32 (cosine) path normalises a copy of
    the corpus on every call (O(N*d) extra work and memory); prefer
    :func:`semantic_search` on pre-normalised embeddings for repeated
    float32 searches. See :func:`semantic_search` for the parameters.
    """
    return _run("usearch", query_embeddings, corpus_embeddings, corpus_index, corpus_precision, top_k, ranges,
                calibration_embeddings, rescore, rescore_multiplier, exact, output_index, None)
