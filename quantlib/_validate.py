"""Argument checking shared by the public functions: clear TypeError /
ValueError messages naming the argument, the expected and the actual
dtype / shape."""
from __future__ import annotations

import numbers
from typing import Any, Tuple

import numpy as np

from . import _precision as P

SEARCH_PRECISIONS = P.NAMES


def to_numpy(x: Any, name: str) -> np.ndarray:
    """ndarray (incl. memmap, read-only, strided) as is; torch tensors moved to
    host memory; other array-likes through np.asarray. Objects that are not
    array-like raise TypeError."""
    if isinstance(x, np.ndarray):
        return x
    t = type(x)
    if t.__module__.split(".")[0] == "torch" and hasattr(x, "detach"):
        import torch

        try:
            if x.dtype == torch.bfloat16:
                x = x.float()
            return x.detach().cpu().numpy()
        except (NotImplementedError, RuntimeError, TypeError) as exc:
            raise TypeError(
                f"{name}: cannot copy this torch tensor (device {getattr(x, 'device', '?')}, "
                f"layout {getattr(x, 'layout', '?')}) to a host numpy array: {exc}"
            ) from None
    if x is None or isinstance(x, (str, bytes, dict, set)):
        raise TypeError(f"{name} must be a numpy array (or array-like), got {t.__name__}")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numpy array (or array-like), got {t.__name__}: {exc}") from None
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got an object array from {t.__name__}")
    return arr


def as_2d(x: np.ndarray, name: str) -> Tuple[np.ndarray, bool]:
    """Promote 1-D to (1, d); returns (array, was_1d). 0-d and >2-D raise."""
    if x.ndim == 1:
        return x[None, :], True
    if x.ndim != 2:
        raise ValueError(f"{name} must be 1-D (d,) or 2-D (n, d), got {x.ndim}-D array of shape {x.shape}")
    return x, False


def check_k(k: Any, name: str = "k") -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(k).__name__} {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"{name} must be >= 1, got {k}")
    return k


def check_ids(ids: Any, m: int, name: str = "ids") -> np.ndarray:
    """User ids for ``m`` rows -> a (m,) int64 array (a copy).

    Integers only (floats would be truncated), within int64, and never -1:
    -1 marks an empty result slot (in rescoring candidates and in the padded
    results of a partial sharded search), so a row with id -1 would be
    indistinguishable from no row at all."""
    a = to_numpy(ids, name)
    if a.ndim != 1 or a.shape[0] != m:
        raise ValueError(f"{name} must be a 1-D array of {m} ints (one per row), got shape {a.shape}")
    if a.dtype.kind not in "iu" and a.size:
        raise TypeError(f"{name} must be integers, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64, got max {a.max()}")
    out = a.astype(np.int64)
    if out.size:
        bad = np.flatnonzero(out == -1)
        if bad.size:
            raise ValueError(f"{name} must not contain -1 (it marks an empty result slot), found at position "
                             f"{int(bad[0])}")
    return out


def check_precision(precision: Any, allowed=SEARCH_PRECISIONS, name: str = "precision") -> str:
    """The name of a registered precision among ``allowed``; ValueError otherwise."""
    return P.get(precision, allowed, name).name


def infer_precision(x: np.ndarray, name: str) -> str:
    if x.dtype.kind == "f":
        return P.where(family="float")[0]
    if x.dtype == np.int8:
        raise ValueError(
            f"precision is ambiguous for int8 {name}: pass precision='binary' (packed bits from "
            "quantize_embeddings(..., 'binary')) or precision='int8' (scalar codes)"
        )
    if x.dtype == np.uint8:
        raise ValueError(
            f"precision is ambiguous for uint8 {name}: pass precision='ubinary' (packed bits) or "
            "precision='uint8' (scalar codes)"
        )
    raise TypeError(
        f"{name} must be float32 embeddings or int8/uint8 codes, got dtype {x.dtype}"
    )


def check_codes(x: np.ndarray, precision: str, name: str) -> np.ndarray:
    want = P.PRECISIONS[precision].code_dtype
    if x.dtype != want:
        hint = ""
        if x.dtype.kind == "f":
            hint = f"; quantize first with quantize_embeddings(x, {precision!r})"
        raise TypeError(f"{name} must have dtype {want} for precision={precision!r}, got {x.dtype}{hint}")
    return x


def width_desc(width: int, precision: str) -> str:
    return P.PRECISIONS[precision].width_desc(width)


def check_same_width(q: np.ndarray, c: np.ndarray, precision: str,
                     qname: str = "queries", cname: str = "corpus") -> None:
    if q.shape[1] != c.shape[1]:
        raise ValueError(
            f"{qname} have {width_desc(q.shape[1], precision)} but {cname} has "
            f"{width_desc(c.shape[1], precision)}; both must come from embeddings of the same dimension"
        )


def contiguous(x: np.ndarray, dtype: Any = None) -> np.ndarray:
    """C-contiguous view (no copy when already contiguous, memmaps stay mapped)."""
    if dtype is not None and x.dtype != dtype:
        return np.ascontiguousarray(x, dtype=dtype)
    if x.flags.c_contiguous:
        return x
    return np.ascontiguousarray(x)
