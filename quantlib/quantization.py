"""Embedding quantization: a byte-exact drop-in for sentence-transformers'
``quantize_embeddings`` (6.2 semantics) running on quantlib's C kernels."""
from __future__ import annotations

import logging
from typing import Any, List, Optional, Union, overload

import numpy as np

from . import _core
from . import _precision as P
from ._threads import resolve_threads, run_parallel, split_range

logger = logging.getLogger(__name__)

__all__ = [
    "PRECISIONS",
    "quantize_embeddings",
    "calibration_ranges",
    "dequantize_embeddings",
]

#: the precisions of sentence-transformers' quantize_embeddings, reproduced bit for bit
PRECISIONS = P.where(sentence_transformers=True)


def _st_precision(precision: Any) -> "P.Precision":
    """The registry record of a drop-in precision; upstream's ValueError otherwise."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"Precision {precision!r} is not supported")
    return P.PRECISIONS[precision]

# Below this many input elements a call stays on one thread.
_PARALLEL_MIN_ELEMENTS = 1 << 20


# ---------------------------------------------------------------- helpers
def _is_torch_tensor(x: Any) -> bool:
    t = type(x)
    return t.__module__.split(".")[0] == "torch" and hasattr(x, "detach") and hasattr(x, "numpy")


def _tensor_to_numpy(t: Any, name: str = "embeddings") -> np.ndarray:
    """bfloat16 is upcast to float32 (numpy has no bfloat16); the tensor is
    detached and copied to host memory first, like sentence-transformers.
    Tensors that cannot be copied to host memory (the ``meta`` device, sparse
    layouts, ...) raise TypeError naming the argument."""
    import torch  # only reached with a tensor, so torch is installed

    if t.device.type == "meta":
        raise TypeError(f"{name} is a torch tensor on the 'meta' device, which holds no data")
    try:
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.detach().cpu().numpy()
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        raise TypeError(
            f"{name}: cannot copy a torch tensor (dtype {t.dtype}, device {t.device}, layout "
            f"{t.layout}) to a numpy array: {exc}"
        ) from None


def _array_arg(x: Any, name: str) -> np.ndarray:
    """numpy array for an argument that may be a torch tensor."""
    return _tensor_to_numpy(x, name) if _is_torch_tensor(x) else np.asarray(x)


def _check_real(x: np.ndarray, name: str) -> None:
    if x.dtype.kind not in "fiub":
        raise TypeError(
            f"{name} must be a real numeric array (float16/32/64 or integer), got dtype {x.dtype}"
        )


def _first_nan(x: np.ndarray) -> tuple:
    idx = np.argwhere(np.isnan(x))
    return tuple(int(i) for i in idx[0]) if len(idx) else ()


def _raise_nan(x: np.ndarray, name: str, count: Optional[int] = None) -> None:
    if count is None:
        count = int(np.count_nonzero(np.isnan(x)))
    raise ValueError(
        f"{name} contains {count} NaN value(s) (first at index {_first_nan(x)}); "
        "int8/uint8 quantization of NaN is undefined. Replace or drop them first."
    )


def _as_rows(x: np.ndarray, dtype: Any) -> np.ndarray:
    """(…, d) -> C-contiguous (rows, d) of ``dtype`` (a view when possible)."""
    d = x.shape[-1]
    x2 = x.reshape(-1, d) if x.ndim != 2 else x
    return np.ascontiguousarray(x2, dtype=dtype)


def _row_chunks(n: int, d: int, threads: Optional[int]) -> list:
    t = resolve_threads(threads)
    if t <= 1 or n * max(d, 1) < _PARALLEL_MIN_ELEMENTS:
        return [(0, n)]
    return split_range(n, t)


# ------------------------------------------------------------- calibration
def calibration_ranges(
    embeddings: Any, *, chunk_size: int = 65536, threads: Optional[int] = None
) -> np.ndarray:
    """Per-dimension min / max of calibration embeddings, as float32 ``ranges``.

    Reads ``embeddings`` in chunks of ``chunk_size`` rows, so a memory-mapped
    matrix larger than RAM works. The result is exactly what
    sentence-transformers computes (``np.vstack((x.min(0), x.max(0)))`` cast
    to float32) and can be passed as ``ranges=`` to :func:`quantize_embeddings`
    and stored beside an index.

    Parameters
    ----------
    embeddings : array_like, shape (n, d)
        Real-valued calibration embeddings, n >= 1.
    chunk_size : int
        Rows read per chunk.
    threads : int or None
        Worker threads (None: all usable cores).

    Returns
    -------
    numpy.ndarray of float32, shape (2, d)
        Row 0 the minima, row 1 the maxima.

    Raises
    ------
    ValueError
        Empty input, wrong rank or NaN values (count and first position).
    TypeError
        Non-numeric input.
    """
    if _is_torch_tensor(embeddings):
        embeddings = _tensor_to_numpy(embeddings)
    x = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
    _check_real(x, "embeddings")
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {x.shape}")
    if x.shape[0] < 2:
        # one row gives min == max in every dimension: no bucket width to quantize with (quantize_embeddings
        # refuses to self-calibrate on a single embedding for the same reason)
        raise ValueError(f"embeddings must contain at least two rows to compute ranges, got {x.shape[0]}")
    return _minmax_ranges(x, chunk_size, threads)


def _minmax_ranges(x: np.ndarray, chunk_size: int = 65536, threads: Optional[int] = None) -> np.ndarray:
    """Per-dimension (min, max) of a validated real 2-D array with >= 1 row."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    n, d = x.shape
    if x.dtype in (np.float32, np.float64):
        dt = x.dtype
        mn = np.full(d, np.inf, dtype=dt)
        mx = np.full(d, -np.inf, dtype=dt)
        kern = _core.minmax_f32 if dt == np.float32 else _core.minmax_f64
        nans = 0
        for s in range(0, n, chunk_size):
            block = np.ascontiguousarray(x[s : s + chunk_size])
            chunks = _row_chunks(len(block), d, threads)
            if len(chunks) == 1:
                nans += kern(block, mn, mx)
            else:
                parts = [(np.full(d, np.inf, dt), np.full(d, -np.inf, dt)) for _ in chunks]

                def run(a: int, b: int) -> int:
                    i = chunks.index((a, b))
                    return kern(block[a:b], parts[i][0], parts[i][1])

                nans += sum(run_parallel(run, chunks))
                for pmn, pmx in parts:
                    np.minimum(mn, pmn, out=mn)
                    np.maximum(mx, pmx, out=mx)
        if nans:
            _raise_nan(x, "calibration embeddings", nans)
        return np.vstack((mn, mx)).astype(np.float32)
    # other dtypes: exactly numpy's reduction in the input dtype
    lo: Optional[np.ndarray] = None
    hi: Optional[np.ndarray] = None
    for s in range(0, n, chunk_size):
        block = np.asarray(x[s : s + chunk_size])
        if block.dtype.kind == "f" and np.isnan(block).any():
            _raise_nan(x, "calibration embeddings")
        bmn, bmx = block.min(axis=0), block.max(axis=0)
        lo = bmn if lo is None else np.minimum(lo, bmn)
        hi = bmx if hi is None else np.maximum(hi, bmx)
    return np.vstack((lo, hi)).astype(np.float32)  # type: ignore[arg-type]  # n >= 1: both set


def _ranges_from(calibration: Any, precision: str) -> np.ndarray:
    """sentence-transformers' rule: min/max along axis 0 of the calibration data."""
    if _is_torch_tensor(calibration):
        # upstream calls np.min(tensor, axis=0), which torch rejects
        raise TypeError(
            "calibration_embeddings must be a numpy array or a list, not a torch tensor; "
            "convert it with .cpu().numpy() first"
        )
    c = calibration if isinstance(calibration, np.ndarray) else np.asarray(calibration)
    _check_real(c, "calibration_embeddings")
    if c.ndim == 2 and c.shape[0] > 0:
        return _minmax_ranges(c)  # one calibration row is allowed, as upstream
    if c.ndim == 0 or c.shape[0] == 0:
        # upstream: numpy's "zero-size array to reduction operation" ValueError / AxisError
        raise ValueError(
            f"calibration_embeddings must contain at least one row to compute ranges, got shape {c.shape}")
    if c.dtype.kind == "f" and c.size and np.isnan(c).any():
        _raise_nan(c, "calibration embeddings")
    return np.vstack((np.min(c, axis=0), np.max(c, axis=0)))


def _check_computed_ranges(ranges: np.ndarray, d: int, source: str) -> None:
    """Name the argument the ranges were computed from when they cannot be used."""
    r = np.asarray(ranges)
    if r.ndim == 2 and r.shape[0] == 2 and r.shape[1] not in (d, 1):
        raise ValueError(
            f"{source} have {r.shape[1]} dims but embeddings have {d}; "
            "both must come from the same embedding model")
    if r.dtype.kind == "f" and r.size and not np.isfinite(r).all():
        raise ValueError(
            f"{source} contain infinite values, so the int8/uint8 ranges computed from them are not "
            "finite; pass finite `ranges` (or calibration_embeddings without inf)")


def _self_ranges(x: np.ndarray, precision: str) -> np.ndarray:
    if x.ndim == 1 or x.shape[0] == 1:
        raise ValueError(
            f"Cannot compute {precision} quantization ranges from a single embedding. "
            "Call `quantize_embeddings` with `ranges` or `calibration_embeddings` "
            "from a representative set of embeddings instead."
        )
    if x.shape[0] < 100:
        logger.warning(
            f"Computing {precision} quantization buckets based on {len(x)} embeddings."
            f" {precision} quantization is more stable with `ranges` calculated from more embeddings "
            "or a `calibration_embeddings` that can be used to calculate the buckets."
        )
    return _ranges_from(x, precision)


def _steps(ranges32: np.ndarray) -> tuple:
    starts = ranges32[0, :]
    steps = (ranges32[1, :] - starts) / np.float32(255)
    steps = np.where(steps == 0, np.float32(1), steps).astype(np.float32)
    return starts, steps


def _coerce_ranges(ranges: Any, d: int) -> np.ndarray:
    r = _array_arg(ranges, "ranges")
    if r.dtype.kind not in "fiu":
        raise TypeError(f"ranges must be a real numeric array of shape (2, {d}), got dtype {r.dtype}")
    r = r.astype(np.float32, copy=False)
    if r.ndim != 2 or r.shape[0] != 2 or r.shape[1] not in (d, 1):
        raise ValueError(
            f"ranges must have shape (2, {d}) (row 0 the per-dimension minimum, row 1 the "
            f"maximum) for embeddings of dimension {d}, got shape {r.shape}"
        )
    if not np.isfinite(r).all():
        raise ValueError("ranges must be finite (NaN or infinite minimum/maximum found)")
    if r.shape[1] != d:
        r = np.ascontiguousarray(np.broadcast_to(r, (2, d)))
    return r


def _scalar_quantize(x: np.ndarray, ranges32: np.ndarray, xor_mask: int,
                     threads: Optional[int]) -> np.ndarray:
    d = x.shape[-1]
    calc = np.result_type(x.dtype, np.float32)
    if calc not in (np.float32, np.float64):  # e.g. float128: numpy formula
        starts, steps = _steps(ranges32)
        q = np.clip(np.floor((x - starts) / steps), 0, 255)
        if np.isnan(x).any():
            _raise_nan(x, "embeddings")
        return q.astype(np.uint8) ^ np.uint8(xor_mask)
    starts, steps = _steps(ranges32)
    rows = _as_rows(x, calc)
    n = rows.shape[0]
    out = np.empty((n, d), dtype=np.uint8)
    kern: Any
    if calc == np.float32:
        kern, st, sp = _core.quantize_f32, starts.astype(np.float32), steps
    else:
        kern, st, sp = _core.quantize_f64, starts.astype(np.float64), steps.astype(np.float64)
    st = np.ascontiguousarray(st)
    sp = np.ascontiguousarray(sp)
    if n and d:
        nans = sum(run_parallel(lambda a, b: kern(rows[a:b], st, sp, out[a:b], xor_mask),
                                _row_chunks(n, d, threads)))
        if nans:
            _raise_nan(x, "embeddings", nans)
    return out.reshape(x.shape)


def _pack_sign(x: np.ndarray, xor_mask: int, threads: Optional[int]) -> np.ndarray:
    if x.ndim == 0:
        raise ValueError("embeddings must have at least one dimension, got a 0-d array")
    d = x.shape[-1]
    nbytes = (d + 7) // 8
    if x.dtype.kind not in "fiub":
        raise TypeError(f"embeddings must be a real numeric array, got dtype {x.dtype}")
    calc = np.float64 if x.dtype.itemsize > 4 or x.dtype == np.float64 else np.float32
    if x.dtype.kind == "f" and x.dtype.itemsize > 8:  # long double: numpy path
        out = np.packbits(x > 0, axis=-1)
        return out ^ np.uint8(xor_mask) if xor_mask else out
    rows = _as_rows(x, calc)
    n = rows.shape[0]
    out = np.empty((n, nbytes), dtype=np.uint8)
    if n and d:
        kern = _core.pack_sign_f32 if calc == np.float32 else _core.pack_sign_f64
        run_parallel(lambda a, b: kern(rows[a:b], out[a:b], xor_mask), _row_chunks(n, d, threads))
    return out.reshape(x.shape[:-1] + (nbytes,))


# ------------------------------------------------------------- public API
@overload
def quantize_embeddings(
    embeddings: List[Any],
    precision: str,
    ranges: Optional[np.ndarray] = None,
    calibration_embeddings: Optional[np.ndarray] = None,
    *,
    threads: Optional[int] = None,
) -> List[np.ndarray]: ...


@overload
def quantize_embeddings(
    embeddings: Any,
    precision: str,
    ranges: Optional[np.ndarray] = None,
    calibration_embeddings: Optional[np.ndarray] = None,
    *,
    threads: Optional[int] = None,
) -> np.ndarray: ...


def quantize_embeddings(
    embeddings: Any,
    precision: str,
    ranges: Optional[np.ndarray] = None,
    calibration_embeddings: Optional[np.ndarray] = None,
    *,
    threads: Optional[int] = None,
) -> Union[np.ndarray, List[np.ndarray]]:
    """Quantize embeddings to float32, int8, uint8, binary or ubinary.

    A drop-in replacement for ``sentence_transformers.quantize_embeddings``
    (6.2 semantics, byte-for-byte identical output), computed by SIMD kernels
    on all usable cores.

    Parameters
    ----------
    embeddings : numpy.ndarray, torch.Tensor, or list of either
        Float embeddings, any rank; the last axis is the embedding dimension.
        A list of 2-D arrays (multi-vector / token embeddings) returns a list
        of quantized matrices sharing one set of ranges.
    precision : {"float32", "int8", "uint8", "binary", "ubinary"}
        ``int8``/``uint8``: per-dimension scalar quantization into 256
        buckets, ``floor((x - min) / step)`` clipped to [0, 255] with
        ``step = (max - min) / 255`` in float32; int8 is that value - 128.
        ``binary``/``ubinary``: one bit per dimension (``x > 0``), packed
        big-endian along the last axis into ``ceil(d / 8)`` bytes; binary is
        the ubinary byte - 128 as int8.
    ranges : numpy.ndarray, shape (2, d), optional
        int8/uint8 only: row 0 the per-dimension minimum, row 1 the maximum.
    calibration_embeddings : numpy.ndarray, optional
        int8/uint8 only: embeddings to compute ``ranges`` from when ``ranges``
        is not given (otherwise the input itself is used, which needs >= 2
        rows and logs a warning under 100).
    threads : int or None, keyword-only
        Worker threads for large inputs (None: all usable cores).

    Returns
    -------
    numpy.ndarray or list of numpy.ndarray
        float32, int8, uint8, int8 (binary) or uint8 (ubinary).

    Raises
    ------
    ValueError
        Unsupported precision; ranges from a single embedding; NaN values in
        int8/uint8 input or calibration data (quantlib refuses what upstream
        silently turns into garbage); ranges of the wrong shape or not finite.
    Exception
        int8/uint8 input (the same plain ``Exception`` as upstream).
    TypeError
        Non-numeric input.

    Notes
    -----
    ±inf saturate to 0 / 255 exactly as upstream. The calibration maximum
    usually maps to bucket 254, not 255, because the float32 step rounds up;
    this is reproduced bit for bit.
    """
    if _is_torch_tensor(embeddings):
        embeddings = _tensor_to_numpy(embeddings)
    elif isinstance(embeddings, list):
        if not embeddings:
            return []
        if _is_torch_tensor(embeddings[0]):
            embeddings = [_tensor_to_numpy(e) if _is_torch_tensor(e) else e for e in embeddings]
        if isinstance(embeddings[0], np.ndarray) and embeddings[0].ndim == 2:
            if _st_precision(precision).needs_ranges and ranges is None:
                calib = (np.concatenate(embeddings, axis=0)
                         if calibration_embeddings is None else calibration_embeddings)
                if len(calib):
                    if calibration_embeddings is None:
                        ranges = _self_ranges(np.asarray(calib), precision)
                    else:
                        ranges = _ranges_from(calibration_embeddings, precision)
            return [
                quantize_embeddings(m, precision=precision, ranges=ranges,
                                    calibration_embeddings=calibration_embeddings,
                                    threads=threads)
                for m in embeddings
            ]
        embeddings = np.array(embeddings)
    elif not isinstance(embeddings, np.ndarray):
        if isinstance(embeddings, (str, bytes)) or embeddings is None:
            raise TypeError(
                "embeddings must be a numpy array, a torch tensor or a list of them, "
                f"got {type(embeddings).__name__}"
            )
        embeddings = np.asarray(embeddings)

    if embeddings.dtype in (np.uint8, np.int8):
        raise Exception("Embeddings to quantize must be float rather than int8 or uint8.")
    rec = _st_precision(precision)
    _check_real(embeddings, "embeddings")

    if embeddings.ndim == 2 and embeddings.shape[0] == 0 and not rec.is_float:
        return np.zeros((0, rec.width(embeddings.shape[1])), dtype=rec.code_dtype)

    if rec.is_float:
        return embeddings.astype(np.float32)

    if rec.needs_ranges:
        if embeddings.ndim == 0:
            raise ValueError("embeddings must have at least one dimension, got a 0-d array")
        d = embeddings.shape[-1]
        if ranges is None:
            if calibration_embeddings is None:
                if embeddings.ndim > 2:
                    return _nd_self_calibrated(embeddings, precision)
                ranges = _self_ranges(embeddings, precision)
                _check_computed_ranges(ranges, d, "embeddings")
            else:
                ranges = _ranges_from(calibration_embeddings, precision)
                _check_computed_ranges(ranges, d, "calibration_embeddings")
        ranges32 = _coerce_ranges(ranges, d)
        out = _scalar_quantize(embeddings, ranges32, rec.xor_mask, threads)
        return out.view(rec.code_dtype)

    # packed sign bits (binary / ubinary)
    out = _pack_sign(embeddings, rec.xor_mask, threads)
    return out.view(rec.code_dtype)


def _nd_self_calibrated(x: np.ndarray, precision: str) -> np.ndarray:
    """N-D input with neither ranges nor calibration: upstream reduces along
    axis 0 only, so its "ranges" are not per-dimension min/max. Reproduced
    with upstream's own numpy formula for exact compatibility (documented as
    meaningless; pass ``ranges`` for N-D input)."""
    if x.dtype.kind == "f" and np.isnan(x).any():
        _raise_nan(x, "embeddings")
    if x.shape[0] == 0 or x.shape[1] == 0:
        # upstream: a numpy reduction ValueError (n == 0) or an IndexError on
        # the empty "ranges" (axis 1 empty); quantlib raises ValueError for both
        raise ValueError(
            f"Cannot compute {precision} quantization ranges from empty embeddings of shape "
            f"{x.shape}. Call `quantize_embeddings` with `ranges` or `calibration_embeddings`."
        )
    ranges = _self_ranges_nd(x, precision).astype(np.float32, copy=False)
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    q = np.clip(np.floor((x - starts) / steps), 0, 255)
    if not P.PRECISIONS[precision].signed:
        return q.astype(np.uint8)
    return (q - 128).astype(np.int8)


def _self_ranges_nd(x: np.ndarray, precision: str) -> np.ndarray:
    if x.shape[0] == 1:
        _self_ranges(x, precision)  # raises the single-embedding error
    if x.shape[0] < 100:
        logger.warning(
            f"Computing {precision} quantization buckets based on {len(x)} embeddings."
            f" {precision} quantization is more stable with `ranges` calculated from more embeddings "
            "or a `calibration_embeddings` that can be used to calculate the buckets."
        )
    return np.vstack((np.min(x, axis=0), np.max(x, axis=0)))


def _dequantization_steps(r: np.ndarray):
    """(starts, steps) of coerced ranges for dequantizing (and rescoring)
    codes; unlike quantization (which mirrors upstream), a step that
    overflows float32 is an error rather than silent inf/NaN values."""
    with np.errstate(over="ignore"):
        starts, steps = _steps(r)
    if not np.isfinite(steps).all():
        j = int(np.flatnonzero(~np.isfinite(steps))[0])
        lo = float(np.broadcast_to(r[0], steps.shape).reshape(-1)[j])
        hi = float(np.broadcast_to(r[1], steps.shape).reshape(-1)[j])
        raise ValueError(f"ranges are too wide for float32: (max - min) / 255 overflows at dim {j} "
                         f"(min {lo:g}, max {hi:g})")
    return starts, steps


def dequantize_embeddings(codes: np.ndarray, precision: str, ranges: np.ndarray, *,
                          dtype: Any = np.float64) -> np.ndarray:
    """Map int8/uint8 codes back to bucket floors: ``(code [+128]) * step + min``.

    Computed in float64, which is what sentence-transformers 6.2 rescores
    candidates with; ``dtype=np.float32`` returns the same values rounded to
    float32 (half the memory).
    """
    out_dtype = np.dtype(dtype)
    if out_dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise TypeError(f"dtype must be float64 or float32, got {out_dtype}")
    scalar = P.where(family="scalar")
    if not isinstance(precision, str) or precision not in scalar:
        raise ValueError(f"precision must be {' or '.join(repr(n) for n in scalar)}, got {precision!r}")
    rec = P.PRECISIONS[precision]
    c = _array_arg(codes, "codes")
    want = rec.code_dtype
    if c.dtype != want:
        raise TypeError(f"codes must have dtype {np.dtype(want)} for precision {precision!r}, got {c.dtype}")
    if c.ndim == 0:
        raise ValueError("codes must have at least one dimension (..., d), got a 0-d array")
    starts, steps = _dequantization_steps(_coerce_ranges(ranges, c.shape[-1]))
    v = c.astype(np.float64)
    if rec.signed:
        v += 128
    return (v * steps + starts).astype(out_dtype, copy=False)
