"""The build's worker tasks: one shard's min/max pass and one shard file."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional

import numpy as np

from ..index import Index, _write_index_file
from ..pipeline import RescorePipeline
from ..quantization import _minmax_ranges
from ._files import _shard_identity
from ._sources import _open_rows

# Testing seam: when set in a worker process, called as hook(shard_index, what) at
# the start of every build task ("ranges" or "build"; the tests kill a worker there).
_BUILD_TASK_HOOK: Optional[Callable[[int, str], None]] = None


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
