"""Coverage-guided fuzz target for quantlib's public API (atheris).

Every input is decoded into one call of a public function with a random
shape, dtype, memory layout (C, Fortran, negative stride, row/column step,
read-only, memmap, list, torch tensor), k, precision, threads and kernel
level.  A finding is

* any exception other than TypeError / ValueError (and the plain
  ``Exception`` quantize_embeddings raises for int8/uint8 input, mirroring
  sentence-transformers 6.2);
* a crash (signal), a hang (libFuzzer -timeout) or a sanitizer report;
* a result that differs from a small numpy reference (exactly: inputs are
  drawn so that every reference is exact in floating point too), or, for
  quantize_embeddings, from sentence-transformers itself wherever upstream's
  result is defined (no invalid floating-point operation).

Run:  python fuzz/fuzz_api.py fuzz/corpus_api -max_total_time=60
Replay one input:  python fuzz/fuzz_api.py crash-<sha>
Coverage-blind (e.g. under ASan):  python fuzz/fuzz_api.py --random SECONDS CORPUS_DIR
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings

import atheris
from _harness import save_finding  # fuzz/_harness.py, beside this file

# quantlib is built in place (python setup.py build_ext --inplace), not installed:
# import it from the tree this file lives in, or from QUANTLIB_ROOT.
sys.path.insert(0, os.environ.get("QUANTLIB_ROOT")
                or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402  (imported first: not instrumented)

with atheris.instrument_imports(include=["quantlib"]):
    import quantlib
    import quantlib._threads
    import quantlib._validate
    import quantlib.quantization
    import quantlib.search  # noqa: F401

QL_SEARCH = sys.modules["quantlib.search"]  # (quantlib.search is the function)
QL_QUANT = sys.modules["quantlib.quantization"]

logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
logging.getLogger("quantlib").setLevel(logging.ERROR)
warnings.simplefilter("ignore")

try:  # the oracle for quantize_embeddings
    from sentence_transformers.util.quantization import quantize_embeddings as st_quantize
except Exception:  # pragma: no cover - optional
    st_quantize = None
try:
    import torch
except Exception:  # pragma: no cover - optional
    torch = None

ISAS = quantlib.available_isas()
INT8_MSG = "Embeddings to quantize must be float rather than int8 or uint8."
DTYPES = [np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16, np.int32, np.int64,
          np.bool_, np.complex64, np.longdouble, np.uint64, object]
CODE_DTYPES = [np.int8, np.uint8, np.int8, np.uint8, np.float32, np.int16, np.bool_]
PRECISIONS = ["float32", "int8", "uint8", "binary", "ubinary", None, "float16", "INT8", ""]
SPECIALS = [0.0, -0.0, 1.0, -1.0, 0.5, -2.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 3.0e38, -3.0e38, 1e30]
_TMP = tempfile.mkdtemp(prefix="quantlib-fuzz-")
ORIG_WORK = QL_SEARCH._PARALLEL_MIN_WORK
ORIG_ELEMS = QL_QUANT._PARALLEL_MIN_ELEMENTS


class Bug(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Bug(msg)


# ----------------------------------------------------------------- inputs
def values(fdp, n, dtype, exact):
    """n values; exact=True keeps them small integers (exact float sums)."""
    mode = fdp.ConsumeIntInRange(0, 3) if not exact else 0
    if mode == 0:
        lo, hi = (-3, 3) if fdp.ConsumeBool() else (-128, 255)
        v = np.array(fdp.ConsumeIntListInRange(n, lo, hi), dtype=np.int64)
        if len(v) < n:
            v = np.concatenate([v, np.zeros(n - len(v), np.int64)])
        if dtype is object:
            return v.astype(object)
        with np.errstate(all="ignore"):
            return v.astype(dtype)
    if mode == 1:  # specials
        idx = np.array(fdp.ConsumeIntListInRange(n, 0, len(SPECIALS) - 1), dtype=np.int64)
        if len(idx) < n:
            idx = np.concatenate([idx, np.zeros(n - len(idx), np.int64)])
        v = np.array(SPECIALS)[idx]
    elif mode == 2:  # normal floats
        v = np.array([fdp.ConsumeRegularFloat() for _ in range(min(n, 64))] + [0.0] * max(0, n - 64))
    else:  # raw bytes reinterpreted
        itemsize = np.dtype(dtype).itemsize if dtype is not object else 8
        raw = fdp.ConsumeBytes(n * itemsize)
        raw = raw + b"\0" * (n * itemsize - len(raw))
        if dtype is object:
            return np.frombuffer(raw, np.float64).astype(object)
        return np.frombuffer(raw, dtype=dtype).copy()
    with np.errstate(all="ignore"):
        return v.astype(dtype) if dtype is not object else v.astype(object)


def array(fdp, shape, dtype, exact=False, allow_exotic=True):
    """An array of ``shape``/``dtype`` in a random memory layout (or list /
    tensor / memmap when allow_exotic)."""
    size = int(np.prod(shape)) if len(shape) else 1
    base = values(fdp, size, dtype, exact).reshape(shape)
    layout = fdp.ConsumeIntInRange(0, 9)
    if layout == 1 and base.ndim >= 2:
        base = np.asfortranarray(base)
    elif layout == 2 and base.ndim >= 1:
        base = np.ascontiguousarray(base[::-1])[::-1]  # negative stride view, same values
    elif layout == 3 and base.ndim >= 1:
        big = np.zeros((2 * shape[0],) + tuple(shape[1:]), dtype=base.dtype)
        big[::2] = base
        base = big[::2]
    elif layout == 4 and base.ndim >= 2:
        big = np.zeros(tuple(shape[:-1]) + (shape[-1] + 3,), dtype=base.dtype)
        big[..., : shape[-1]] = base
        base = big[..., : shape[-1]]
    elif layout == 5:
        base = base.copy()
        base.flags.writeable = False
    elif layout == 6 and allow_exotic and dtype is not object and base.size:
        path = os.path.join(_TMP, "mm.bin")
        mm = np.memmap(path, dtype=base.dtype, mode="w+", shape=base.shape)
        mm[...] = base
        mm.flush()
        base = np.memmap(path, dtype=base.dtype, mode="r", shape=base.shape)
    elif layout == 7 and allow_exotic:
        return base.tolist()
    elif layout == 8 and allow_exotic and torch is not None and dtype is not object \
            and np.dtype(dtype) in (np.float32, np.float64, np.float16, np.int8, np.uint8, np.int64, np.int32):
        t = torch.from_numpy(np.ascontiguousarray(base))
        if t.is_floating_point():
            r = fdp.ConsumeIntInRange(0, 2)
            if r == 1:
                t = t.to(torch.bfloat16)
            elif r == 2:
                t = t.clone().requires_grad_(True)
        return t
    return base


def shape_of(fdp, ndim=None, max_dim=40):
    if ndim is None:
        ndim = fdp.PickValueInList([0, 1, 2, 2, 2, 2, 3])
    return tuple(fdp.ConsumeIntInRange(0, max_dim) for _ in range(ndim))


def pick_k(fdp, n):
    r = fdp.ConsumeIntInRange(0, 9)
    if r == 0:
        return fdp.PickValueInList([0, -1, True, False, 2.0, 1.5, None, "3", np.int64(2), np.uint8(1)])
    if r == 1:
        return n + fdp.ConsumeIntInRange(0, 5)
    return fdp.ConsumeIntInRange(1, max(1, n + 1))


def pick_threads(fdp):
    r = fdp.ConsumeIntInRange(0, 7)
    if r == 0:
        return fdp.PickValueInList([0, -1, True, 2.0, "2"])
    return fdp.PickValueInList([None, 1, 2, 3, 4, 1, 2])


def as_np(x):
    """What the reference sees (torch -> numpy, bfloat16 -> float32)."""
    if torch is not None and isinstance(x, torch.Tensor):
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.detach().numpy()
    return np.asarray(x)


# ------------------------------------------------------------- references
def ref_topk(keys, k, descending):
    keys = np.asarray(keys)
    nq, n = keys.shape
    kk = min(k, n)
    primary = -keys.astype(np.float64) if descending else keys.astype(np.float64)
    idx = np.empty((nq, kk), np.int64)
    for i in range(nq):
        idx[i] = np.lexsort((np.arange(n), primary[i]))[:kk]
    return np.take_along_axis(keys, idx, axis=1), idx


def ref_hamming(a, b):
    ua = np.unpackbits(np.ascontiguousarray(a).view(np.uint8), axis=1).astype(np.int64)
    ub = np.unpackbits(np.ascontiguousarray(b).view(np.uint8), axis=1).astype(np.int64)
    return (ua[:, None, :] != ub[None, :, :]).sum(-1)


# ------------------------------------------------------------- operations
def op_quantize(fdp):
    dtype = fdp.PickValueInList(DTYPES)
    shp = shape_of(fdp, max_dim=24)
    x = array(fdp, shp, dtype)
    precision = fdp.PickValueInList(PRECISIONS[:5] + PRECISIONS[6:])
    extra = {}
    d = shp[-1] if shp else 1
    how = fdp.ConsumeIntInRange(0, 4)
    if how == 1:
        extra["ranges"] = array(fdp, (2, d), fdp.PickValueInList([np.float32, np.float64, np.int32]),
                                exact=fdp.ConsumeBool(), allow_exotic=False)
        if fdp.ConsumeBool():
            r = np.asarray(extra["ranges"]).astype(np.float64)
            extra["ranges"] = np.sort(r, axis=0)
    elif how == 2:
        extra["calibration_embeddings"] = array(fdp, (fdp.ConsumeIntInRange(0, 6), d), np.float32,
                                                allow_exotic=False)
    elif how == 3:
        extra["ranges"] = array(fdp, shape_of(fdp, max_dim=4), np.float32, allow_exotic=False)
    if fdp.ConsumeBool():
        extra["threads"] = pick_threads(fdp)
    try:
        out = quantlib.quantize_embeddings(x, precision, **extra)
    except (TypeError, ValueError):
        return
    except Exception as exc:
        if type(exc) is Exception and str(exc) == INT8_MSG:
            xn = as_np(x)
            check(xn.dtype in (np.int8, np.uint8), f"int8 Exception for dtype {xn.dtype}")
            return
        raise
    if isinstance(x, list) and len(x) == 0:
        check(out == [], f"empty list gave {out!r}")  # upstream: [] for every precision
        return
    xn = as_np(x)
    check(xn.dtype not in (np.int8, np.uint8), "int8/uint8 input accepted")
    check(precision in PRECISIONS[:5], f"precision {precision!r} accepted")
    check(isinstance(out, np.ndarray), f"result is {type(out)}")
    if st_quantize is None:
        return
    extra.pop("threads", None)
    if "ranges" in extra and not isinstance(extra["ranges"], np.ndarray):
        extra["ranges"] = as_np(extra["ranges"])
    try:
        with np.errstate(invalid="raise", over="ignore", divide="ignore", under="ignore"):
            xs = xn if isinstance(x, list) else x
            if torch is not None and isinstance(xs, torch.Tensor):
                xs = xs.detach()  # upstream .numpy() refuses requires_grad; quantlib detaches
            want = st_quantize(xs, precision, **extra)
    except FloatingPointError:
        return  # upstream result undefined (NaN arithmetic / cast); quantlib may refuse or differ
    except Exception as exc:
        if not isinstance(x, np.ndarray) and not (torch is not None and isinstance(x, torch.Tensor)):
            return  # upstream fails on Python scalars / lists of scalars; quantlib converts them
        raise Bug(f"quantlib accepted what sentence-transformers rejects: {type(exc).__name__}: {exc}")
    check(out.dtype == want.dtype, f"dtype {out.dtype} != upstream {want.dtype}")
    check(out.shape == want.shape, f"shape {out.shape} != upstream {want.shape}")
    check(np.array_equal(out.view(np.uint8) if out.dtype.itemsize == 1 else out,
                         want.view(np.uint8) if want.dtype.itemsize == 1 else want, equal_nan=True),
          f"values differ from sentence-transformers for {precision} dtype {xn.dtype} shape {xn.shape}")


def op_search(fdp):
    precision = fdp.PickValueInList(PRECISIONS)
    cdt = fdp.PickValueInList(CODE_DTYPES)
    qdt = cdt if fdp.ConsumeIntInRange(0, 5) else fdp.PickValueInList(CODE_DTYPES)
    n = fdp.ConsumeIntInRange(0, 300)
    nq = fdp.ConsumeIntInRange(0, 40)
    w = fdp.ConsumeIntInRange(0, 40)
    wq = w if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeIntInRange(0, 40)
    qshape = (wq,) if fdp.ConsumeIntInRange(0, 4) == 0 else (nq, wq)
    if fdp.ConsumeIntInRange(0, 15) == 0:
        qshape = shape_of(fdp, fdp.PickValueInList([0, 3]), 5)
    c = array(fdp, (n, w), cdt, exact=True)
    q_exact = fdp.ConsumeIntInRange(0, 7) > 0
    q = array(fdp, qshape, qdt, exact=q_exact)
    k = pick_k(fdp, n)
    threads = pick_threads(fdp)
    kw = {"threads": threads}
    if precision is not None:
        kw["precision"] = precision
    try:
        vals, idx = quantlib.search(q, c, k, **kw)
    except (TypeError, ValueError):
        return
    qn, cn = as_np(q), as_np(c)
    prec = precision or ("float32" if cn.dtype.kind == "f" else None)
    check(prec is not None, f"precision inferred for {cn.dtype}")
    check(idx.dtype == np.int64, f"ids dtype {idx.dtype}")
    q2 = qn[None, :] if qn.ndim == 1 else qn
    if prec == "float32":
        check(vals.dtype == np.float32, f"float32 scores dtype {vals.dtype}")
        if not np.isfinite(cn.astype(np.float64)).all():
            return  # corpus NaN/inf: see docs/bad_input.md (not validated; order undefined)
        scores = q2.astype(np.float64) @ cn.astype(np.float64).T
        if not q_exact:
            # float32 rounding (and overflow to inf) makes exact parity with a
            # float64 oracle meaningless: check shape, ids and ordering only
            kk = min(int(k), cn.shape[0])
            v2, i2 = (vals[None], idx[None]) if qn.ndim == 1 else (vals, idx)
            check(v2.shape == (q2.shape[0], kk) and i2.shape == v2.shape, f"float32 shape {v2.shape}")
            check(((i2 >= 0) & (i2 < cn.shape[0])).all(), "float32 ids out of range")
            check(all(len(set(r)) == len(r) for r in i2.tolist()), "float32 duplicate ids")
            check(np.all(np.diff(v2.astype(np.float64), axis=1) <= 0), "float32 scores not descending")
            return
        want_v, want_i = ref_topk(scores, int(k), descending=True)
    elif prec in ("binary", "ubinary"):
        check(vals.dtype == np.int32, f"hamming dtype {vals.dtype}")
        if q2.dtype.kind == "f":  # float queries are quantized by sign (x > 0), as quantize_embeddings does
            q2 = np.packbits(q2 > 0, axis=-1)
            q2 = (q2 ^ np.uint8(0x80)).view(np.int8) if prec == "binary" else q2
        want_v, want_i = ref_topk(ref_hamming(q2, cn), int(k), descending=False)
    else:
        check(vals.dtype == np.int32, f"dot dtype {vals.dtype}")
        want_v, want_i = ref_topk(q2.astype(np.int64) @ cn.astype(np.int64).T, int(k), descending=True)
    if qn.ndim == 1:
        want_v, want_i = want_v[0], want_i[0]
    check(vals.shape == want_v.shape, f"shape {vals.shape} != {want_v.shape}")
    check(np.array_equal(idx, want_i), f"{prec} ids differ: {idx} vs {want_i}")
    check(np.array_equal(vals.astype(np.float64), want_v.astype(np.float64)), f"{prec} values differ")


def op_pairwise(fdp):
    binary = fdp.ConsumeBool()
    adt = fdp.PickValueInList(CODE_DTYPES)
    bdt = adt if fdp.ConsumeIntInRange(0, 3) else fdp.PickValueInList(CODE_DTYPES)
    w = fdp.ConsumeIntInRange(0, 40)
    ashape = (fdp.ConsumeIntInRange(0, 30), w) if fdp.ConsumeIntInRange(0, 3) else (w,)
    bshape = (fdp.ConsumeIntInRange(0, 30), w) if fdp.ConsumeIntInRange(0, 3) else (w,)
    if fdp.ConsumeIntInRange(0, 9) == 0:
        bshape = shape_of(fdp, None, 6)
    a = array(fdp, ashape, adt, exact=True)
    b = array(fdp, bshape, bdt, exact=True)
    fn = quantlib.hamming_distance if binary else quantlib.int8_dot
    try:
        out = fn(a, b, threads=pick_threads(fdp))
    except (TypeError, ValueError):
        return
    an, bn = as_np(a), as_np(b)
    a2 = an[None] if an.ndim == 1 else an
    b2 = bn[None] if bn.ndim == 1 else bn
    if binary and a2.dtype != b2.dtype:
        # binary (int8) and ubinary (uint8) codes of one embedding differ by an
        # XOR with 0x80 on every byte: hamming_distance undoes it on the int8 side
        a2 = a2.view(np.uint8) ^ np.uint8(0x80) if a2.dtype == np.int8 else a2
        b2 = b2.view(np.uint8) ^ np.uint8(0x80) if b2.dtype == np.int8 else b2
    want = ref_hamming(a2, b2) if binary else a2.astype(np.int64) @ b2.astype(np.int64).T
    if an.ndim == 1:
        want = want[0]
    if bn.ndim == 1:
        want = want[..., 0]
    check(np.asarray(out).dtype == np.int32, f"dtype {np.asarray(out).dtype}")
    check(np.shape(out) == np.shape(want), f"shape {np.shape(out)} != {np.shape(want)}")
    check(np.array_equal(out, want), "pairwise values differ")


def op_rescore(fdp):
    precision = fdp.PickValueInList(["int8", "uint8", "binary", "ubinary", "float32", None])
    d = fdp.ConsumeIntInRange(0, 40)
    n = fdp.ConsumeIntInRange(0, 60)
    nq = fdp.ConsumeIntInRange(0, 8)
    m = fdp.ConsumeIntInRange(0, 12)
    width = (d + 7) // 8 if precision in ("binary", "ubinary") else d
    if fdp.ConsumeIntInRange(0, 7) == 0:
        width = fdp.ConsumeIntInRange(0, 40)
    cdt = fdp.PickValueInList([np.int8, np.uint8, np.int8, np.uint8, np.int32])
    codes = array(fdp, (n, width), cdt, exact=True)
    qshape = (nq, d) if fdp.ConsumeIntInRange(0, 4) else (d,)
    q = array(fdp, qshape, fdp.PickValueInList([np.float32, np.float64, np.float16, np.int8]),
              exact=fdp.ConsumeIntInRange(0, 5) > 0)
    nrows = 1 if len(qshape) == 1 else nq
    cshape = (nrows, m) if fdp.ConsumeIntInRange(0, 4) else (m,)
    lo = -1 if fdp.ConsumeIntInRange(0, 7) else -5
    hi = max(-1, n - 1) if fdp.ConsumeIntInRange(0, 7) else n + 3
    cand = np.array(fdp.ConsumeIntListInRange(int(np.prod(cshape)), lo, hi) or [0], np.int64)
    cand = np.resize(cand, cshape)
    if fdp.ConsumeIntInRange(0, 5) == 0:
        cand = cand.astype(fdp.PickValueInList([np.int32, np.uint8, np.float64, np.bool_]))
    ranges = None
    if fdp.ConsumeIntInRange(0, 5):
        ranges = np.vstack([np.zeros(d), np.full(d, 255.0)]).astype(np.float32)  # step 1, exact
        if fdp.ConsumeBool():
            ranges = array(fdp, (2, d), np.float32, exact=True, allow_exotic=False)
    k = None if fdp.ConsumeBool() else pick_k(fdp, m)
    try:
        scores, ids = quantlib.rescore(q, codes, cand, precision=precision, ranges=ranges, k=k,
                                       threads=pick_threads(fdp))
    except (TypeError, ValueError):
        return
    qn, cn = as_np(q).astype(np.float64), as_np(codes)
    q2 = qn[None] if qn.ndim == 1 else qn
    c2 = cand[None] if cand.ndim == 1 else cand
    c2 = c2.astype(np.int64)
    if precision in ("binary", "ubinary"):
        bits = np.unpackbits(cn.view(np.uint8) ^ np.uint8(0x80 if precision == "binary" else 0),
                             axis=1)[:, :d].astype(np.float64)
        dense = bits
        absdense = bits
    else:
        r = np.asarray(ranges, np.float32)
        start = r[0]
        step = (r[1] - start) / np.float32(255)
        step = np.where(step == 0, np.float32(1), step).astype(np.float32)
        scaled = (cn.astype(np.float64) + (128 if precision == "int8" else 0)) * step.astype(np.float64)
        dense = scaled + start.astype(np.float64)
        absdense = np.abs(scaled) + np.abs(start.astype(np.float64))  # no cancellation inside the bound
    full = np.full(c2.shape, -np.inf)
    mag = np.zeros(c2.shape)  # sum |q| (|(c + off) step| + |start|): the scale of the float64 rounding error
    for i in range(c2.shape[0]):
        for t in range(c2.shape[1]):
            if c2[i, t] >= 0:
                full[i, t] = dense[c2[i, t]] @ q2[i]
                mag[i, t] = absdense[c2[i, t]] @ np.abs(q2[i])
    kk = c2.shape[1] if k is None else min(int(k), c2.shape[1])
    check(scores.shape[-1] == kk, f"rescore width {scores.shape} != {kk}")
    s2 = scores[None] if scores.ndim == 1 else scores
    i2 = ids[None] if ids.ndim == 1 else ids
    for i in range(c2.shape[0]):
        got = s2[i]
        check(np.all(got[:-1] >= got[1:]) if len(got) > 1 else True, "rescore scores not descending")
        for t in range(kk):
            pos = np.nonzero(c2[i] == i2[i, t])[0]
            check(len(pos) > 0, f"rescore returned id {i2[i, t]} not among the candidates")
            ok = (np.abs(full[i, pos] - got[t]) <= 1e-12 * mag[i, pos] + 1e-9) | \
                ((full[i, pos] == -np.inf) & (got[t] == -np.inf))
            check(ok.any(), f"rescore score {got[t]} for id {i2[i, t]} != reference {full[i, pos]}")
        want_sorted = np.sort(full[i])[::-1][:kk]
        tol = 1e-12 * mag[i].max(initial=0.0) + 1e-9
        with np.errstate(invalid="ignore"):  # -inf - -inf
            close = (np.abs(want_sorted - got) <= tol) | (want_sorted == got)
        check(close.all(), "rescore kept the wrong candidates")


def op_merge(fdp):
    nq = fdp.ConsumeIntInRange(0, 6)
    m = fdp.ConsumeIntInRange(0, 20)
    vdt = fdp.PickValueInList([np.int32, np.float32, np.float64, np.int64, np.uint8])
    vals = array(fdp, (nq, m), vdt, exact=fdp.ConsumeBool(), allow_exotic=False)
    ids = np.arange(nq * m, dtype=np.int64).reshape(nq, m)
    if fdp.ConsumeBool():
        ids = np.array(fdp.ConsumeIntListInRange(nq * m, -1, 50) or [0], np.int64)
        ids = np.resize(ids, (nq, m))
    if fdp.ConsumeIntInRange(0, 7) == 0:
        ids = ids[:, : max(0, m - 1)]
    k = pick_k(fdp, m)
    desc = fdp.ConsumeBool()
    try:
        v, i = quantlib.merge_topk(vals, ids, k, descending=desc)
    except (TypeError, ValueError):
        return
    vn = np.asarray(vals)
    check(isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)) and k >= 1,
          f"merge_topk accepted k={k!r}")
    if vn.dtype.kind == "f" and np.isnan(vn).any():
        return
    kk = min(int(k), m)
    exact = int if vn.dtype.kind in "iu" else float  # no float64 rounding of int64 values
    for r in range(nq):
        order = sorted(range(m), key=lambda j: ((-1 if desc else 1) * exact(vn[r, j]), int(ids[r, j])))[:kk]
        check(np.array_equal(i[r], ids[r][order]), "merge_topk ids differ")
        check(np.array_equal(v[r], vn[r][order]), "merge_topk values differ")


def op_calibration(fdp):
    dtype = fdp.PickValueInList(DTYPES)
    x = array(fdp, shape_of(fdp, max_dim=30), dtype)
    cs = fdp.PickValueInList([1, 2, 3, 7, 65536, 0, -1, True, 2.0])
    try:
        r = quantlib.calibration_ranges(x, chunk_size=cs, threads=pick_threads(fdp))
    except (TypeError, ValueError):
        return
    xn = as_np(x)
    check(xn.ndim == 2 and xn.shape[0] > 1, f"calibration accepted shape {xn.shape}")
    check(not (xn.dtype.kind == "f" and np.isnan(xn).any()), "calibration accepted NaN")
    want = np.vstack((xn.min(0), xn.max(0))).astype(np.float32)
    check(r.dtype == np.float32 and np.array_equal(r, want), "calibration_ranges differ")


def op_dequantize(fdp):
    precision = fdp.PickValueInList(["int8", "uint8", "binary", None])
    dt = fdp.PickValueInList([np.int8, np.uint8, np.float32])
    d = fdp.ConsumeIntInRange(0, 20)
    codes = array(fdp, (fdp.ConsumeIntInRange(0, 10), d), dt, exact=True)
    rd = d if fdp.ConsumeIntInRange(0, 5) else fdp.ConsumeIntInRange(0, 20)
    ranges = array(fdp, (2, rd), np.float32, allow_exotic=False)
    try:
        out = quantlib.dequantize_embeddings(codes, precision, ranges)
    except (TypeError, ValueError):
        return
    r = np.asarray(ranges, np.float32)
    check(np.isfinite(r).all(), "dequantize accepted non-finite ranges")
    start = r[0]
    step = (r[1] - start) / np.float32(255)
    step = np.where(step == 0, np.float32(1), step).astype(np.float32)
    cn = as_np(codes).astype(np.float64) + (128 if precision == "int8" else 0)
    want = cn * step + start
    check(np.array_equal(out, want), "dequantize differs")


OPS = [op_quantize, op_search, op_search, op_pairwise, op_rescore, op_merge, op_calibration, op_dequantize]


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    quantlib.set_isa(fdp.PickValueInList(ISAS))
    # small inputs take the threaded split/merge paths too when asked
    tiny = fdp.ConsumeBool()
    QL_SEARCH._PARALLEL_MIN_WORK = 0 if tiny else ORIG_WORK
    QL_QUANT._PARALLEL_MIN_ELEMENTS = 0 if tiny else ORIG_ELEMS
    op = fdp.PickValueInList(OPS)
    try:
        op(fdp)
    except BaseException as exc:
        save_finding(data, exc)
        if isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, Bug):
            raise Bug(f"validation error escaped the harness (harness bug): {exc!r}") from exc
        raise




def random_mode(seconds: float, corpus: str) -> int:
    """Coverage-blind fuzzing without libFuzzer: mutate the corpus files (or
    random bytes) and call TestOneInput in a loop.  Used under the ASan build,
    where gcc's libasan steals libFuzzer's coverage hooks, so the corpus grown
    by coverage-guided runs is replayed and mutated instead."""
    import random
    import time

    seeds = []
    if corpus and os.path.isdir(corpus):
        for name in sorted(os.listdir(corpus)):
            with open(os.path.join(corpus, name), "rb") as f:
                seeds.append(f.read())
    rnd = random.Random(int(os.environ.get("QL_FUZZ_SEED", "0")) or None)
    end = time.monotonic() + seconds
    runs = 0
    for data in seeds:  # every corpus input once, unmodified
        TestOneInput(data)
        runs += 1
    while time.monotonic() < end:
        if seeds and rnd.random() < 0.9:
            data = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randint(1, 8)):
                op = rnd.randint(0, 3)
                if op == 0 and data:
                    data[rnd.randrange(len(data))] = rnd.randrange(256)
                elif op == 1:
                    data.insert(rnd.randint(0, len(data)), rnd.randrange(256))
                elif op == 2 and data:
                    del data[rnd.randrange(len(data))]
                else:
                    other = rnd.choice(seeds)
                    cut = rnd.randint(0, len(other))
                    data[rnd.randint(0, len(data)):] = other[cut:]
            data = bytes(data[:4096])
        else:
            data = rnd.randbytes(rnd.randint(1, 512))
        TestOneInput(data)
        runs += 1
    print(f"random mode: Done {runs} runs in {seconds:.0f} second(s)", flush=True)
    return 0


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--random":
        sys.exit(random_mode(float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
