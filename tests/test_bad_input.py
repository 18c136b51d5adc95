"""Bad-input audit: every public function x bad input -> the documented error
(type AND a message naming the argument) or the defined result.

The table is ``CASES`` below; docs/bad_input.md is rendered from it
(``python tests/test_bad_input.py > docs/bad_input.md``) and
``test_doc_is_in_sync`` checks that the two agree.  Rows for bugs reported
but not fixed yet are marked ``xfail(strict=True)``: the fix flips them.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import pytest


if __name__ == "__main__":  # rendering the doc from the source tree
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import quantlib  # noqa: E402

try:
    import torch
except Exception:  # pragma: no cover - torch is in the test extra
    torch = None

# ------------------------------------------------------------ fixtures
_rng = np.random.default_rng(2024)
X = _rng.standard_normal((6, 16)).astype(np.float32)          # float embeddings, d = 16
R = quantlib.calibration_ranges(X)                            # (2, 16) ranges
B = quantlib.quantize_embeddings(X, "binary")                 # (6, 2) int8 packed bits
U = quantlib.quantize_embeddings(X, "ubinary")                # (6, 2) uint8 packed bits
I8 = quantlib.quantize_embeddings(X, "int8", ranges=R)        # (6, 16) int8 codes
U8 = quantlib.quantize_embeddings(X, "uint8", ranges=R)       # (6, 16) uint8 codes
CAND = np.array([[0, 1, 2]] * 6, np.int64)                    # (6, 3) rescoring candidates
_TMP = tempfile.mkdtemp(prefix="quantlib-badinput-")
atexit.register(shutil.rmtree, _TMP, True)


def memmap_of(a: np.ndarray) -> np.memmap:
    path = os.path.join(_TMP, f"mm{len(os.listdir(_TMP))}.bin")
    mm = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    mm[...] = a
    mm.flush()
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)


def readonly(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def fortran(a: np.ndarray) -> np.ndarray:
    f = np.asfortranarray(a)
    assert not f.flags.c_contiguous or a.shape[0] == 1
    return f


def negstride(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[::-1])[::-1]  # same values, negative row stride


def colslice(a: np.ndarray) -> np.ndarray:
    big = np.zeros(a.shape[:-1] + (a.shape[-1] + 5,), a.dtype)
    big[..., : a.shape[-1]] = a
    return big[..., : a.shape[-1]]  # rows not contiguous


def with_nan(a):
    a = a.astype(np.float32).copy()
    a[1, 3] = np.nan
    return a


def with_inf(a, v=np.inf):
    a = a.astype(np.float32).copy()
    a[1, 3] = v
    return a


def tensor(a, **kw):
    if torch is None:
        pytest.skip("torch not installed")
    t = torch.from_numpy(np.ascontiguousarray(a))
    dtype = kw.pop("dtype", None)
    if dtype is not None:
        t = t.to(getattr(torch, dtype))
    if kw.pop("requires_grad", False):
        t = t.clone().requires_grad_(True)
    if kw.pop("meta", False):
        t = t.to("meta")
    return t


# ------------------------------------------------------------ the table
@dataclass
class Raises:
    exc: type
    names: str          # regex the message must match (the argument's name)


@dataclass
class Defined:
    what: str                                   # the documented result
    check: Callable[[Any], None]


@dataclass
class Case:
    func: str
    bad: str
    call: Callable[[], Any]
    expect: Any
    xfail: Optional[str] = None                 # reported bug, not fixed on this branch

    @property
    def id(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"{self.func}-{self.bad}")[:90]


def same_as(ref_call: Callable[[], Any], what: str) -> Defined:
    """The call must give exactly what ``ref_call`` (clean input) gives."""
    def check(out):
        ref = ref_call()
        if isinstance(ref, tuple):
            assert len(out) == len(ref)
            for o, r in zip(out, ref):
                assert np.asarray(o).dtype == np.asarray(r).dtype
                np.testing.assert_array_equal(o, r)
        else:
            assert np.asarray(out).dtype == np.asarray(ref).dtype
            np.testing.assert_array_equal(out, ref)
    return Defined(what, check)


def shapes(*want, dtypes=None, what: str) -> Defined:
    def check(out):
        outs = out if isinstance(out, tuple) else (out,)
        assert tuple(np.shape(o) for o in outs) == tuple(want), [np.shape(o) for o in outs]
        if dtypes:
            assert tuple(np.asarray(o).dtype for o in outs) == tuple(np.dtype(d) for d in dtypes)
    return Defined(what, check)


def anything(what: str) -> Defined:
    return Defined(what, lambda out: None)


CASES: list = []


def case(func, bad, call, expect, xfail=None):
    CASES.append(Case(func, bad, call, expect, xfail))


NOT_ARRAYS = [("None", None), ("a str", "abc"), ("a dict", {"a": 1}), ("object()", object()),
              ("list of str", [["a", "b"]])]
SAME = "same result as the C-contiguous array (no error)"

# ---- quantize_embeddings(embeddings, precision, ranges, calibration_embeddings, threads)
qe = quantlib.quantize_embeddings
F = "quantize_embeddings"
case(F, "NaN, int8 (self-calibrated)", lambda: qe(with_nan(X), "int8"), Raises(ValueError, "embeddings contains 1 NaN"))
case(F, "NaN, uint8 with ranges", lambda: qe(with_nan(X), "uint8", ranges=R), Raises(ValueError, "embeddings contains 1 NaN"))
case(F, "NaN, int8 calibration_embeddings", lambda: qe(X, "int8", calibration_embeddings=with_nan(X)),
     Raises(ValueError, "calibration embeddings contains 1 NaN"))
case(F, "NaN, binary", lambda: qe(with_nan(X), "binary"),
     Defined("bit 0 (NaN > 0 is false), as upstream", lambda o: (o.view(np.uint8)[1, 0] >> 4) & 1 == 0 or None))
case(F, "NaN, float32", lambda: qe(with_nan(X), "float32"), Defined("NaN kept (astype float32), as upstream",
     lambda o: np.isnan(o[1, 3]) or None))
case(F, "+inf, uint8 with ranges", lambda: qe(with_inf(X), "uint8", ranges=R),
     Defined("saturates to 255 exactly as upstream", lambda o: o[1, 3] == 255 or None))
case(F, "-inf, int8 with ranges", lambda: qe(with_inf(X, -np.inf), "int8", ranges=R),
     Defined("saturates to -128 exactly as upstream", lambda o: o[1, 3] == -128 or None))
case(F, "+inf, int8 self-calibrated", lambda: qe(with_inf(X), "int8"),
     Raises(ValueError, "embeddings contain infinite values"))
case(F, "+inf, binary", lambda: qe(with_inf(X), "binary"), Defined("bit 1 (inf > 0)", lambda o: None))
for dt in ("int8", "uint8"):
    case(F, f"dtype {dt}", lambda dt=dt: qe(I8.astype(dt), "binary"),
         Raises(Exception, "Embeddings to quantize must be float rather than int8 or uint8"))
for dt in ("complex64", "datetime64[s]", "U3", "object"):
    case(F, f"dtype {dt}", lambda dt=dt: qe(np.zeros((2, 4), dt), "binary"),
         Raises(TypeError, "embeddings must be a real numeric array"))
def upstream(*args, **kw):
    """sentence-transformers 6.2's own result (the reference quantlib mirrors)."""
    def call():
        st = pytest.importorskip("sentence_transformers.util.quantization")
        return st.quantize_embeddings(*args, **kw)
    return call


for dt in ("float16", "float64", "int16", "int32", "int64", "bool"):
    for p in ("ubinary", "uint8"):
        case(F, f"dtype {dt} (accepted), {p}", lambda dt=dt, p=p: qe(X.astype(dt), p, ranges=R if p == "uint8" else None),
             same_as(upstream(X.astype(dt), p, ranges=R if p == "uint8" else None), "accepted: byte-identical to upstream"))
case(F, "0-d array, binary", lambda: qe(np.float32(1.0), "binary"), Raises(ValueError, "embeddings must have at least one dimension"))
case(F, "0-d array, int8 with ranges", lambda: qe(np.float32(1.0), "int8", ranges=R[:, :1]),
     Raises(ValueError, "embeddings must have at least one dimension"))
case(F, "0-d array, float32", lambda: qe(np.float64(1.0), "float32"), shapes((), dtypes=["float32"], what="0-d float32 (astype, as upstream)"))
case(F, "3-D array, binary", lambda: qe(X.reshape(2, 3, 16), "binary"),
     shapes((2, 3, 2), dtypes=["int8"], what="packed along the last axis: (2, 3, 2)"))
case(F, "3-D array, int8 with ranges", lambda: qe(X.reshape(2, 3, 16), "int8", ranges=R),
     same_as(lambda: qe(X, "int8", ranges=R).reshape(2, 3, 16), "quantized per last-axis dimension"))
case(F, "3-D array with an empty axis, int8 self-calibrated", lambda: qe(np.ones((2, 0, 3), np.float32), "int8"),
     Raises(ValueError, "empty embeddings"))
case(F, "mismatched ranges (2, d+1)", lambda: qe(X, "int8", ranges=np.zeros((2, 17))), Raises(ValueError, r"ranges must have shape \(2, 16\)"))
case(F, "ranges 1-D", lambda: qe(X, "int8", ranges=np.zeros(16)), Raises(ValueError, r"ranges must have shape \(2, 16\)"))
case(F, "ranges NaN", lambda: qe(X, "int8", ranges=with_nan(np.vstack([R, R]))[:2]), Raises(ValueError, "ranges must be finite"))
case(F, "ranges dtype str", lambda: qe(X, "int8", ranges=np.array([["a"] * 16] * 2)), Raises(TypeError, "ranges must be a real numeric array"))
case(F, "ranges a list", lambda: qe(X, "int8", ranges=R.tolist()), same_as(lambda: qe(X, "int8", ranges=R),
     "accepted (upstream fails on list.astype)"))
case(F, "calibration_embeddings with 8 dims for d=16", lambda: qe(X, "int8", calibration_embeddings=X[:, :8]),
     Raises(ValueError, "calibration_embeddings have 8 dims but embeddings have 16"))
case(F, "empty calibration_embeddings", lambda: qe(X, "int8", calibration_embeddings=X[:0]),
     Raises(ValueError, "calibration_embeddings must contain at least one row"))
case(F, "calibration_embeddings a torch tensor", lambda: qe(X, "int8", calibration_embeddings=tensor(X)),
     Raises(TypeError, "calibration_embeddings must be a numpy array or a list"))
case(F, "single embedding, int8 self-calibrated", lambda: qe(X[:1], "int8"),
     Raises(ValueError, "Cannot compute int8 quantization ranges from a single embedding"))
case(F, "1-D embedding, uint8 self-calibrated", lambda: qe(X[0], "uint8"),
     Raises(ValueError, "Cannot compute uint8 quantization ranges from a single embedding"))
for p in ("float16", "INT8", None, ""):
    case(F, f"precision {p!r}", lambda p=p: qe(X, p), Raises(ValueError, "Precision .* is not supported"))
case(F, "empty (0, d)", lambda: qe(X[:0], "binary"), shapes((0, 2), dtypes=["int8"], what="(0, ceil(d/8)) int8, as upstream"))
case(F, "empty list", lambda: qe([], "int8"), Defined("[] (as upstream)", lambda o: o == [] or None))
for name, obj in NOT_ARRAYS:
    exp = Raises(TypeError, "embeddings must be a")
    case(F, f"not an array: {name}", lambda obj=obj: qe(obj, "binary"), exp)
case(F, "Fortran-ordered", lambda: qe(fortran(X), "int8", ranges=R), same_as(lambda: qe(X, "int8", ranges=R), SAME))
case(F, "negative stride", lambda: qe(negstride(X), "binary"), same_as(lambda: qe(X, "binary"), SAME))
case(F, "non-contiguous rows", lambda: qe(colslice(X), "uint8", ranges=R), same_as(lambda: qe(X, "uint8", ranges=R), SAME))
case(F, "read-only", lambda: qe(readonly(X), "int8", ranges=R), same_as(lambda: qe(X, "int8", ranges=R), SAME))
case(F, "memmap", lambda: qe(memmap_of(X), "ubinary"), same_as(lambda: qe(X, "ubinary"), SAME))
case(F, "torch bfloat16", lambda: qe(tensor(X, dtype="bfloat16"), "binary"),
     same_as(lambda: qe(tensor(X, dtype="bfloat16").float().numpy(), "binary"), "upcast to float32 first, as upstream"))
case(F, "torch requires_grad", lambda: qe(tensor(X, requires_grad=True), "int8", ranges=R),
     same_as(lambda: qe(X, "int8", ranges=R), "detached (upstream raises RuntimeError)"))
case(F, "torch on the meta device (no data)", lambda: qe(tensor(X, meta=True), "binary"),
     Raises(TypeError, "embeddings is a torch tensor on the 'meta' device"))
case(F, "threads=0", lambda: qe(X, "binary", threads=0), Raises(ValueError, "threads must be >= 1"))
case(F, "threads=True", lambda: qe(X, "binary", threads=True), Raises(TypeError, "threads must be an int"))
case(F, "threads=2.0", lambda: qe(X, "binary", threads=2.0), Raises(TypeError, "threads must be an int"))

# ---- calibration_ranges(embeddings, chunk_size, threads)
cr = quantlib.calibration_ranges
F = "calibration_ranges"
case(F, "NaN", lambda: cr(with_nan(X)), Raises(ValueError, "calibration embeddings contains 1 NaN"))
case(F, "+inf", lambda: cr(with_inf(X)), Defined("inf kept in the ranges (quantize_embeddings then refuses them)",
     lambda o: np.isinf(o[1, 3]) or None))
case(F, "dtype complex64", lambda: cr(X.astype(np.complex64)), Raises(TypeError, "embeddings must be a real numeric array"))
case(F, "dtype int8 (accepted)", lambda: cr(I8), same_as(lambda: np.vstack((I8.min(0), I8.max(0))).astype(np.float32),
     "min/max of the integer values"))
case(F, "0-d array", lambda: cr(np.float32(1)), Raises(ValueError, "embeddings must be 2-D"))
case(F, "1-D array", lambda: cr(X[0]), Raises(ValueError, "embeddings must be 2-D"))
case(F, "3-D array", lambda: cr(X.reshape(2, 3, 16)), Raises(ValueError, "embeddings must be 2-D"))
case(F, "empty (0, d)", lambda: cr(X[:0]), Raises(ValueError, "embeddings must contain at least two rows"))
case(F, "one row (min == max)", lambda: cr(X[:1]), Raises(ValueError, "embeddings must contain at least two rows to compute ranges, got 1"))
case(F, "chunk_size=0", lambda: cr(X, chunk_size=0), Raises(ValueError, "chunk_size must be a positive int"))
case(F, "chunk_size=True", lambda: cr(X, chunk_size=True), Raises(ValueError, "chunk_size must be a positive int"))
case(F, "chunk_size=2.0", lambda: cr(X, chunk_size=2.0), Raises(ValueError, "chunk_size must be a positive int"))
for name, obj in NOT_ARRAYS:
    case(F, f"not an array: {name}", lambda obj=obj: cr(obj), Raises(TypeError, "embeddings must be a real numeric array"))
case(F, "Fortran-ordered", lambda: cr(fortran(X)), same_as(lambda: cr(X), SAME))
case(F, "negative stride", lambda: cr(negstride(X)), same_as(lambda: cr(X), SAME))
case(F, "memmap, chunk_size=4", lambda: cr(memmap_of(X), chunk_size=4), same_as(lambda: cr(X), SAME))
case(F, "torch bfloat16", lambda: cr(tensor(X, dtype="bfloat16")),
     same_as(lambda: cr(tensor(X, dtype="bfloat16").float().numpy()), "upcast to float32"))
case(F, "torch on the meta device", lambda: cr(tensor(X, meta=True)), Raises(TypeError, "embeddings is a torch tensor on the 'meta' device"))

# ---- dequantize_embeddings(codes, precision, ranges)
dq = quantlib.dequantize_embeddings
F = "dequantize_embeddings"
case(F, "precision 'binary'", lambda: dq(I8, "binary", R), Raises(ValueError, "precision must be 'int8' or 'uint8'"))
case(F, "codes uint8 for precision int8", lambda: dq(U8, "int8", R), Raises(TypeError, "codes must have dtype int8"))
case(F, "codes float32", lambda: dq(X, "uint8", R), Raises(TypeError, "codes must have dtype uint8"))
case(F, "0-d codes", lambda: dq(np.int8(3), "int8", R), Raises(ValueError, "codes must have at least one dimension"))
case(F, "finite ranges whose (max - min) / 255 overflows float32", lambda: dq(U8, "uint8", np.stack(
    [np.full(U8.shape[1], 3e38, np.float32), np.full(U8.shape[1], -3e38, np.float32)])),
    Raises(ValueError, "ranges are too wide for float32"))
case(F, "mismatched ranges (2, 8) for d=16", lambda: dq(I8, "int8", R[:, :8]), Raises(ValueError, r"ranges must have shape \(2, 16\)"))
case(F, "ranges +inf", lambda: dq(I8, "int8", with_inf(R)), Raises(ValueError, "ranges must be finite"))
case(F, "codes None", lambda: dq(None, "int8", R), Raises(TypeError, "codes must have dtype int8"))
case(F, "3-D codes", lambda: dq(I8.reshape(2, 3, 16), "int8", R), same_as(lambda: dq(I8, "int8", R).reshape(2, 3, 16),
     "per last-axis dimension"))
case(F, "torch codes with requires_grad ranges", lambda: dq(tensor(I8), "int8", tensor(R, requires_grad=True)),
     same_as(lambda: dq(I8, "int8", R), "converted (detached)"))

# ---- search(queries, corpus, k, precision, threads)
se = quantlib.search
F = "search"
for prec, codes in (("int8", I8), ("uint8", U8)):
    case(F, f"queries float32 for precision {prec!r}", lambda p=prec, c=codes: se(X, c, precision=p),
         Raises(TypeError, f"queries must have dtype .* for precision='{prec}'.*quantize first"))
for prec, codes in (("binary", B), ("ubinary", U)):
    case(F, f"queries float32 for precision {prec!r}", lambda p=prec, c=codes: se(X, c, precision=p),
         same_as(lambda p=prec, c=codes: se(qe(X, p), c, precision=p), "quantized by sign, as Index.search does"))
    case(F, f"float32 queries of another dim for precision {prec!r}", lambda p=prec, c=codes: se(X[:, :7], c, precision=p),
         Raises(ValueError, "queries have 7 float dims, which pack to 1 bytes, but corpus has 2 bytes per code"))
case(F, "corpus uint8 for precision 'binary'", lambda: se(B, U, precision="binary"),
     Raises(TypeError, "queries must have dtype int8 for precision='binary', got uint8") if False else
     Raises(TypeError, "corpus must have dtype int8 for precision='binary', got uint8"))
for dt in ("int16", "int32", "bool", "complex64"):
    case(F, f"codes dtype {dt}, precision 'ubinary'", lambda dt=dt: se(U.astype(dt), U.astype(dt), precision="ubinary"),
         Raises(TypeError, "queries must have dtype uint8"))
case(F, "codes dtype float64, precision 'ubinary'", lambda: se(U.astype("float64"), U.astype("float64"), precision="ubinary"),
     Raises(TypeError, "corpus must have dtype uint8 for precision='ubinary', got float64"))  # float queries: by sign
case(F, "int8 corpus, precision omitted", lambda: se(B, B), Raises(ValueError, "precision is ambiguous for int8 corpus"))
case(F, "uint8 corpus, precision omitted", lambda: se(U, U), Raises(ValueError, "precision is ambiguous for uint8 corpus"))
case(F, "bool corpus, precision omitted", lambda: se(U.astype(bool), U.astype(bool)),
     Raises(TypeError, "corpus must be float32 embeddings or int8/uint8 codes"))
case(F, "int8 codes for precision 'float32'", lambda: se(I8, I8, precision="float32"), Raises(TypeError, "queries must be float embeddings"))
case(F, "precision 'hamming'", lambda: se(B, B, precision="hamming"), Raises(ValueError, "precision must be one of"))
case(F, "float64 / float16 embeddings", lambda: se(X.astype(np.float16), X.astype(np.float64), 2),
     shapes((6, 2), (6, 2), dtypes=["float32", "int64"], what="cast to float32, float32 scores"))
case(F, "NaN in float32 queries", lambda: se(with_nan(X), X), Raises(ValueError, "queries contain NaN or infinite"))
case(F, "+inf in float32 queries", lambda: se(with_inf(X), X), Raises(ValueError, "queries contain NaN or infinite"))
case(F, "NaN in the float32 corpus", lambda: se(X, with_nan(X), 2),
     Raises(ValueError, "corpus contains NaN or infinite values"))
case(F, "+inf in the float32 corpus", lambda: se(X, with_inf(X), 2),
     Raises(ValueError, "corpus contains NaN or infinite values"))
case(F, "finite float32 inputs whose inner products overflow", lambda: se(np.full((1, 16), 3e38, np.float32), -X, 2),
     Raises(ValueError, "float32 inner products overflowed"))
case(F, "0-d queries", lambda: se(np.int8(1), B, precision="binary"), Raises(ValueError, "queries must be 1-D"))
case(F, "3-D queries", lambda: se(B[None], B, precision="binary"), Raises(ValueError, "queries must be 1-D"))
case(F, "1-D corpus", lambda: se(B, B[0], precision="binary"), Raises(ValueError, "corpus must be 2-D"))
case(F, "3-D corpus", lambda: se(B, B[None], precision="binary"), Raises(ValueError, "corpus must be 2-D"))
case(F, "mismatched widths, binary (1 vs 2 bytes)", lambda: se(B[:, :1], B, precision="binary"),
     Raises(ValueError, r"queries have 1 bytes per code \(8 bits\) but corpus has 2 bytes per code \(16 bits\)"))
case(F, "mismatched widths, int8 (3 vs 16 dims)", lambda: se(I8[:, :3], I8, precision="int8"),
     Raises(ValueError, "queries have 3 dims but corpus has 16 dims"))
case(F, "mismatched widths, float32", lambda: se(X[:, :3], X), Raises(ValueError, "queries have 3 dims but corpus has 16 dims"))
case(F, "zero-width codes", lambda: se(B[:, :0], B[:, :0], precision="binary"), Raises(ValueError, "codes must have at least one byte"))
case(F, "int8 dims > 131071", lambda: se(np.zeros((1, 131072), np.int8), np.zeros((1, 131072), np.int8), precision="int8"),
     Raises(ValueError, "int8 dot products are exact in int32 up to 131071 dims"))
case(F, "uint8 dims > 33025", lambda: se(np.zeros((1, 33026), np.uint8), np.zeros((1, 33026), np.uint8), precision="uint8"),
     Raises(ValueError, "uint8 dot products are exact in int32 up to 33025 dims"))
for k in (0, -1):
    case(F, f"k={k}", lambda k=k: se(B, B, k, precision="binary"), Raises(ValueError, "k must be >= 1"))
for k in (True, 2.0, None, "3"):
    case(F, f"k={k!r}", lambda k=k: se(B, B, k, precision="binary"), Raises(TypeError, "k must be a positive int"))
case(F, "k=np.int64(2)", lambda: se(B, B, np.int64(2), precision="binary"), same_as(lambda: se(B, B, 2, precision="binary"),
     "accepted (any numbers.Integral)"))
case(F, "k > N", lambda: se(B, B, 100, precision="binary"), shapes((6, 6), (6, 6), dtypes=["int32", "int64"],
     what="N columns, never padding"))
case(F, "empty corpus (0, w)", lambda: se(B, B[:0], precision="binary"), shapes((6, 0), (6, 0), dtypes=["int32", "int64"],
     what="(Q, 0) arrays"))
case(F, "empty corpus, float32", lambda: se(X, X[:0]), shapes((6, 0), (6, 0), dtypes=["float32", "int64"], what="(Q, 0) arrays"))
case(F, "empty queries (0, w)", lambda: se(B[:0], B, 3, precision="binary"), shapes((0, 3), (0, 3), what="(0, min(k, N))"))
case(F, "empty queries, float32", lambda: se(X[:0], X, 3), shapes((0, 3), (0, 3), what="(0, min(k, N))"))
case(F, "1-D query", lambda: se(B[0], B, 2, precision="binary"), shapes((2,), (2,), what="1-D results"))
for lname, fn in (("Fortran-ordered", fortran), ("negative stride", negstride), ("non-contiguous rows", colslice),
                  ("read-only", readonly), ("memmap", memmap_of)):
    case(F, f"{lname} corpus", lambda fn=fn: se(B, fn(B), 3, precision="binary"),
         same_as(lambda: se(B, B, 3, precision="binary"), SAME))
    case(F, f"{lname} queries", lambda fn=fn: se(fn(I8), I8, 3, precision="int8"),
         same_as(lambda: se(I8, I8, 3, precision="int8"), SAME))
for name, obj in NOT_ARRAYS:
    case(F, f"queries not an array: {name}", lambda obj=obj: se(obj, X), Raises(TypeError, "queries must be"))
    case(F, f"corpus not an array: {name}", lambda obj=obj: se(X, obj), Raises(TypeError, "corpus must be"))
case(F, "torch bfloat16 queries", lambda: se(tensor(X, dtype="bfloat16"), X, 3),
     same_as(lambda: se(tensor(X, dtype="bfloat16").float().numpy(), X, 3), "upcast to float32"))
case(F, "torch requires_grad corpus", lambda: se(X, tensor(X, requires_grad=True), 3), same_as(lambda: se(X, X, 3), "detached"))
case(F, "torch int8 codes", lambda: se(tensor(B), tensor(B), 3, precision="binary"),
     same_as(lambda: se(B, B, 3, precision="binary"), "converted"))
case(F, "torch queries on the meta device", lambda: se(tensor(X, meta=True), X),
     Raises(TypeError, "queries"))
case(F, "threads=0", lambda: se(B, B, precision="binary", threads=0), Raises(ValueError, "threads must be >= 1"))
case(F, "threads=-1", lambda: se(B, B, precision="binary", threads=-1), Raises(ValueError, "threads must be >= 1"))
case(F, "threads=True", lambda: se(B, B, precision="binary", threads=True), Raises(TypeError, "threads must be an int"))
case(F, "threads=2.0", lambda: se(B, B, precision="binary", threads=2.0), Raises(TypeError, "threads must be an int"))

# ---- hamming_distance(a, b, threads) and int8_dot(a, b, threads)
hd = quantlib.hamming_distance
F = "hamming_distance"
case(F, "a float32", lambda: hd(X, B), Raises(TypeError, "a must be packed binary codes"))
case(F, "b int16", lambda: hd(B, B.astype(np.int16)), Raises(TypeError, "b must be packed binary codes"))
case(F, "a int8, b uint8 (binary vs ubinary)", lambda: hd(B, U), same_as(lambda: hd(U, U), "accepted: identical distances"))
case(F, "mismatched widths (1 vs 2 bytes)", lambda: hd(B[:, :1], B),
     Raises(ValueError, r"a have 1 bytes per code \(8 bits\) but b has 2 bytes per code \(16 bits\)"))
case(F, "0-d a", lambda: hd(np.int8(1), B), Raises(ValueError, "a must be 1-D"))
case(F, "3-D b", lambda: hd(B, B[None]), Raises(ValueError, "b must be 1-D"))
case(F, "empty a", lambda: hd(B[:0], B), shapes((0, 6), dtypes=["int32"], what="(0, nb) int32"))
case(F, "zero-width codes", lambda: hd(B[:, :0], B[:, :0]), shapes((6, 6), dtypes=["int32"],
     what="all-zero (6, 6) matrix (search raises instead; see report)"))
case(F, "1-D a and b", lambda: hd(B[0], B[1]), Defined("a scalar int32", lambda o: np.ndim(o) == 0 or None))
for lname, fn in (("Fortran-ordered", fortran), ("negative stride", negstride), ("memmap", memmap_of), ("read-only", readonly)):
    case(F, f"{lname} b", lambda fn=fn: hd(B, fn(B)), same_as(lambda: hd(B, B), SAME))
for name, obj in NOT_ARRAYS[:3]:
    case(F, f"a not an array: {name}", lambda obj=obj: hd(obj, B), Raises(TypeError, "a must be a numpy array"))
case(F, "threads=0", lambda: hd(B, B, threads=0), Raises(ValueError, "threads must be >= 1"))

idot = quantlib.int8_dot
F = "int8_dot"
case(F, "a int8, b uint8", lambda: idot(I8, U8), Raises(TypeError, "a and b must both be int8 or both uint8"))
case(F, "float32", lambda: idot(X, X), Raises(TypeError, "a and b must both be int8 or both uint8"))
case(F, "mismatched dims (2 vs 16)", lambda: idot(I8[:, :2], I8), Raises(ValueError, "a have 2 dims but b has 16 dims"))
case(F, "int8 dims > 131071", lambda: idot(np.zeros((1, 131072), np.int8), np.zeros((1, 131072), np.int8)),
     Raises(ValueError, "int8 dot products are exact in int32 up to 131071 dims"))
case(F, "0-d a", lambda: idot(np.int8(1), I8), Raises(ValueError, "a must be 1-D"))
case(F, "3-D a", lambda: idot(I8[None], I8), Raises(ValueError, "a must be 1-D"))
case(F, "empty b", lambda: idot(I8, I8[:0]), shapes((6, 0), dtypes=["int32"], what="(na, 0) int32"))
for lname, fn in (("Fortran-ordered", fortran), ("negative stride", negstride), ("memmap", memmap_of)):
    case(F, f"{lname} a", lambda fn=fn: idot(fn(U8), U8), same_as(lambda: idot(U8, U8), SAME))
case(F, "a None", lambda: idot(None, I8), Raises(TypeError, "a must be a numpy array"))

# ---- rescore(queries, codes, candidates, precision, ranges, k, threads)
rs = quantlib.rescore
F = "rescore"
case(F, "NaN in queries", lambda: rs(with_nan(X), B, CAND, precision="binary"), Raises(ValueError, "queries contain NaN or infinite"))
case(F, "-inf in queries", lambda: rs(with_inf(X, -np.inf), I8, CAND, precision="int8", ranges=R),
     Raises(ValueError, "queries contain NaN or infinite"))
case(F, "int8 queries", lambda: rs(I8, B, CAND, precision="binary"), Raises(TypeError, "queries must be float embeddings"))
case(F, "finite ranges whose (max - min) / 255 overflows float32", lambda: rs(X, I8, CAND, precision="int8", ranges=np.stack(
    [np.full(16, 3e38, np.float32), np.full(16, -3e38, np.float32)])), Raises(ValueError, "ranges are too wide for float32"))
case(F, "huge finite queries (float64 overflow)", lambda: rs(np.full((6, 16), 1e308), B, CAND, precision="binary"),
     Raises(ValueError, "queries are too large"))
case(F, "float32 codes", lambda: rs(X, X, CAND, precision="int8", ranges=R), Raises(TypeError, "codes must have dtype int8"))
case(F, "1-D codes", lambda: rs(X, B[0], CAND, precision="binary"), Raises(ValueError, "codes must be 2-D"))
case(F, "0-d queries", lambda: rs(np.float32(1), B, CAND, precision="binary"), Raises(ValueError, "queries must be 1-D"))
case(F, "precision None", lambda: rs(X, B, CAND, precision=None), Raises(ValueError, "precision must be one of"))
case(F, "precision 'float32'", lambda: rs(X, B, CAND, precision="float32"), Raises(ValueError, "precision must be one of"))
case(F, "packed codes of 2 bytes (16 bits) for 8-dim queries", lambda: rs(X[:, :8], B, CAND, precision="binary"),
     Raises(ValueError, r"codes have 2 bytes per row \(16 bits\) but queries have 8 dims, which pack to 1 bytes"))
case(F, "int8 codes of 16 dims for 8-dim queries", lambda: rs(X[:, :8], I8, CAND, precision="int8", ranges=R[:, :8]),
     Raises(ValueError, "codes have 16 dims but queries have 8"))
case(F, "ranges missing for int8", lambda: rs(X, I8, CAND, precision="int8"), Raises(ValueError, "ranges is required"))
case(F, "ranges (2, 3) for d=16", lambda: rs(X, I8, CAND, precision="int8", ranges=R[:, :3]),
     Raises(ValueError, r"ranges must have shape \(2, 16\)"))
case(F, "candidates out of range", lambda: rs(X, B, CAND + 10, precision="binary"),
     Raises(ValueError, r"candidates must be in \[0, 6\) or -1"))
case(F, "candidates -2", lambda: rs(X, B, CAND - 2, precision="binary"), Raises(ValueError, r"candidates must be in \[0, 6\) or -1"))
case(F, "candidates float", lambda: rs(X, B, CAND.astype(float), precision="binary"),
     Raises(TypeError, "candidates must be a 2-D integer array"))
case(F, "candidates bool", lambda: rs(X, B, CAND.astype(bool), precision="binary"),
     Raises(TypeError, "candidates must be a 2-D integer array"))
case(F, "candidates 3-D", lambda: rs(X, B, CAND[:, :, None], precision="binary"),
     Raises(ValueError, "candidates must be"))
case(F, "candidates rows != queries", lambda: rs(X, B, CAND[:5], precision="binary"),
     Raises(ValueError, "candidates has 5 rows but there are 6 queries"))
case(F, "candidates None", lambda: rs(X, B, None, precision="binary"), Raises(TypeError, "candidates must be a numpy array"))
case(F, "empty slots (-1)", lambda: rs(X, B, np.full((6, 2), -1), precision="binary"),
     Defined("score -inf, id -1, ranked last", lambda o: (np.isneginf(o[0]).all() and (o[1] == -1).all()) or None))
case(F, "empty corpus codes (all slots -1)", lambda: rs(X, B[:0], np.full((6, 2), -1), precision="binary"),
     shapes((6, 2), (6, 2), what="-inf / -1 everywhere"))
case(F, "no candidates (Q, 0)", lambda: rs(X, B, CAND[:, :0], precision="binary"), shapes((6, 0), (6, 0), what="(Q, 0)"))
case(F, "empty queries (0, d)", lambda: rs(X[:0], B, CAND[:0], precision="binary"), shapes((0, 3), (0, 3), what="(0, m)"))
case(F, "k=0", lambda: rs(X, B, CAND, precision="binary", k=0), Raises(ValueError, "k must be >= 1"))
case(F, "k=True", lambda: rs(X, B, CAND, precision="binary", k=True), Raises(TypeError, "k must be a positive int"))
case(F, "k > m", lambda: rs(X, B, CAND, precision="binary", k=10), shapes((6, 3), (6, 3), what="m columns"))
for lname, fn in (("Fortran-ordered", fortran), ("negative stride", negstride), ("memmap", memmap_of), ("read-only", readonly)):
    case(F, f"{lname} codes", lambda fn=fn: rs(X, fn(I8), CAND, precision="int8", ranges=R),
         same_as(lambda: rs(X, I8, CAND, precision="int8", ranges=R), SAME))
case(F, "torch bfloat16 queries", lambda: rs(tensor(X, dtype="bfloat16"), B, CAND, precision="binary"),
     same_as(lambda: rs(tensor(X, dtype="bfloat16").float().numpy(), B, CAND, precision="binary"), "upcast to float32"))

# ---- merge_topk(values, ids, k, descending)
mt = quantlib.merge_topk
F = "merge_topk"
V = np.array([[3, 1, 2, 1]], np.int32)
ID = np.array([[7, 5, 6, 4]], np.int64)
case(F, "shapes differ", lambda: mt(V, ID[:, :3], 2, descending=False), Raises(ValueError, "values and ids must be 2-D arrays of one shape"))
case(F, "1-D values", lambda: mt(V[0], ID[0], 2, descending=False), Raises(ValueError, "values and ids must be 2-D arrays"))
case(F, "k > m", lambda: mt(V, ID, 10, descending=False), shapes((1, 4), (1, 4), what="m columns"))
case(F, "no columns", lambda: mt(V[:, :0], ID[:, :0], 3, descending=True), shapes((1, 0), (1, 0), what="(Q, 0)"))
case(F, "k=0", lambda: mt(V, ID, 0, descending=False), Raises(ValueError, "k must be >= 1"))
case(F, "k=-1", lambda: mt(V, ID, -1, descending=False), Raises(ValueError, "k must be >= 1"))
case(F, "k=True", lambda: mt(V, ID, True, descending=False), Raises(TypeError, "k must be a positive int"))
case(F, "k=2.0", lambda: mt(V, ID, 2.0, descending=False), Raises(TypeError, "k must be a positive int"))
case(F, "uint8 values, descending", lambda: mt(np.array([[0, 5, 200]], np.uint8), np.arange(3)[None], 2, descending=True),
     Defined("[[200, 5]] / ids [[2, 1]]", lambda o: (o[1].tolist() == [[2, 1]] or
                                                     pytest.fail(f"got ids {o[1].tolist()}")) and None))
case(F, "values None", lambda: mt(None, ID, 2, descending=False), Raises(ValueError, "values and ids must be 2-D"))
case(F, "ids None", lambda: mt(V, None, 2, descending=False), Raises(TypeError, "ids must be an integer array"))

# ---- Index(dim, precision, ranges) and its methods
from quantlib import Index, RescorePipeline, load_index  # noqa: E402

def _ix(precision="ubinary", dim=16, ranges=None, rows=X):
    idx = Index(dim, precision, ranges)
    if rows is not None:
        idx.add(rows)
    return idx


def _saved(obj, name):
    path = os.path.join(_TMP, name)
    obj.save(path)
    return path


def _write(name, data: bytes):
    path = os.path.join(_TMP, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


F = "Index"
case(F, "dim=0", lambda: Index(0), Raises(ValueError, "dim must be >= 1"))
case(F, "dim=1.5", lambda: Index(1.5), Raises(TypeError, "dim must be a positive int"))
case(F, "dim='16'", lambda: Index("16"), Raises(TypeError, "dim must be a positive int"))
case(F, "precision 'float16'", lambda: Index(16, "float16"), Raises(ValueError, "precision must be one of"))
case(F, "precision None", lambda: Index(16, None), Raises(ValueError, "precision must be one of"))
case(F, "ranges for ubinary", lambda: Index(16, "ubinary", ranges=R), Raises(ValueError, "ranges only apply to int8/uint8"))
case(F, "ranges of another dim", lambda: Index(16, "int8", ranges=R[:, :8]), Raises(ValueError, r"ranges must have shape \(2, 16\)"))
case(F, "ranges with NaN", lambda: Index(16, "int8", ranges=np.full((2, 16), np.nan)), Raises(ValueError, "ranges must be finite"))
F = "Index.add"
case(F, "x None", lambda: _ix().add(None), Raises(TypeError, "x must be a numpy array"))
case(F, "x 3-D", lambda: _ix().add(X[None]), Raises(ValueError, "x must be 1-D .* or 2-D"))
case(F, "x complex64", lambda: _ix().add(X.astype(np.complex64)), Raises(TypeError, "x must be float embeddings or uint8 codes"))
case(F, "float x of 17 dims into a 20-dim binary index (same 3 packed bytes)",
     lambda: Index(20, "ubinary").add(np.ones((1, 17), np.float32)), Raises(ValueError, "x have 17 dims but the index has 20"))
case(F, "codes of another width", lambda: _ix().add(np.zeros((1, 3), np.uint8)),
     Raises(ValueError, "x have 3 bytes per vector but the index has 2"))
case(F, "float x, int8 index without ranges", lambda: _ix("int8", rows=None).add(X), Raises(ValueError, "no ranges, so float x"))
case(F, "NaN row, float32 index", lambda: _ix("float32", rows=None).add(with_nan(X)),
     Raises(ValueError, r"x contains NaN or infinite values \(first in row 1\)"))
case(F, "float64 beyond float32, float32 index", lambda: _ix("float32", rows=None).add(X.astype(np.float64) * 1e300),
     Raises(ValueError, "x contains values that overflow float32"))
case(F, "int8 codes, float32 index", lambda: _ix("float32", rows=None).add(I8), Raises(TypeError, "x must be float embeddings for a float32 index"))
case(F, "ids of another length", lambda: _ix(rows=None).add(X, ids=[1, 2]), Raises(ValueError, "ids must be a 1-D array of 6 ints"))
case(F, "ids 2-D", lambda: _ix(rows=None).add(X, ids=np.zeros((6, 1), np.int64)), Raises(ValueError, "ids must be a 1-D array"))
case(F, "ids float", lambda: _ix(rows=None).add(X, ids=np.arange(6) * 1.5), Raises(TypeError, "ids must be integers"))
case(F, "ids uint64 beyond int64", lambda: _ix(rows=None).add(X, ids=np.full(6, 2**63, np.uint64)), Raises(ValueError, "ids must fit in int64"))
case(F, "id -1 (the empty-slot marker)", lambda: _ix(rows=None).add(X, ids=[0, 1, 2, 3, 4, -1]),
     Raises(ValueError, "ids must not contain -1"))
case(F, "threads=0", lambda: _ix(rows=None).add(X, threads=0), Raises(ValueError, "threads must be >= 1"))
case(F, "memory-mapped index", lambda: load_index(_saved(_ix(), "ro.qlx")).add(X), Raises(ValueError, "memory-mapped read-only"))
case(F, "NaN float x, binary index", lambda: _ix(rows=None).add(with_nan(X)),
     Defined("bit 0 (NaN > 0 is false), as quantize_embeddings", lambda o: None))
F = "Index.search"
case(F, "k=0", lambda: _ix().search(X, 0), Raises(ValueError, "k must be >= 1"))
case(F, "k='3'", lambda: _ix().search(X, "3"), Raises(TypeError, "k must be a positive int"))
case(F, "k > len", lambda: _ix().search(X, 100), shapes((6, 6), (6, 6), what="len(index) columns"))
case(F, "float queries of another dim", lambda: _ix().search(X[:, :15], 1), Raises(ValueError, "queries have 15 dims but the index has 16"))
case(F, "codes of another width", lambda: _ix().search(np.zeros((1, 3), np.uint8), 1),
     Raises(ValueError, "queries have 3 bytes per vector but the index has 2"))
case(F, "NaN queries, float32 index", lambda: _ix("float32").search(with_nan(X), 1), Raises(ValueError, "queries contains NaN or infinite"))
case(F, "NaN queries, int8 index", lambda: _ix("int8", ranges=R).search(with_nan(X), 1), Raises(ValueError, "embeddings contains 1 NaN"))
case(F, "threads=-1", lambda: _ix().search(X, 1, threads=-1), Raises(ValueError, "threads must be >= 1"))
case(F, "empty index", lambda: _ix(rows=None).search(X, 3), shapes((6, 0), (6, 0), what="(Q, 0)"))
F = "Index.save"
case(F, "path None", lambda: _ix().save(None), Raises(TypeError, "expected str, bytes or os.PathLike"))
case(F, "directory does not exist", lambda: _ix().save(os.path.join(_TMP, "no", "x.qlx")),
     Raises(FileNotFoundError, r"while saving.*no/x\.qlx"))
case(F, "path is a directory", lambda: _ix().save(_TMP), Raises(ValueError, "exists and is a directory"))
if hasattr(os, "mkfifo"):
    def _fifo():
        p = os.path.join(_TMP, "fifo.qlx")
        if not os.path.exists(p):
            os.mkfifo(p)
        return p
    case(F, "path is a FIFO", lambda: _ix().save(_fifo()), Raises(ValueError, "exists and is a FIFO"))
    case("load_index", "a FIFO (would block)", lambda: load_index(_fifo()), Raises(quantlib.FormatError, "is a FIFO, not a regular file"))
F = "load_index"
case(F, "missing file", lambda: load_index(os.path.join(_TMP, "missing.qlx")), Raises(FileNotFoundError, "missing.qlx"))
case(F, "a text file", lambda: load_index(_write("t.txt", b"hello")), Raises(quantlib.FormatError, "shorter than the 48-byte quantlib header"))
case(F, "an empty file", lambda: load_index(_write("e.qlx", b"")), Raises(quantlib.FormatError, "file is 0 bytes"))
case(F, "not a quantlib file", lambda: load_index(_write("n.qlx", b"x" * 200)), Raises(quantlib.FormatError, "not a quantlib index file"))
case(F, "a directory", lambda: load_index(_TMP), Raises(quantlib.FormatError, "is a directory, not a regular file"))
case(F, "mmap='yes'", lambda: load_index(_saved(_ix(), "m.qlx"), mmap="yes"), Raises(TypeError, "mmap must be True or False"))
case(F, "verify=1", lambda: load_index(_saved(_ix(), "v.qlx"), verify=1), Raises(TypeError, "verify must be True or False"))
F = "RescorePipeline.build"
PP = os.path.join(_TMP, "pipe.qlx")
case(F, "int8 embeddings", lambda: RescorePipeline.build(I8, PP), Raises(TypeError, "embeddings must be float embeddings"))
case(F, "1-D embeddings", lambda: RescorePipeline.build(X[0], PP), Raises(ValueError, "embeddings must be 2-D"))
case(F, "NaN embeddings (self-calibrated)", lambda: RescorePipeline.build(with_nan(X), PP), Raises(ValueError, "contains 1 NaN"))
case(F, "chunk_size=0", lambda: RescorePipeline.build(X, PP, chunk_size=0), Raises(ValueError, "chunk_size must be >= 1"))
case(F, "rescore_precision='binary'", lambda: RescorePipeline.build(X, PP, rescore_precision="binary"),
     Raises(ValueError, "rescore_precision must be one of 'int8', 'uint8'"))
case(F, "ranges of another dim", lambda: RescorePipeline.build(X, PP, ranges=R[:, :3]), Raises(ValueError, r"ranges must have shape \(2, 16\)"))
case(F, "no rows, no ranges", lambda: RescorePipeline.build(X[:0], PP), Raises(ValueError, "cannot compute ranges from 0 embeddings"))
case(F, "one row, no ranges", lambda: RescorePipeline.build(X[:1], PP), Raises(ValueError, "single embedding"))
case(F, "ids of another length", lambda: RescorePipeline.build(X, PP, ids=[1, 2]), Raises(ValueError, "ids must be a 1-D array of 6 ints"))
case(F, "ids float", lambda: RescorePipeline.build(X, PP, ids=np.arange(6) * 0.5), Raises(TypeError, "ids must be integers"))
case(F, "id -1", lambda: RescorePipeline.build(X, PP, ids=[-1, 1, 2, 3, 4, 5]), Raises(ValueError, "ids must not contain -1"))
F = "RescorePipeline.search"
def _pipe():
    return RescorePipeline.build(X, os.path.join(_TMP, "ps.qlx"), ranges=R)
case(F, "k=0", lambda: _pipe().search(X, 0), Raises(ValueError, "k must be >= 1"))
case(F, "top_k=0 (the alias of k)", lambda: _pipe().search(X, top_k=0), Raises(ValueError, "top_k must be >= 1"))
case(F, "k and top_k disagree", lambda: _pipe().search(X, 3, top_k=4), Raises(TypeError, "pass k or its alias top_k, not both"))
case(F, "rescore_multiplier=0", lambda: _pipe().search(X, 2, 0), Raises(ValueError, "rescore_multiplier must be >= 1"))
case(F, "queries of another dim", lambda: _pipe().search(X[:, :8], 2), Raises(ValueError, "queries have 8 dims but the pipeline has 16"))
case(F, "int8 queries", lambda: _pipe().search(I8, 2), Raises(TypeError, "queries must be float embeddings"))
case(F, "NaN queries", lambda: _pipe().search(with_nan(X), 2), Raises(ValueError, "queries contain NaN or infinite"))
case(F, "+inf queries", lambda: _pipe().search(with_inf(X), 2), Raises(ValueError, "queries contain NaN or infinite"))
case(F, "threads=0", lambda: _pipe().search(X, 2, threads=0), Raises(ValueError, "threads must be >= 1"))
case(F, "top_k > len", lambda: _pipe().search(X, 50), shapes((6, 6), (6, 6), what="len(pipeline) columns"))
F = "RescorePipeline.load"
case(F, "an Index file", lambda: RescorePipeline.load(_saved(_ix(), "i.qlx")), Raises(quantlib.FormatError, "not a RescorePipeline file"))
case("RescorePipeline.save", "over its own mapped file", lambda: (lambda p: p.save(p.path))(_pipe()),
     Raises(ValueError, "cannot save a pipeline over its own memory-mapped file"))
# ---- semantic_search (quantlib's; the faiss/usearch drop-ins keep upstream's messages: tests/test_semantic_parity.py)
ss = quantlib.semantic_search
F = "semantic_search"
case(F, "no corpus", lambda: ss(X), Raises(ValueError, "Either corpus_embeddings or corpus_index"))
case(F, "corpus twice", lambda: ss(X, X, corpus_index=_ix("float32")), Raises(ValueError, "Only corpus_embeddings or corpus_index"))
case(F, "corpus_precision 'int4'", lambda: ss(X, X, corpus_precision="int4"), Raises(ValueError, "corpus_precision must be"))
case(F, "top_k=0", lambda: ss(X, X, top_k=0), Raises(ValueError, "top_k must be >= 1"))
case(F, "rescore_multiplier=0", lambda: ss(X, U, corpus_precision="ubinary", rescore_multiplier=0),
     Raises(ValueError, "rescore_multiplier must be >= 1"))
case(F, "query_embeddings a str", lambda: ss("abc", X), Raises(TypeError, "query_embeddings must be a numpy array"))
case(F, "query_embeddings 3-D", lambda: ss(X[None], X), Raises(ValueError, "query_embeddings must be 2-D"))
case(F, "queries of another dim", lambda: ss(X[:, :8], X), Raises(ValueError, "query_embeddings have 8 dims per vector but the index has 16"))
case(F, "NaN queries, float32 corpus", lambda: ss(with_nan(X), X), Raises(ValueError, "query_embeddings contains NaN"))
case(F, "a foreign corpus_index", lambda: ss(X, corpus_index=object()), Raises(TypeError, "takes a quantlib.Index as corpus_index"))
case(F, "corpus_index of another precision", lambda: ss(X, corpus_index=_ix("float32"), corpus_precision="ubinary"),
     Raises(ValueError, "corpus_index stores 'float32' codes but corpus_precision='ubinary'"))
case(F, "ranges of another dim", lambda: ss(X, X, corpus_precision="int8", ranges=R[:, :3]), Raises(ValueError, r"ranges must have shape \(2, 16\)"))
case(F, "threads=0", lambda: ss(X, X, threads=0), Raises(ValueError, "threads must be >= 1"))
case(F, "top_k > corpus", lambda: ss(X, X, top_k=50), Defined("6 hits per query", lambda o: all(len(r) == 6 for r in o[0]) or None))

# ---- kernel level selection
F = "set_isa"
case(F, "unknown level 'sse9'", lambda: quantlib.set_isa("sse9"), Raises(ValueError, "unknown ISA level 'sse9'"))
case(F, "level not usable here", lambda: quantlib.set_isa("neon" if "neon" not in quantlib.available_isas() else "avx512"),
     Raises(ValueError, "ISA level .* is not usable here"))
case(F, "name an int", lambda: quantlib.set_isa(3), Raises(TypeError, "name must be a str"))
case(F, "name None", lambda: quantlib.set_isa(None), Raises(TypeError, "name must be a str"))
case("get_isa", "an argument", lambda: quantlib.get_isa("avx2"), Raises(TypeError, "get_isa"))
case("available_isas", "an argument", lambda: quantlib.available_isas(1), Raises(TypeError, "available_isas"))
case("show_config", "print_out=0", lambda: quantlib.show_config(print_out=0), Defined("returns the dict, prints nothing",
     lambda o: isinstance(o, dict) or None))

# ---- quantlib.distributed: manifests, open_sharded, write_manifest, build_sharded, ShardedIndex.search
# (one block, appended last). Manifest rows need no cluster (shards written with Index.save +
# write_manifest; open_sharded fails in its client-side checks before it looks for a client); the
# search/build rows share one lazily started 1-worker in-process cluster.
def _qd():
    try:
        import quantlib.distributed as qd
    except ImportError as exc:  # no Dask (e.g. a copy of the tests against a minimal wheel): skip the row
        pytest.skip(f"quantlib.distributed is unavailable: {exc}")
    return qd


def _shards_dir(n_files=2, precision="int8"):
    """A fresh directory with int8 Index shards of 3 rows each and a manifest."""
    qd = _qd()
    d = tempfile.mkdtemp(dir=_TMP)
    paths = []
    for j in range(n_files):
        idx = quantlib.Index(16, precision, ranges=R if precision in ("int8", "uint8") else None)
        idx.add(X[3 * j: 3 * j + 3] if j < 2 else X[:3][::-1])
        idx.save(os.path.join(d, f"shard-{j:05d}.qlx"))
        paths.append(os.path.join(d, f"shard-{j:05d}.qlx"))
    qd.write_manifest(paths, d)
    return d


def _manifest(edit=None, raw=None, files=None):
    """Path of a manifest: the valid one edited by ``edit(doc)``, or raw bytes."""
    import json

    d = _shards_dir()
    mp = os.path.join(d, "manifest.json")
    if raw is not None:
        with open(mp, "wb") as f:
            f.write(raw)
    elif edit is not None:
        with open(mp) as f:
            doc = json.load(f)
        edit(doc)
        with open(mp, "w") as f:
            json.dump(doc, f)
    if files is not None:
        files(d)
    return mp


def _set(**kw):
    def edit(doc):
        for k, v in kw.items():
            if k.startswith("s0_"):
                doc["shards"][0][k[3:]] = v
            elif k.startswith("s1_"):
                doc["shards"][1][k[3:]] = v
            else:
                doc[k] = v
    return edit


def _swap_files(d):
    a, b = os.path.join(d, "shard-00000.qlx"), os.path.join(d, "shard-00001.qlx")
    os.replace(a, a + ".t")
    os.replace(b, a)
    os.replace(a + ".t", b)


def _replace_shard1(fn):
    def files(d):
        p = os.path.join(d, "shard-00001.qlx")
        os.remove(p)
        fn(p)
    return files


def _no_crc(doc):
    doc["version"] = [1, 0]
    for e in doc["shards"]:
        del e["crc32"]


_DIST: dict = {}


def _dist(name):
    """Lazily built sharded indexes on a shared 1-worker in-process cluster."""
    qd = _qd()
    if not _DIST:
        import logging

        import distributed

        for lg in ("distributed", "distributed.scheduler", "distributed.worker", "distributed.core"):
            logging.getLogger(lg).setLevel(logging.CRITICAL)
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                                           silence_logs=logging.CRITICAL)
        client = distributed.Client(cluster)
        _DIST["client"] = client
        _DIST["f32"] = qd.build_sharded(X, os.path.join(_TMP, "d-f32"), n_shards=2, precision="float32", client=client)
        _DIST["pipe"] = qd.build_sharded(X, os.path.join(_TMP, "d-pipe"), n_shards=2, rescore=True, client=client)

        def close():
            for k in ("f32", "pipe"):
                _DIST[k].close()
            client.close()
            cluster.close()
        atexit.register(close)
    return _DIST[name]


rm, osh, wm = (lambda *a, **k: _qd().read_manifest(*a, **k)), (lambda *a, **k: _qd().open_sharded(*a, **k)), \
    (lambda *a, **k: _qd().write_manifest(*a, **k))


class _Lazy(Raises):
    """Raises with the exception class resolved at run time (quantlib.distributed needs Dask)."""
    def __init__(self, attr, names):
        self._attr, self.names = attr, names

    @property
    def exc(self):
        try:
            import quantlib.distributed as qd
        except ImportError:  # pragma: no cover - no Dask: the rows are skipped anyway
            return Exception
        return getattr(qd, self._attr)


def ME(names):
    return _Lazy("ManifestError", names)


def SE(names):
    return _Lazy("ShardError", names)


def _scrubbed(call):
    """The messages name files under the random temporary directory: replace it so the rendered
    table is stable."""
    def run():
        try:
            return call()
        except (ValueError, TypeError, OSError) as exc:
            dirs: dict = {}
            msg = re.sub(re.escape(_TMP) + r"(/tmp[A-Za-z0-9_]+)?",
                         lambda mo: dirs.setdefault(mo.group(0), f"<tmp{len(dirs) + 1}>"), str(exc))
            if msg == str(exc):
                raise
            try:
                new = type(exc)(msg)
            except Exception:  # pragma: no cover - an exception type with another signature
                raise exc from None
            raise new from None
    return run


def dcase(func, bad, call, expect):
    scrubbed = _scrubbed(call)

    def guarded():
        _qd()  # skips the row without Dask
        return scrubbed()

    case(func, bad, guarded, expect)


F = "read_manifest"
dcase(F, "not JSON", lambda: rm(_manifest(raw=b"{not json")), ME("not a JSON manifest"))
dcase(F, "JSON nested 10^5 deep", lambda: rm(_manifest(raw=b"[" * 100000 + b"]" * 100000)), ME("nested too deeply"))
dcase(F, "an integer of 5000 digits", lambda: rm(_manifest(raw=b'{"dim": 1' + b"0" * 5000 + b"}")),
     ME("not a JSON manifest"))
dcase(F, "format 'other'", lambda: rm(_manifest(_set(format="other"))), ME("not a quantlib sharded-index manifest"))
dcase(F, "version [2, 0]", lambda: rm(_manifest(_set(version=[2, 0]))), ME(r"manifest version \[2, 0\] is not supported"))
dcase(F, "version 'x'", lambda: rm(_manifest(_set(version="x"))), ME("manifest version 'x' is not supported"))
dcase(F, "kind 'forest'", lambda: rm(_manifest(_set(kind="forest"))), ME("kind must be 'index' or 'pipeline'"))
dcase(F, "precision 'int4'", lambda: rm(_manifest(_set(precision="int4"))), ME("precision must be one of"))
dcase(F, "dim '16' (a str)", lambda: rm(_manifest(_set(dim="16"))), ME("'dim' has the wrong type .*expected int"))
dcase(F, "dim 0", lambda: rm(_manifest(_set(dim=0))), ME(r"bad dim 0 \(must be in \[1,"))
dcase(F, "has_ids 1 (not a bool)", lambda: rm(_manifest(_set(has_ids=1))), ME("'has_ids' has the wrong type"))
dcase(F, "count missing", lambda: rm(_manifest(lambda d: d.pop("count"))), ME("missing key 'count'"))
dcase(F, "count != sum of the shards", lambda: rm(_manifest(_set(count=7))), ME("shards hold 6 rows but the manifest says count 7"))
dcase(F, "ranges NaN", lambda: rm(_manifest(raw=None, edit=_set(ranges=[[float("nan")] * 16] * 2))),
     ME("ranges must be a finite 2 x 16 list"))
dcase(F, "ranges overflow float32 (1e39)", lambda: rm(_manifest(_set(ranges=[[1e39] * 16] * 2))),
     ME(r"ranges must be a finite 2 x 16 list \(finite in float32\)"))
dcase(F, "ranges of shape (2, 3)", lambda: rm(_manifest(_set(ranges=[[0.0] * 3] * 2))), ME(r"got shape \(2, 3\)"))
dcase(F, "shards []", lambda: rm(_manifest(_set(shards=[]))), ME("lists no shards"))
dcase(F, "shard entry a str", lambda: rm(_manifest(_set(shards=["shard-00000.qlx"]))), ME("shard 0: entry must be an object"))
dcase(F, "shard offset not the running sum", lambda: rm(_manifest(_set(s1_offset=2))),
     ME("shard 1: offset 2 is not the sum of the previous shards' counts"))
dcase(F, "shard count -1", lambda: rm(_manifest(_set(s0_count=-1))), ME("count and bytes must be >= 0"))
dcase(F, "shard crc32 'abc'", lambda: rm(_manifest(_set(s0_crc32="abc"))), ME(r"'crc32' must be an int in \[0, 2\*\*32\)"))
dcase(F, "shard crc32 2**32", lambda: rm(_manifest(_set(s0_crc32=2 ** 32))), ME(r"'crc32' must be an int in \[0, 2\*\*32\)"))
dcase(F, "shard path '../x.qlx'", lambda: rm(_manifest(_set(s0_path="../x.qlx"))),
     ME("path '../x.qlx' is outside the manifest directory"))
dcase(F, "shard path '/etc/passwd'", lambda: rm(_manifest(_set(s0_path="/etc/passwd"))),
     ME("path '/etc/passwd' is outside the manifest directory"))
dcase(F, "shard path ''", lambda: rm(_manifest(_set(s0_path=""))), ME("'path' is empty"))
dcase(F, "shard path with NUL", lambda: rm(_manifest(_set(s0_path="a\0b"))), ME("contains a NUL character"))
dcase(F, "shard path a lone surrogate", lambda: rm(_manifest(_set(s0_path="\ud800"))), ME("cannot be encoded"))
dcase(F, "the same shard path twice", lambda: rm(_manifest(_set(s1_path="./shard-00000.qlx"))),
     ME("shard 1: './shard-00000.qlx' is the same file as shard 0"))
dcase(F, "v1.0 manifest without crc32", lambda: rm(_manifest(_no_crc)),
     Defined("read (crc32 None); open_sharded refuses it", lambda m: all(s.crc32 is None for s in m.shards) or None))
dcase(F, "manifest is a FIFO", lambda: rm(_manifest(files=lambda d: (os.remove(os.path.join(d, "manifest.json")),
                                                                    os.mkfifo(os.path.join(d, "manifest.json"))))),
     ME("is a FIFO, not a regular file"))
dcase(F, "no manifest", lambda: rm(os.path.join(_TMP, "nowhere")), Raises(FileNotFoundError, "no sharded-index manifest"))

F = "open_sharded"
dcase(F, "two equal-size shards swapped", lambda: osh(_manifest(files=_swap_files)),
     ME(r"shard 0 .*content checksum 0x[0-9a-f]{8} but the manifest records 0x[0-9a-f]{8}: the file was replaced or rebuilt"))
dcase(F, "shard rebuilt from other rows", lambda: osh(_manifest(files=_replace_shard1(
    lambda p: (lambda i: (i.add(X[:3]), i.save(p)))(quantlib.Index(16, "int8", ranges=R))))),
     ME("shard 1 .*content checksum"))
dcase(F, "v1.0 manifest without crc32", lambda: osh(_manifest(_no_crc)),
     ME(r"records no content checksum .*regenerate the manifest: .*write_manifest\(\[s.path for s in read_manifest"))
dcase(F, "shard missing", lambda: osh(_manifest(files=lambda d: os.remove(os.path.join(d, "shard-00001.qlx")))),
     ME(r"shard 1 \(.*shard-00001.qlx\): file is missing"))
dcase(F, "shard truncated", lambda: osh(_manifest(files=lambda d: os.truncate(os.path.join(d, "shard-00001.qlx"), 100))),
     ME("shard 1 .*file has 100 bytes but the manifest records"))
dcase(F, "shard a FIFO", lambda: osh(_manifest(files=_replace_shard1(os.mkfifo))), ME("shard 1 .*is a FIFO, not a regular file"))
dcase(F, "shard a directory", lambda: osh(_manifest(files=_replace_shard1(os.mkdir))), ME("shard 1 .*is a directory"))
dcase(F, "shard a symlink to /dev/zero", lambda: osh(_manifest(files=_replace_shard1(lambda p: os.symlink("/dev/zero", p)))),
     ME("shard 1 .*resolves to /dev/zero, outside the manifest directory"))
dcase(F, "shard a symlink leaving the directory",
     lambda: osh(_manifest(files=_replace_shard1(lambda p: os.symlink(os.path.join(_shards_dir(), "shard-00001.qlx"), p)))),
     ME("shard 1 .*outside the manifest directory .*symlink"))
dcase(F, "shard a hard link to another shard",
     lambda: osh(_manifest(files=_replace_shard1(lambda p: os.link(os.path.join(os.path.dirname(p), "shard-00000.qlx"), p)))),
     ME("shard 1 .*is the same file as shard 0"))
dcase(F, "precision differs from the file", lambda: osh(_manifest(_set(precision="uint8"))),
     ME("shard 0 .*precision 'int8' but the manifest says 'uint8'"))
dcase(F, "has_ids differs from the file", lambda: osh(_manifest(_set(has_ids=True))), ME("shard 0 .*has no ids"))
dcase(F, "check_files='yes'", lambda: osh(_manifest(), check_files="yes"), Raises(TypeError, "check_files must be a bool"))
dcase(F, "timeout=0", lambda: osh(_manifest(), timeout=0), Raises(ValueError, "timeout must be a positive number"))

def _two_precisions():
    d = _shards_dir()
    ub = quantlib.Index(16, "ubinary")
    ub.add(U)
    ub.save(os.path.join(d, "ub.qlx"))
    return wm([os.path.join(d, "shard-00000.qlx"), os.path.join(d, "ub.qlx")], d)


F = "write_manifest"
dcase(F, "shard outside the manifest directory",
     lambda: wm([os.path.join(_shards_dir(), "shard-00000.qlx")], os.path.join(_shards_dir(), "manifest.json")),
     ME("shard 0 .*is not inside the manifest directory"))
dcase(F, "the same shard twice", lambda: (lambda d: wm([os.path.join(d, "shard-00000.qlx")] * 2, d))(_shards_dir()),
     ME("shard 1 .*is the same file as shard 0"))
dcase(F, "shards of two precisions", lambda: _two_precisions(), ME("shard 1 .*precision 'ubinary' but the manifest says 'int8'"))
dcase(F, "shard_paths []", lambda: wm([], _TMP), Raises(ValueError, "shard_paths must be a non-empty sequence"))
dcase(F, "shard_paths a str", lambda: wm("a.qlx", _TMP), Raises(ValueError, "shard_paths must be a non-empty sequence"))
dcase(F, "shard_paths [3]", lambda: wm([3], _TMP), Raises(TypeError, r"shard_paths\[0\] must be a path"))

F = "ShardedIndex.search"
Q = X[:2].astype(np.float64)
dcase(F, "NaN queries (float32 shards)", lambda: _dist("f32").search(with_nan(Q), 3),
     Raises(ValueError, r"queries contains? NaN or infinite values \(first (at index \(1, 3\)|in row 1)"))
dcase(F, "+inf queries (float32 shards)", lambda: _dist("f32").search(with_inf(Q), 3),
     Raises(ValueError, "queries contains? NaN or infinite values"))
dcase(F, "float64 1e300 queries (float32 shards)", lambda: _dist("f32").search(np.where(np.arange(16) == 3, 1e300, Q), 3),
     Raises(ValueError, "queries contains? (finite values too large for|values that overflow) float32"))
dcase(F, "NaN queries (pipeline shards)", lambda: _dist("pipe").search(with_nan(Q), 3),
     Raises(ValueError, "queries contain NaN or infinite values"))
dcase(F, "int8 queries (pipeline shards)", lambda: _dist("pipe").search(I8, 3),
     Raises(TypeError, "queries must be float embeddings, got dtype int8"))
dcase(F, "queries of 15 dims", lambda: _dist("pipe").search(X[:, :15], 3),
     Raises(ValueError, "queries have 15 dims but the sharded pipeline has 16"))
dcase(F, "k=0", lambda: _dist("f32").search(Q, 0), Raises(ValueError, "k must be >= 1"))
dcase(F, "k=True", lambda: _dist("f32").search(Q, True), Raises(TypeError, "k must be a positive int"))
dcase(F, "k > N", lambda: _dist("f32").search(Q, 100), shapes((2, 6), (2, 6), what="min(k, N) columns"))
dcase(F, "threads=0", lambda: _dist("f32").search(Q, 3, threads=0), Raises(ValueError, "threads must be >= 1"))
dcase(F, "retries=-1", lambda: _dist("f32").search(Q, 3, retries=-1), Raises(ValueError, "retries must be an int >= 0, got -1"))
dcase(F, "retries='1'", lambda: _dist("f32").search(Q, 3, retries="1"), Raises(TypeError, "retries must be an int >= 0, got str"))
dcase(F, "timeout=0", lambda: _dist("f32").search(Q, 3, timeout=0), Raises(ValueError, "timeout must be a positive number"))
dcase(F, "timeout='5s'", lambda: _dist("f32").search(Q, 3, timeout="5s"),
     Raises(TypeError, "timeout must be a number of seconds or None, got str"))
dcase(F, "allow_partial='yes'", lambda: _dist("f32").search(Q, 3, allow_partial="yes"), Raises(TypeError, "allow_partial must be a bool"))
dcase(F, "stats=[]", lambda: _dist("f32").search(Q, 3, stats=[]), Raises(TypeError, "stats must be a dict"))
dcase(F, "rescore_multiplier (not applicable: index shards)", lambda: _dist("f32").search(Q, 3, rescore_multiplier=2),
     Raises(ValueError, "rescore_multiplier only applies to pipeline"))
dcase(F, "rescore_mode (not applicable: index shards)", lambda: _dist("f32").search(Q, 3, rescore_mode="local"),
     Raises(ValueError, "rescore_mode only applies to pipeline"))
dcase(F, "rescore_mode='fast'", lambda: _dist("pipe").search(Q, 3, rescore_mode="fast"),
     Raises(ValueError, "rescore_mode must be 'exact' or 'local'"))
dcase(F, "rescore_multiplier=0", lambda: _dist("pipe").search(Q, 3, rescore_multiplier=0),
     Raises(ValueError, "rescore_multiplier must be >= 1"))

F = "build_sharded"
bs = (lambda *a, **k: _qd().build_sharded(*a, **k))
dcase(F, "timeout=0", lambda: bs(X, tempfile.mkdtemp(dir=_TMP), timeout=0), Raises(ValueError, "timeout must be a positive number"))
dcase(F, "timeout=NaN", lambda: bs(X, tempfile.mkdtemp(dir=_TMP), timeout=float("nan")),
     Raises(ValueError, "timeout must be a positive number"))
dcase(F, "timeout='1h'", lambda: bs(X, tempfile.mkdtemp(dir=_TMP), timeout="1h"), Raises(TypeError, "timeout must be a number"))
dcase(F, "retries=-1", lambda: bs(X, tempfile.mkdtemp(dir=_TMP), retries=-1), Raises(ValueError, "retries must be an int >= 0"))
dcase(F, "retries=1.0", lambda: bs(X, tempfile.mkdtemp(dir=_TMP), retries=1.0), Raises(TypeError, "retries must be an int >= 0, got float"))
dcase(F, "n_shards=0", lambda: bs(X, tempfile.mkdtemp(dir=_TMP), n_shards=0, client=_dist("client")),
     Raises(ValueError, "n_shards must be >= 1"))
dcase(F, "shard_sizes not summing to N", lambda: bs(X, tempfile.mkdtemp(dir=_TMP), shard_sizes=[2, 2], client=_dist("client")),
     Raises(ValueError, "shard_sizes must sum to the 6 rows of data, got 4"))
dcase(F, "client a str", lambda: bs(X, tempfile.mkdtemp(dir=_TMP), client="tcp://x"),
     Raises(TypeError, "client must be a distributed.Client"))
dcase(F, "NaN data, int8", lambda: bs(with_nan(X), tempfile.mkdtemp(dir=_TMP), precision="int8", client=_dist("client")),
     Raises(ValueError, r"data rows \[0, 6\).*NaN"))
dcase(F, "rescore=True with int8 codes", lambda: bs(I8, tempfile.mkdtemp(dir=_TMP), rescore=True, client=_dist("client")),
     Raises(TypeError, "data must be float embeddings for rescore=True"))


# ------------------------------------------------------------ the tests
def _run(c: Case):
    prev = quantlib.get_isa()
    try:
        return c.call()
    finally:
        quantlib.set_isa(prev)


@pytest.mark.parametrize("c", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)]
                                            if c.xfail else []) for c in CASES])
def test_bad_input(c: Case):
    if isinstance(c.expect, Raises):
        with pytest.raises(c.expect.exc) as info:
            _run(c)
        if c.expect.exc is Exception:  # the upstream-compatible plain Exception, exactly
            assert type(info.value) is Exception
        msg = str(info.value)
        assert re.search(c.expect.names, msg), f"message does not name the argument: {msg!r}"
    else:
        out = _run(c)
        c.expect.check(out)


def render() -> str:
    """docs/bad_input.md, from CASES and the messages the code gives now."""
    lines = [
        "# Bad input: what every public function does with it",
        "",
        "Generated from `tests/test_bad_input.py` (`python tests/test_bad_input.py > docs/bad_input.md`);",
        "each row is one test case, which checks the exception type **and** that the message names the",
        "argument (or the defined result). Rows marked **open bug** are reported and tested as strict",
        "xfails until fixed. Widths of packed binary codes are given in bytes *and* bits; int8/uint8 codes",
        "and float embeddings in dims.",
        "",
        f"{len(CASES)} rows.",
        "",
        "| function | bad input | result |",
        "|---|---|---|",
    ]
    for c in CASES:
        if isinstance(c.expect, Raises):
            try:
                _run(c)
                res = "(no error raised)"
            except BaseException as exc:  # noqa: BLE001 - we document whatever happens
                msg = str(exc).replace(_TMP, "<tmp>").replace("|", "\\|").replace("\n", " ")
                if c.func == "set_isa":  # the level lists depend on the machine
                    msg = re.sub(r"\[[^\]]*\]", "[...]", msg)
                if len(msg) > 160:
                    msg = msg[:157] + "..."
                res = f"`{type(exc).__name__}`: {msg}"
        else:
            res = c.expect.what
        if c.xfail:
            res = f"**open bug** ({c.xfail}); wanted `{getattr(c.expect, 'exc', type(None)).__name__}` - now: {res}" \
                if isinstance(c.expect, Raises) else f"**open bug** ({c.xfail}); wanted: {res}"
        lines.append(f"| `{c.func}` | {c.bad} | {res} |")
    return "\n".join(lines) + "\n"


def test_doc_is_in_sync():
    if torch is None:
        pytest.skip("the table is rendered with torch installed")
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "bad_input.md")
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    assert doc == render(), "docs/bad_input.md is stale: python tests/test_bad_input.py > docs/bad_input.md"


# ------------------------------------------------------- regression tests
def test_nd_self_calibration_of_empty_input_is_valueerror():
    # fuzz finding: (2, 0, d) input raised IndexError (as upstream does)
    for shape in [(2, 0, 3), (0, 2, 3)]:
        with pytest.raises(ValueError, match="empty embeddings"):
            quantlib.quantize_embeddings(np.ones(shape, np.float32), "int8")
    out = quantlib.quantize_embeddings(np.ones((2, 3, 0), np.float32), "int8")
    assert out.shape == (2, 3, 0) and out.dtype == np.int8


def test_torch_tensor_arguments_are_converted_or_refused_clearly():
    torch = pytest.importorskip("torch")
    # fuzz finding: requires_grad tensors as codes / ranges raised RuntimeError
    r = torch.tensor([[0.0, 0.0], [1.0, 2.0]], requires_grad=True)
    codes = torch.tensor([[1, 2]], dtype=torch.int8)
    want = quantlib.dequantize_embeddings(codes.numpy(), "int8", r.detach().numpy())
    np.testing.assert_array_equal(quantlib.dequantize_embeddings(codes, "int8", r), want)
    x = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(quantlib.quantize_embeddings(x, "uint8", ranges=r),
                                  quantlib.quantize_embeddings(x, "uint8", ranges=r.detach().numpy()))
    # audit finding: a tensor with no host copy raised NotImplementedError
    meta = torch.empty(3, 4, device="meta")
    for call in (lambda: quantlib.quantize_embeddings(meta, "binary"),
                 lambda: quantlib.calibration_ranges(meta)):
        with pytest.raises(TypeError, match="embeddings.*meta"):
            call()
    with pytest.raises(TypeError, match="ranges.*meta"):
        quantlib.quantize_embeddings(x, "uint8", ranges=torch.empty(2, 2, device="meta"))


def test_calibration_errors_name_the_argument_they_come_from():
    # audit finding: errors said "ranges ..." or numpy's "zero-size array ..."
    x = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="calibration_embeddings have 8 dims but embeddings have 16"):
        quantlib.quantize_embeddings(x, "int8", calibration_embeddings=x[:, :8])
    with pytest.raises(ValueError, match="calibration_embeddings must contain at least one row"):
        quantlib.quantize_embeddings(x, "int8", calibration_embeddings=x[:0])
    bad = np.vstack([x, np.full(16, np.inf, np.float32)])
    with pytest.raises(ValueError, match="calibration_embeddings contain infinite values"):
        quantlib.quantize_embeddings(x, "int8", calibration_embeddings=bad)
    with pytest.raises(ValueError, match="embeddings contain infinite values"):
        quantlib.quantize_embeddings(bad, "uint8")
    # audit finding: 0-d codes raised IndexError
    with pytest.raises(ValueError, match="codes must have at least one dimension"):
        quantlib.dequantize_embeddings(np.int8(3), "int8", quantlib.calibration_ranges(x))



def test_core_binding_rejects_inconsistent_buffers():
    # ASan finding: the private binding trusted its buffer shapes, so a too-small
    # output (or a narrower corpus / out-of-range rescoring id) meant heap
    # corruption. Now an O(1) check (O(nq*m) for ids) raises ValueError.
    from quantlib import _core

    q = np.zeros((4, 8), np.uint8)
    c = np.zeros((100, 8), np.uint8)
    with pytest.raises(ValueError, match="out_dist / out_ids"):
        _core.hamming_topk(q, c, 10, 0, np.empty((1, 1), np.int32), np.empty((1, 1), np.int64))
    with pytest.raises(ValueError, match="out_score / out_ids"):
        _core.dot_topk(q, c, True, 10, 0, np.empty((4, 5), np.int32), np.empty((4, 5), np.int64))
    with pytest.raises(ValueError, match="same width"):
        _core.hamming_topk(q, np.zeros((100, 4), np.uint8), 3, 0, np.empty((4, 3), np.int32), np.empty((4, 3), np.int64))
    with pytest.raises(ValueError, match="same width"):
        _core.hamming_matrix(q, np.zeros((100, 4), np.uint8), np.empty((4, 100), np.int32))
    with pytest.raises(ValueError, match="out must be"):
        _core.dot_matrix(q, c, False, np.empty((4, 10), np.int32))
    with pytest.raises(ValueError, match="out must be"):
        _core.pack_sign_f32(np.zeros((3, 17), np.float32), np.empty((3, 2), np.uint8), 0)
    with pytest.raises(ValueError, match="start/step"):
        _core.quantize_f32(np.zeros((3, 5), np.float32), np.zeros(4, np.float32), np.ones(5, np.float32),
                           np.empty((3, 5), np.uint8), 0)
    with pytest.raises(ValueError, match="mn/mx"):
        _core.minmax_f64(np.zeros((3, 5)), np.zeros(4), np.zeros(5))
    ids = np.array([[0, 100]], np.int64)
    with pytest.raises(ValueError, match="candidate id 100 out of range"):
        _core.rescore_codes(np.zeros((1, 8)), c, True, ids, np.empty((1, 2)))
    with pytest.raises(ValueError, match="candidate id 100 out of range"):
        _core.rescore_bits(np.zeros((1, 64)), c, 0, ids, np.empty((1, 2)))
    with pytest.raises(ValueError, match="ceil"):
        _core.rescore_bits(np.zeros((1, 65)), c, 0, ids[:, :1], np.empty((1, 1)))


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)
    sys.stdout.write(render())
