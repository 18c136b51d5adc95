"""Row sources of a build: how a shard's rows reach the worker that writes it
(a memmap reopened by path, a dask array computed block by block, or rows
scattered from the client, which arrive as plain arrays)."""
from __future__ import annotations

import mmap as _mmap_mod
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np


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
    import distributed as _dd  # only ever called with dask arrays, so Dask is there

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
