"""Merging the shards' answers and routing candidates to the shards that own
them (pure: no Dask, no cluster). Ties go to the lower global row, as in one
index; user ids are mapped after the merge."""
from __future__ import annotations

from typing import Any, Collection, Dict, List, Sequence, Tuple

import numpy as np

from .. import _precision as P
from ..search import merge_topk
from ._manifest import ShardInfo

_BINARY = P.where(family="bits")


def _merge_parts(parts: List[tuple], nq: int, k: int, descending: bool, vdtype: Any, width: int, fill: Any,
                 has_ids: bool, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """Global top ``k`` of the shards' ``(values, global rows[, user ids])``,
    padded to ``width`` columns with ``fill`` / id -1; user ids when ``has_ids``."""
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
    if has_ids:
        u = np.concatenate([p[2] for p in parts], axis=1) if parts else np.empty((nq, 0), np.int64)
        out_ids = _map_user_ids(g, u, mg, count)
    else:
        out_ids = mg
    return _pad(mv, out_ids, width, fill)


def _index_order(precision: str) -> Tuple[bool, Any, Any]:
    """(descending, value dtype, padding value worst for the order) of an index precision's results."""
    descending = precision not in _BINARY
    rec = P.PRECISIONS[precision]
    fill = (-np.inf if rec.is_float else np.iinfo(np.int32).min) if descending else np.iinfo(np.int32).max
    return descending, rec.value_dtype, fill


def _merge_candidates(parts: List[tuple], nq: int, kk: int) -> np.ndarray:
    """The global Hamming top ``kk`` rows from the shards' ``(distances, global rows)``."""
    if not parts:
        return np.empty((nq, 0), np.int64)
    _, cand = merge_topk(np.concatenate([p[0] for p in parts], axis=1),
                         np.concatenate([p[1] for p in parts], axis=1), kk, descending=False)
    return cand


def _route_candidates(cand: np.ndarray, shards: Sequence[ShardInfo],
                      skip: Collection[int] = ()) -> Dict[int, np.ndarray]:
    """Per shard owning any candidate: its candidates as local rows, in the
    candidates' order, one row per query, -1 padding (int32 when it fits).
    Shards in ``skip`` (failed) and shards owning none are left out."""
    out: Dict[int, np.ndarray] = {}
    for i, s in enumerate(shards):
        if i in skip or s.count == 0:
            continue
        owned = (cand >= s.offset) & (cand < s.offset + s.count)
        w = int(owned.sum(axis=1).max()) if cand.size else 0
        if w == 0:
            continue
        order = np.argsort(~owned, axis=1, kind="stable")[:, :w]
        local = np.take_along_axis(cand, order, axis=1) - s.offset
        local[~np.take_along_axis(owned, order, axis=1)] = -1
        out[i] = local.astype(np.int32 if s.count < 2 ** 31 else np.int64)
    return out


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
