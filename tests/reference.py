"""Slow, obviously-correct numpy oracles every kernel is tested against."""
from __future__ import annotations

import numpy as np


def pack_sign(x: np.ndarray, xor_mask: int = 0) -> np.ndarray:
    return np.packbits(x > 0, axis=-1) ^ np.uint8(xor_mask)


def quantize(x: np.ndarray, ranges: np.ndarray, signed: bool) -> np.ndarray:
    """sentence-transformers 6.2's formula, verbatim."""
    ranges = ranges.astype(np.float32, copy=False)
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    q = np.clip(np.floor((x - starts) / steps), 0, 255)
    return (q - 128).astype(np.int8) if signed else q.astype(np.uint8)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ua = np.unpackbits(a.view(np.uint8), axis=1).astype(np.int32)
    ub = np.unpackbits(b.view(np.uint8), axis=1).astype(np.int32)
    # |a xor b| = |a| + |b| - 2 a.b
    return (ua.sum(1)[:, None] + ub.sum(1)[None, :] - 2 * (ua @ ub.T)).astype(np.int32)


def dot_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(np.int64) @ b.astype(np.int64).T)


def topk_ascending(keys: np.ndarray, k: int):
    """Per row: the k smallest keys, ties to the lower column index."""
    nq, n = keys.shape
    kk = min(k, n)
    idx = np.empty((nq, kk), dtype=np.int64)
    for i in range(nq):
        order = np.lexsort((np.arange(n), keys[i]))
        idx[i] = order[:kk]
    return np.take_along_axis(keys, idx, axis=1), idx


def topk_descending(scores: np.ndarray, k: int):
    keys, idx = topk_ascending(-scores.astype(np.int64), k)
    return -keys, idx


def rescore_codes(w: np.ndarray, codes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    out = np.full(ids.shape, -np.inf)
    for i in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if ids[i, t] >= 0:
                out[i, t] = float(np.dot(w[i].astype(np.float64), codes[ids[i, t]].astype(np.float64)))
    return out


def rescore_bits(q: np.ndarray, codes: np.ndarray, ids: np.ndarray, d: int, xor_mask: int) -> np.ndarray:
    bits = np.unpackbits(codes.view(np.uint8) ^ np.uint8(xor_mask), axis=1)[:, :d].astype(np.float64)
    out = np.full(ids.shape, -np.inf)
    for i in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if ids[i, t] >= 0:
                out[i, t] = float(bits[ids[i, t]] @ q[i].astype(np.float64))
    return out


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def bitwise_count(x: np.ndarray) -> np.ndarray:
    """np.bitwise_count (numpy >= 2.0) for uint8/int8 arrays, also on numpy 1.26."""
    x = np.asarray(x)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POP8[x.view(np.uint8)] if x.dtype.itemsize == 1 else \
        _POP8[x.view(np.uint8)].reshape(x.shape + (x.dtype.itemsize,)).sum(-1, dtype=np.uint8)
