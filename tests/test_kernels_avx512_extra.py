"""Extra coverage for the AVX-512 kernels: bit-identical to the scalar level on sizes
that cross the AVX-512 tiling boundaries (query blocks of 4, row groups of 8/32,
corpus tiles of a few hundred rows, the transposed-path width limit)."""
import numpy as np
import pytest

import quantlib
from helpers import use_isa
from quantlib import _core

pytestmark = pytest.mark.skipif("avx512" not in quantlib.available_isas(),
                                reason="AVX-512 level not usable on this CPU")


def _on(isa, fn, *args):
    with use_isa(isa):
        return fn(*args)


def _ham_topk(q, c, k, off=0):
    kk = min(k, len(c))
    d = np.empty((len(q), kk), np.int32)
    i = np.empty((len(q), kk), np.int64)
    _core.hamming_topk(q, c, k, off, d, i)
    return d, i


def _dot_topk(q, c, signed, k, off=0):
    kk = min(k, len(c))
    s = np.empty((len(q), kk), np.int32)
    i = np.empty((len(q), kk), np.int64)
    _core.dot_topk(q, c, signed, k, off, s, i)
    return s, i


@pytest.mark.parametrize("nbytes", list(range(1, 300)) + [512, 1000, 4096, 4097, 5000])
def test_hamming_topk_matrix_vs_scalar(rng, nbytes):
    nq = int(rng.integers(1, 11))
    nc = int(rng.integers(1, 700)) if nbytes < 1000 else 70
    q = rng.integers(0, 256, (nq, nbytes), dtype=np.uint8)
    pool = rng.integers(0, 256, (7, nbytes), dtype=np.uint8)
    c = pool[rng.integers(0, 7, nc)]  # many ties
    c[::5] = rng.integers(0, 256, c[::5].shape, dtype=np.uint8)
    for k in (1, 3, 17):
        a = _on("avx512", _ham_topk, q, c, k, 5)
        b = _on("scalar", _ham_topk, q, c, k, 5)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    oa = np.empty((nq, nc), np.int32)
    ob = np.empty((nq, nc), np.int32)
    _on("avx512", _core.hamming_matrix, q, c, oa)
    _on("scalar", _core.hamming_matrix, q, c, ob)
    np.testing.assert_array_equal(oa, ob)


@pytest.mark.parametrize("nq", [1, 3, 4, 5, 8, 13, 40])
def test_hamming_topk_large(rng, nq):
    c = rng.integers(0, 256, (5000, 128), dtype=np.uint8)
    q = rng.integers(0, 256, (nq, 128), dtype=np.uint8)
    q[0] = c[4321]
    for k in (1, 10, 100):
        a = _on("avx512", _ham_topk, q, c, k, 100)
        b = _on("scalar", _ham_topk, q, c, k, 100)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("d", [1, 3, 63, 64, 65, 100, 128, 200, 384, 1024, 1030, 5000])
@pytest.mark.parametrize("signed", [True, False])
def test_dot_vs_scalar(rng, d, signed):
    dt, lo, hi = (np.int8, -128, 128) if signed else (np.uint8, 0, 256)
    for nq, nc in ((1, 333), (2, 50), (3, 45), (4, 9), (6, 301), (9, 77), (13, 130)):
        q = rng.integers(lo, hi, (nq, d)).astype(dt).view(np.uint8)
        pool = rng.integers(lo, hi, (5, d)).astype(dt).view(np.uint8)
        c = pool[rng.integers(0, 5, nc)]
        c[::3] = rng.integers(lo, hi, c[::3].shape).astype(dt).view(np.uint8)
        for k in (1, 10):
            a = _on("avx512", _dot_topk, q, c, signed, k, 7)
            b = _on("scalar", _dot_topk, q, c, signed, k, 7)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        oa = np.empty((nq, nc), np.int32)
        ob = np.empty((nq, nc), np.int32)
        _on("avx512", _core.dot_matrix, q, c, signed, oa)
        _on("scalar", _core.dot_matrix, q, c, signed, ob)
        np.testing.assert_array_equal(oa, ob)


@pytest.mark.parametrize("signed", [True, False])
def test_dot_extremes_vs_scalar(signed):
    d = 131071 if signed else 33025
    v = 0x80 if signed else 0xFF
    for a_val, b_val in ((v, v), (v, 0x7F), (0x7F, 0x7F), (0, v)):
        a = np.full((5, d), a_val, np.uint8)
        b = np.full((6, d), b_val, np.uint8)
        oa = np.empty((5, 6), np.int32)
        ob = np.empty((5, 6), np.int32)
        _on("avx512", _core.dot_matrix, a, b, signed, oa)
        _on("scalar", _core.dot_matrix, a, b, signed, ob)
        np.testing.assert_array_equal(oa, ob)


@pytest.mark.parametrize("d", [1, 5, 8, 13, 64, 127, 1000])
def test_float_kernels_vs_scalar(rng, d):
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((37, d)) * 2).astype(dtype)
        x.flat[::11] = 0.0
        x.flat[::13] = np.nan
        x.flat[::17] = -0.0
        x.flat[::19] = np.inf
        start = rng.standard_normal(d).astype(dtype)
        step = np.abs(rng.standard_normal(d)).astype(dtype) / 50 + dtype(1e-3)
        q = _core.quantize_f32 if dtype == np.float32 else _core.quantize_f64
        p = _core.pack_sign_f32 if dtype == np.float32 else _core.pack_sign_f64
        mm = _core.minmax_f32 if dtype == np.float32 else _core.minmax_f64
        for mask in (0, 0x80):
            oa = np.empty((37, d), np.uint8)
            ob = np.empty((37, d), np.uint8)
            na = _on("avx512", q, x, start, step, oa, mask)
            nb = _on("scalar", q, x, start, step, ob, mask)
            assert na == nb
            np.testing.assert_array_equal(oa, ob)
            pa = np.empty((37, (d + 7) // 8), np.uint8)
            pb = np.empty((37, (d + 7) // 8), np.uint8)
            _on("avx512", p, x, pa, mask)
            _on("scalar", p, x, pb, mask)
            np.testing.assert_array_equal(pa, pb)
        res = []
        for isa in ("avx512", "scalar"):
            mn = np.full(d, np.inf, dtype)
            mx = np.full(d, -np.inf, dtype)
            mn[0] = 0.0
            mx[0] = -0.0
            cnt = _on(isa, mm, x, mn, mx)
            res.append((cnt, mn.tobytes(), mx.tobytes()))
        assert res[0] == res[1]


@pytest.mark.parametrize("d", [1, 7, 8, 9, 100, 1024, 1031])
def test_rescore_vs_scalar(rng, d):
    n, nq, m = 60, 3, 17
    w = rng.standard_normal((nq, d)) * 10.0 ** rng.integers(-5, 5, (nq, d))
    codes = rng.integers(0, 256, (n, d + 3), dtype=np.uint8)
    ids = rng.integers(-1, n, (nq, m)).astype(np.int64)
    for signed in (True, False):
        oa = np.empty((nq, m))
        ob = np.empty((nq, m))
        _on("avx512", _core.rescore_codes, w, codes, signed, ids, oa)
        _on("scalar", _core.rescore_codes, w, codes, signed, ids, ob)
        assert oa.tobytes() == ob.tobytes()
    bits = codes[:, : (d + 7) // 8 + 1].copy()
    for mask in (0, 0x80):
        oa = np.empty((nq, m))
        ob = np.empty((nq, m))
        _on("avx512", _core.rescore_bits, w, bits, mask, ids, oa)
        _on("scalar", _core.rescore_bits, w, bits, mask, ids, ob)
        assert oa.tobytes() == ob.tobytes()
