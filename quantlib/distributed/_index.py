"""ShardedIndex (query planning: validate and quantize once, the rounds, the
merges) and open_sharded; the actors are :class:`._actors._ShardPool`'s."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
from distributed import Client

from .. import _precision as P
from .._validate import as_2d, check_k, to_numpy
from ..index import Index
from ..quantization import quantize_embeddings
from ._actors import _get_client, _ShardPool
from ._manifest import _FIRST_STAGE, Manifest, ShardInfo, _checked_manifest
from ._merge import _index_order, _merge_candidates, _merge_parts, _route_candidates
from ._plan import _check_retries, _check_timeout


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


def _check_pipeline_queries(queries: Any, dim: int) -> Tuple[np.ndarray, bool]:
    """Float queries of a sharded pipeline, C-contiguous 2-D and finite (checked on the client)."""
    q2, was_1d = as_2d(to_numpy(queries, "queries"), "queries")
    if q2.dtype.kind not in "fiu" or q2.dtype in (np.int8, np.uint8):
        raise TypeError(f"queries must be float embeddings, got dtype {q2.dtype}")
    if q2.shape[1] != dim:
        raise ValueError(f"queries have {q2.shape[1]} dims but the sharded pipeline has {dim}")
    q2 = np.ascontiguousarray(q2)
    if not np.isfinite(q2).all():
        pos = tuple(int(v) for v in np.argwhere(~np.isfinite(q2))[0])
        raise ValueError(f"queries contain NaN or infinite values (first at index {pos}: "
                         f"{float(q2[pos])!r})")
    return q2, was_1d


def _check_search_args(k: Any, retries: Any, threads: Any, timeout: Any, allow_partial: Any,
                       stats: Any) -> Tuple[int, int, int, Optional[float]]:
    """The checked (k, retries, threads, timeout) of :meth:`ShardedIndex.search`."""
    k = check_k(k)
    retries = _check_retries(retries)
    threads = check_k(threads, "threads")
    timeout = _check_timeout(timeout)
    if not isinstance(allow_partial, (bool, np.bool_)):
        raise TypeError(f"allow_partial must be a bool, got {type(allow_partial).__name__}")
    if stats is not None and not isinstance(stats, dict):
        raise TypeError(f"stats must be a dict or None, got {type(stats).__name__}")
    return k, retries, threads, timeout


def _finish_stats(st: Dict[str, Any], answered: np.ndarray, t_start: float, stats: Optional[dict]) -> None:
    """Totals of a search's statistics, copied into the caller's ``stats`` dict when given."""
    st["failed_shards"] = [i for i in range(answered.shape[1]) if answered.shape[0] and not answered[0, i]]
    st["bytes_sent"] = sum(r["bytes_sent"] for r in st["rounds"])
    st["bytes_received"] = sum(r["bytes_received"] for r in st["rounds"])
    st["total_seconds"] = time.perf_counter() - t_start
    if stats is not None:
        stats.clear()
        stats.update(st)


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
        if manifest.kind == "index":
            self._template = Index(manifest.dim, manifest.precision, manifest.ranges)
        self._pool = _ShardPool(manifest, client, timeout)

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
        self._pool.close()

    def locations(self) -> List[Dict[str, Any]]:
        """Per shard: worker address, host, pid, and memory use of the opened shard."""
        return self._pool.locations()

    # ------------------------------------------------------------ search (query planning)
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
            identical (see docs/distributed.md).
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
        if self._pool.closed:
            raise RuntimeError("this ShardedIndex is closed")
        k, retries, threads, timeout = _check_search_args(k, retries, threads, timeout, allow_partial, stats)
        st: Dict[str, Any] = {"rounds": [], "retries": 0, "failed_shards": [], "merge_seconds": 0.0}
        run = (retries, timeout, threads, allow_partial, st)
        if self.manifest.kind == "index":
            q, was_1d = self._index_queries(queries, rescore_multiplier, rescore_mode)
            vals, ids, answered = self._search_index(q, k, *run)
        else:
            mult = 4 if rescore_multiplier is None else check_k(rescore_multiplier, "rescore_multiplier")
            if rescore_mode not in ("exact", "local"):
                raise ValueError(f"rescore_mode must be 'exact' or 'local', got {rescore_mode!r}")
            q2, was_1d = _check_pipeline_queries(queries, self.manifest.dim)
            vals, ids, answered = self._search_pipeline(q2, k, mult, rescore_mode, *run)
        _finish_stats(st, answered, t_start, stats)
        if was_1d:
            vals, ids, answered = vals[0], ids[0], answered[0]
        return (vals, ids, answered) if allow_partial else (vals, ids)

    def _index_queries(self, queries: Any, rescore_multiplier: Optional[int], rescore_mode: str):
        """Queries of a sharded index as codes, prepared once on the client (as Index.search prepares them)."""
        if rescore_multiplier is not None:
            raise ValueError("rescore_multiplier only applies to pipeline (rescore=True) shards")
        if rescore_mode != "exact":
            raise ValueError("rescore_mode only applies to pipeline (rescore=True) shards")
        is_float = P.PRECISIONS[self.manifest.precision].is_float
        with np.errstate(over="ignore" if is_float else "warn"):  # reported just below
            q, was_1d = self._template._as_codes(queries, "queries", None)
        if is_float:
            _check_finite_queries(queries, q)  # on the client, before any round (as Index.search)
        return q, was_1d

    def _merge(self, parts: List[tuple], nq: int, k: int, descending: bool, vdtype, width: int, fill,
               st: Dict[str, Any]):
        t0 = time.perf_counter()
        mv, out_ids = _merge_parts(parts, nq, k, descending, vdtype, width, fill, self.manifest.has_ids,
                                   self.manifest.count)
        st["merge_seconds"] += time.perf_counter() - t0
        return mv, out_ids

    def _search_index(self, q: np.ndarray, k: int, retries: int, timeout, threads: int, allow_partial: bool,
                      st: Dict[str, Any]):
        m = self.manifest
        nq = q.shape[0]
        descending, vdtype, fill = _index_order(m.precision)
        width = min(k, m.count)
        answered = np.ones((nq, self.n_shards), bool)
        if nq == 0:
            return np.empty((0, width), vdtype), np.empty((0, width), np.int64), answered
        res, fail = self._pool.run_round("search", {i: (q, k, threads) for i in range(self.n_shards)}, retries,
                                         timeout, allow_partial, st)
        answered[:, list(fail)] = False
        parts = [res[i] for i in sorted(res)]
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
            own = {i: (q2, qb, k, mult, threads) for i in range(self.n_shards)}
            res, fail = self._pool.run_round("local_search", own, retries, timeout, allow_partial, st)
            answered[:, list(fail)] = False
            parts = [res[i] for i in sorted(res)]
            vals, ids = self._merge(parts, nq, k, True, np.float64, width, -np.inf, st)
            return vals, ids, answered
        # round 1: global Hamming candidates, exactly RescorePipeline.search's
        kk = k * mult
        res, fail = self._pool.run_round("binary_topk", {i: (qb, kk, threads) for i in range(self.n_shards)},
                                         retries, timeout, allow_partial, st)
        answered[:, list(fail)] = False
        t0 = time.perf_counter()
        cand = _merge_candidates([res[i] for i in sorted(res)], nq, kk)
        # round 2: every shard rescores the candidates it owns, where its int8 rows live
        args = {i: (q2, local, k, threads) for i, local in _route_candidates(cand, m.shards, fail).items()}
        st["merge_seconds"] += time.perf_counter() - t0
        res2, fail2 = self._pool.run_round("rescore", args, retries, timeout, allow_partial, st)
        answered[:, list(fail2)] = False
        parts = [res2[i] for i in sorted(res2)]
        vals, ids = self._merge(parts, nq, k, True, np.float64, width, -np.inf, st)
        return vals, ids, answered
