"""The plan of a build and the policies of placement and retries (pure: no
Dask, no cluster): what :func:`build_sharded` checks before it touches the
disk or the cluster, the shard boundaries, the ranges policy, and the greedy
placement of shards on workers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .. import _precision as P
from .._validate import check_k, check_precision, to_numpy
from ..quantization import _coerce_ranges

_BINARY = P.where(family="bits")
_SCALAR = P.where(family="scalar")
_FIRST_STAGE = P.PRECISIONS["ubinary"]  # the pipeline's in-RAM retrieval codes


@dataclass
class _BuildPlan:
    """Everything a build decided before it starts: the checked data, what the
    shards hold, and where their boundaries are (shard ``j`` is global rows
    ``starts[j]:starts[j + 1]``)."""

    x: Any  # the data: numpy array, memmap or dask array, shape (n, width)
    is_dask: bool
    is_codes: bool
    kind: str  # "index" or "pipeline"
    precision: str
    rescore_precision: str
    dim: int
    chunk_size: int
    threads: int
    sizes: List[int]
    starts: np.ndarray
    ids: Optional[np.ndarray]  # int64, one per row, or None
    ranges: Optional[np.ndarray]  # given by the caller (checked), else None
    needs_ranges: bool  # computed from the data when not given

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def width(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_shards(self) -> int:
        return len(self.sizes)

    def rows(self, j: int) -> Tuple[int, int]:
        """Global rows [start, end) of shard ``j``."""
        return int(self.starts[j]), int(self.starts[j + 1])


def _plan_build(data: Any, *, n_shards: Optional[int], shard_sizes: Optional[Sequence[int]], precision: str,
                rescore: Any, rescore_precision: str, ranges: Optional[Any], ids: Optional[Any],
                dim: Optional[int], chunk_size: Any, threads: Any, n_workers: Callable[[], int]) -> _BuildPlan:
    """Check :func:`build_sharded`'s arguments (in its documented order) and
    decide the shards. ``n_workers()`` gives the default number of shards."""
    if not isinstance(rescore, (bool, np.bool_)):
        raise TypeError(f"rescore must be a bool, got {type(rescore).__name__}")
    x, is_dask = _check_data(data)
    width = int(x.shape[1])
    dt = np.dtype(x.dtype)
    is_codes = dt in (np.dtype(np.int8), np.dtype(np.uint8))
    kind, precision, rescore_precision = _check_kind(precision, bool(rescore), rescore_precision, is_codes, dt)
    if width < 1:
        raise ValueError("data must have at least one column")
    packed = is_codes and precision in _BINARY and not rescore
    dim = _check_dim(dim, width, packed)
    chunk_size = check_k(chunk_size, "chunk_size")
    threads = check_k(threads, "threads")
    n = int(x.shape[0])
    sizes = _shard_sizes(n, n_shards, shard_sizes, n_workers)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    id_arr = _check_ids(ids, n)
    needs_ranges = bool(rescore) or (P.PRECISIONS[precision].needs_ranges and not is_codes)
    r = None
    if ranges is not None:
        if not (rescore or P.PRECISIONS[precision].needs_ranges):
            raise ValueError(f"ranges only apply to int8/uint8 codes, not precision {precision!r}")
        r = _coerce_ranges(to_numpy(ranges, "ranges"), dim)
    elif needs_ranges and n == 0:
        raise ValueError("cannot compute ranges from 0 rows: pass ranges=")
    return _BuildPlan(x, is_dask, is_codes, kind, precision, rescore_precision, dim, chunk_size, threads, sizes,
                      starts, id_arr, r, needs_ranges)


def _check_data(data: Any) -> Tuple[Any, bool]:
    """The data as a 2-D array of a known shape (dask arrays stay lazy), and whether it is a dask array."""
    is_dask = _is_dask_array(data)
    x = data if (is_dask or isinstance(data, np.ndarray)) else to_numpy(data, "data")
    if len(x.shape) != 2:
        raise ValueError(f"data must be 2-D (N, d), got shape {tuple(x.shape)}")
    if is_dask and any(np.isnan(c) for c in x.shape):
        raise ValueError(f"data is a dask array of unknown shape {x.shape}: call data.compute_chunk_sizes() first")
    dt = np.dtype(x.dtype)
    if dt.kind not in "fiu":
        raise TypeError(f"data must be float embeddings or int8/uint8 codes, got dtype {dt}")
    return x, is_dask


def _check_kind(precision: str, rescore: bool, rescore_precision: str, is_codes: bool,
                dt: np.dtype) -> Tuple[str, str, str]:
    """(kind, precision, rescore_precision) of the shards, checked against the data's dtype."""
    if rescore:
        if precision != _FIRST_STAGE.name:
            raise ValueError("rescore=True builds RescorePipeline shards, whose retrieval precision is 'ubinary'; "
                             f"got precision={precision!r}")
        rescore_precision = check_precision(rescore_precision, _SCALAR, "rescore_precision")
        if is_codes:
            raise TypeError(f"data must be float embeddings for rescore=True, got {dt} codes")
        return "pipeline", precision, rescore_precision
    precision = check_precision(precision)
    if P.PRECISIONS[precision].is_float and is_codes:
        raise TypeError(f"data must be float embeddings for precision='float32', got dtype {dt}")
    return "index", precision, rescore_precision


def _check_dim(dim: Optional[int], width: int, packed: bool) -> int:
    """The shards' dimension: ``dim`` bits of packed binary codes, else the data's width."""
    if dim is not None:
        dim = check_k(dim, "dim")
        if not packed:
            if dim != width:
                raise ValueError(f"dim={dim} but data have {width} columns (dim is only for packed binary codes)")
        elif (dim + 7) // 8 != width:
            raise ValueError(f"dim={dim} bits pack to {(dim + 7) // 8} bytes but the codes have {width} bytes")
        return dim
    return 8 * width if packed else width


def _shard_sizes(n: int, n_shards: Optional[int], shard_sizes: Optional[Sequence[int]],
                 n_workers: Callable[[], int]) -> List[int]:
    """Rows per shard: ``shard_sizes`` checked, or ``n_shards`` (default: one per worker) near-equal shards.

    Near-equal: the first ``n % S`` shards get one extra row. Every precision
    is cut the same way: float32 scores no longer depend on the corpus split
    (the fused kernel sums every row in one fixed order)."""
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
        return sizes
    if n_shards is None:
        n_shards = max(1, n_workers())
    n_shards = check_k(n_shards, "n_shards")
    base, extra = divmod(n, n_shards)
    return [base + (1 if j < extra else 0) for j in range(n_shards)]


def _check_ids(ids: Optional[Any], n: int) -> Optional[np.ndarray]:
    """User ids as int64 (N,), or None."""
    if ids is None:
        return None
    raw = ids.compute() if _is_dask_array(ids) else ids
    id_arr = to_numpy(raw, "ids")
    if id_arr.shape != (n,) or (id_arr.dtype.kind not in "iu" and n):
        raise ValueError(f"ids must be a 1-D integer array of {n} ids, got {id_arr.dtype} {id_arr.shape}")
    if id_arr.dtype == np.uint64 and n and id_arr.max() > np.iinfo(np.int64).max:
        raise ValueError("ids must fit in int64")
    return id_arr.astype(np.int64)


def _combine_ranges(parts: Sequence[Optional[np.ndarray]]) -> np.ndarray:
    """The global per-dimension (min, max) from the shards' (None: empty shard);
    exact, so equal to the ranges of the whole matrix. Refuses infinite ones."""
    parts = [p for p in parts if p is not None]
    r = parts[0].copy()
    for p in parts[1:]:
        np.minimum(r[0], p[0], out=r[0])
        np.maximum(r[1], p[1], out=r[1])
    if not np.isfinite(r).all():
        raise ValueError("data contain infinite values, so the int8/uint8 ranges computed from them are not "
                         "finite; pass finite ranges=")
    return r


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


def _is_dask_array(x: Any) -> bool:
    return type(x).__module__.startswith("dask.array") and hasattr(x, "chunks") and hasattr(x, "dask")
