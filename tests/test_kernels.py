"""Every C kernel, on every ISA level this CPU has, equals the numpy oracle
exactly (float rescoring: identical across levels, close to float64 numpy)."""
import numpy as np
import pytest

import quantlib
from helpers import use_isa
from quantlib import _core

import reference as ref

DIMS = [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 257,
        384, 511, 512, 513, 1000, 1024, 1100]
NBYTES = list(range(1, 131)) + [16, 32, 64, 128, 256]


def _floats(rng, n, d, dtype=np.float32):
    x = rng.standard_normal((n, d)).astype(dtype)
    if n and d:
        x.flat[:: max(1, x.size // 7)] = 0.0  # exact zeros: not > 0
    return x


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("n", [0, 1, 5, 67])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pack_sign(isa, rng, n, d, dtype):
    x = _floats(rng, n, d, dtype)
    for mask in (0, 0x80):
        out = np.empty((n, (d + 7) // 8), np.uint8)
        (_core.pack_sign_f32 if dtype == np.float32 else _core.pack_sign_f64)(x, out, mask)
        np.testing.assert_array_equal(out, ref.pack_sign(x, mask))


def test_pack_sign_specials(isa):
    v = np.array([[0.0, -0.0, np.nan, -np.inf, np.inf, 1e-45, -1e-45, 1.0, 2.0]], np.float32)
    out = np.empty((1, 2), np.uint8)
    _core.pack_sign_f32(v, out, 0)
    np.testing.assert_array_equal(out, ref.pack_sign(v))


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("n", [0, 1, 3, 65])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantize(isa, rng, n, d, dtype):
    calib = rng.standard_normal((50, d)).astype(dtype)
    x = rng.standard_normal((n, d)).astype(dtype) * 1.3  # some values out of range
    if n and d:
        x[0, 0] = calib[:, 0].max()  # the calibration max maps to 254
        x.flat[-1] = np.inf
    ranges = np.vstack((calib.min(0), calib.max(0))).astype(np.float32)
    if d > 3:
        ranges[:, 3] = 0.5  # zero-width range: step 1
    starts = ranges[0]
    steps = (ranges[1] - starts) / np.float32(255)
    steps = np.where(steps == 0, np.float32(1), steps).astype(np.float32)
    for signed in (False, True):
        out = np.empty((n, d), np.uint8)
        if dtype == np.float32:
            nans = _core.quantize_f32(x, starts, steps, out, 0x80 if signed else 0)
        else:
            nans = _core.quantize_f64(x, starts.astype(np.float64), steps.astype(np.float64), out,
                                      0x80 if signed else 0)
        assert nans == 0
        want = ref.quantize(x, ranges, signed)
        np.testing.assert_array_equal(out.view(want.dtype), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantize_counts_nan(isa, dtype):
    x = np.zeros((3, 37), dtype)
    x[1, 5] = np.nan
    x[2, 36] = np.nan
    out = np.empty(x.shape, np.uint8)
    st = np.zeros(37, dtype)
    sp = np.ones(37, dtype)
    kern = _core.quantize_f32 if dtype == np.float32 else _core.quantize_f64
    assert kern(x, st, sp, out, 0) == 2


@pytest.mark.parametrize("d", [1, 7, 16, 33, 100, 1024])
@pytest.mark.parametrize("n", [1, 2, 17, 300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minmax(isa, rng, n, d, dtype):
    x = rng.standard_normal((n, d)).astype(dtype)
    mn = np.full(d, np.inf, dtype)
    mx = np.full(d, -np.inf, dtype)
    assert (_core.minmax_f32 if dtype == np.float32 else _core.minmax_f64)(x, mn, mx) == 0
    np.testing.assert_array_equal(mn, x.min(0))
    np.testing.assert_array_equal(mx, x.max(0))
    if n > 1:
        x[0, 0] = np.nan
        mn[:] = np.inf
        mx[:] = -np.inf
        assert (_core.minmax_f32 if dtype == np.float32 else _core.minmax_f64)(x, mn, mx) == 1
        np.testing.assert_array_equal(mn[0], x[1:, 0].min())


@pytest.mark.parametrize("nbytes", NBYTES)
def test_hamming_matrix(isa, rng, nbytes):
    a = rng.integers(0, 256, (9, nbytes), dtype=np.uint8)
    b = rng.integers(0, 256, (37, nbytes), dtype=np.uint8)
    b[3] = a[2]
    b[4] = ~a[2]
    out = np.full((9, 37), -1, np.int32)
    _core.hamming_matrix(a, b, out)
    np.testing.assert_array_equal(out, ref.hamming_matrix(a, b))


@pytest.mark.parametrize("nbytes", [1, 3, 8, 13, 16, 32, 48, 64, 65, 100, 128, 129, 256])
@pytest.mark.parametrize("n", [1, 7, 1000])
@pytest.mark.parametrize("k", [1, 10, "n", "n+5"])
def test_hamming_topk(isa, rng, nbytes, n, k):
    k = {"n": n, "n+5": n + 5}.get(k, k)
    q = rng.integers(0, 256, (13, nbytes), dtype=np.uint8)
    # few distinct codes: heavy ties
    pool = rng.integers(0, 256, (5, nbytes), dtype=np.uint8)
    c = pool[rng.integers(0, 5, n)]
    kk = min(k, n)
    dist = np.empty((13, kk), np.int32)
    ids = np.empty((13, kk), np.int64)
    _core.hamming_topk(q, c, k, 0, dist, ids)
    wd, wi = ref.topk_ascending(ref.hamming_matrix(q, c), k)
    np.testing.assert_array_equal(dist, wd)
    np.testing.assert_array_equal(ids, wi)


def test_hamming_topk_offset_and_many_queries(isa, rng):
    q = rng.integers(0, 256, (1100, 16), dtype=np.uint8)  # > one query block
    c = rng.integers(0, 256, (300, 16), dtype=np.uint8)
    dist = np.empty((1100, 10), np.int32)
    ids = np.empty((1100, 10), np.int64)
    _core.hamming_topk(q, c, 10, 1000, dist, ids)
    wd, wi = ref.topk_ascending(ref.hamming_matrix(q, c), 10)
    np.testing.assert_array_equal(dist, wd)
    np.testing.assert_array_equal(ids, wi + 1000)


@pytest.mark.parametrize("d", [1, 3, 4, 15, 16, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256,
                               257, 384, 513, 1000, 1024, 1100])
@pytest.mark.parametrize("signed", [True, False])
def test_dot_matrix(isa, rng, d, signed):
    dt = np.int8 if signed else np.uint8
    lo, hi = (-128, 128) if signed else (0, 256)
    a = rng.integers(lo, hi, (7, d)).astype(dt)
    b = rng.integers(lo, hi, (29, d)).astype(dt)
    a[0] = lo  # extremes: -128 rows / 0 rows
    b[0] = lo
    a[1] = hi - 1
    b[1] = hi - 1
    out = np.empty((7, 29), np.int32)
    _core.dot_matrix(a.view(np.uint8), b.view(np.uint8), signed, out)
    np.testing.assert_array_equal(out, ref.dot_matrix(a, b))


@pytest.mark.parametrize("d", [1, 5, 64, 100, 129, 384, 1024])
@pytest.mark.parametrize("n", [1, 7, 1000])
@pytest.mark.parametrize("k", [1, 10, "n+5"])
@pytest.mark.parametrize("signed", [True, False])
def test_dot_topk(isa, rng, d, n, k, signed):
    k = n + 5 if k == "n+5" else k
    dt = np.int8 if signed else np.uint8
    lo, hi = (-128, 128) if signed else (0, 256)
    q = rng.integers(lo, hi, (11, d)).astype(dt)
    pool = rng.integers(lo, hi, (6, d)).astype(dt)
    c = pool[rng.integers(0, 6, n)]
    kk = min(k, n)
    sc = np.empty((11, kk), np.int32)
    ids = np.empty((11, kk), np.int64)
    _core.dot_topk(q.view(np.uint8), c.view(np.uint8), signed, k, 0, sc, ids)
    ws, wi = ref.topk_descending(ref.dot_matrix(q, c), k)
    np.testing.assert_array_equal(sc, ws)
    np.testing.assert_array_equal(ids, wi)


def test_dot_extreme_dims(isa):
    d = 4096
    a = np.full((2, d), -128, np.int8)
    out = np.empty((2, 2), np.int32)
    _core.dot_matrix(a.view(np.uint8), a.view(np.uint8), True, out)
    assert (out == 128 * 128 * d).all()
    u = np.full((2, d), 255, np.uint8)
    _core.dot_matrix(u, u, False, out)
    assert (out == 255 * 255 * d).all()


def _scalar_result(fn):
    with use_isa("scalar"):
        return fn()


@pytest.mark.parametrize("d", [1, 7, 8, 9, 31, 64, 65, 100, 384, 1024, 1100])
@pytest.mark.parametrize("signed", [True, False])
def test_rescore_codes(isa, rng, d, signed):
    n, nq, m = 50, 4, 9
    dt = np.int8 if signed else np.uint8
    lo, hi = (-128, 128) if signed else (0, 256)
    codes = rng.integers(lo, hi, (n, d)).astype(dt)
    w = rng.standard_normal((nq, d))
    ids = rng.integers(0, n, (nq, m)).astype(np.int64)
    ids[0, 2] = -1
    out = np.empty((nq, m))
    run = lambda: (_core.rescore_codes(w, codes.view(np.uint8), signed, ids, out), out.copy())[1]
    got = run()
    # int8 codes are read as c + 128 (their dequantization offset)
    want = ref.rescore_codes(w, codes.astype(np.int64) + (128 if signed else 0), ids)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    assert got[0, 2] == -np.inf
    np.testing.assert_array_equal(got, _scalar_result(run))  # identical on every level


@pytest.mark.parametrize("d", [1, 7, 8, 9, 31, 64, 65, 100, 384, 1024, 1100])
@pytest.mark.parametrize("mask", [0, 0x80])
def test_rescore_bits(isa, rng, d, mask):
    n, nq, m = 40, 3, 11
    nbytes = (d + 7) // 8
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    q = rng.standard_normal((nq, d))
    ids = rng.integers(0, n, (nq, m)).astype(np.int64)
    ids[1, 0] = -5
    out = np.empty((nq, m))
    run = lambda: (_core.rescore_bits(q, codes, mask, ids, out), out.copy())[1]
    got = run()
    np.testing.assert_allclose(got, ref.rescore_bits(q, codes, ids, d, mask), rtol=1e-12, atol=1e-9)
    assert got[1, 0] == -np.inf
    np.testing.assert_array_equal(got, _scalar_result(run))
