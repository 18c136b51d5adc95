"""API-level tests of quantlib.search / hamming_distance / int8_dot / rescore.

Every result is compared for exact equality with a slow numpy oracle, on every
kernel level this CPU has (the ``isa`` fixture), for awkward widths, corpus
sizes, k values, tie-heavy data and thread counts. Rescoring (float64) is
compared with ``np.einsum`` over ``dequantize_embeddings`` / ``np.unpackbits``
with the tolerance stated in ``_assert_rescore_close`` and must be identical
across kernel levels.
"""
import os
import subprocess
import sys

import numpy as np
from reference import bitwise_count as _ref_bitwise_count
import pytest

import quantlib
from helpers import use_isa
from quantlib import _precision as REG
from quantlib import dequantize_embeddings, hamming_distance, int8_dot, rescore, search

search_mod = sys.modules["quantlib.search"]  # the module (quantlib.search is the function)

U8 = np.uint8
I8 = np.int8

# --------------------------------------------------------------------- oracles


def ref_hamming(q, c):
    """(Q, N) int64 Hamming distances with np.bitwise_count, row by row."""
    qu = np.ascontiguousarray(q).view(U8)
    cu = np.ascontiguousarray(c).view(U8)
    out = np.empty((qu.shape[0], cu.shape[0]), np.int64)
    for i in range(qu.shape[0]):
        out[i] = _ref_bitwise_count(cu ^ qu[i]).sum(axis=1, dtype=np.int64)
    return out


def ref_dot(q, c):
    return np.asarray(q, np.int64) @ np.asarray(c, np.int64).T


def ref_topk(keys, k, descending):
    """Exact top-k: keys ascending (or descending), ties to the lower index (stable sort)."""
    keys = np.asarray(keys)
    nq, n = keys.shape
    kk = min(k, n)
    sort_keys = -keys.astype(np.float64 if keys.dtype.kind == "f" else np.int64) if descending else keys
    idx = np.argsort(sort_keys, axis=1, kind="stable")[:, :kk].astype(np.int64)
    return np.take_along_axis(keys, idx, axis=1), idx


def check_search(got, keys, k, descending, dtype=np.int32):
    vals, idx = got
    want_v, want_i = ref_topk(keys, k, descending)
    assert vals.dtype == dtype, vals.dtype
    assert idx.dtype == np.int64, idx.dtype
    assert vals.shape == want_v.shape == idx.shape
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(vals, want_v.astype(dtype))


def random_codes(rng, n, nbytes, precision="ubinary", distinct=None):
    """n packed codes; with ``distinct`` only that many different codes (heavy ties)."""
    if distinct:
        pool = rng.integers(0, 256, (distinct, nbytes), dtype=U8)
        c = pool[rng.integers(0, distinct, n)]
    else:
        c = rng.integers(0, 256, (n, nbytes), dtype=U8)
    return c.view(I8) if precision in ("binary", "int8") else c


def random_scalar(rng, n, d, signed, distinct=None):
    lo, hi = (-128, 128) if signed else (0, 256)
    dt = I8 if signed else U8
    if distinct:
        pool = rng.integers(lo, hi, (distinct, d)).astype(dt)
        return pool[rng.integers(0, distinct, n)]
    return rng.integers(lo, hi, (n, d)).astype(dt)


def resolve_k(k, n):
    return {"N": n, "N+5": n + 5}.get(k, k)


# ----------------------------------------------------------- binary / ubinary


@pytest.mark.parametrize("nbytes", range(1, 131))
def test_binary_every_width(isa, rng, nbytes):
    """Widths 1..130 bytes (tails of 8/32/64-byte blocks), both precisions, same distances."""
    q = random_codes(rng, 6, nbytes)
    c = random_codes(rng, 53, nbytes, distinct=9)
    c[5] = q[0]  # distance 0
    c[6] = ~q[0]  # distance nbytes*8
    keys = ref_hamming(q, c)
    for k in (1, 10, 53, 60):
        got_u = search(q, c, k, precision="ubinary", threads=1)
        check_search(got_u, keys, k, descending=False)
        qb = (q ^ U8(0x80)).view(I8)  # the same bits as binary codes
        cb = (c ^ U8(0x80)).view(I8)
        got_b = search(qb, cb, k, precision="binary", threads=1)
        np.testing.assert_array_equal(got_b[0], got_u[0])
        np.testing.assert_array_equal(got_b[1], got_u[1])
    assert got_u[0][0, 0] == 0


@pytest.mark.parametrize("bits", [128, 256, 512, 1024, 2048])
@pytest.mark.parametrize("n", [0, 1, 7, 1000])
@pytest.mark.parametrize("k", [1, 10, "N", "N+5"])
@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_binary_bits(isa, rng, bits, n, k, precision):
    k = resolve_k(k, n)
    q = random_codes(rng, 9, bits // 8, precision)
    if k < 1:  # k = N = 0
        with pytest.raises(ValueError, match="k must be >= 1"):
            search(q, q[:0], k, precision=precision)
        return
    c = random_codes(rng, n, bits // 8, precision, distinct=4 if n > 7 else None)
    got = search(q, c, k, precision=precision)
    assert got[0].shape == (9, min(k, n))
    check_search(got, ref_hamming(q, c), k, descending=False)


@pytest.mark.parametrize("k", [10, "N+5"])
def test_binary_100k(isa, rng, k):
    """N = 100 000 x 1024 bits, tie-heavy, few queries (corpus split across 2 threads)."""
    n = 100_000
    k = resolve_k(k, n)
    q = random_codes(rng, 3, 128)
    c = random_codes(rng, n, 128, distinct=50)
    keys = ref_hamming(q, c)
    for threads in (1, 2):
        check_search(search(q, c, k, precision="ubinary", threads=threads), keys, k, descending=False)


def test_binary_all_ties(isa, rng):
    """Every corpus row identical: the k lowest indices, in order."""
    q = random_codes(rng, 4, 16)
    c = np.repeat(random_codes(rng, 1, 16), 500, axis=0)
    d, i = search(q, c, 17, precision="ubinary")
    np.testing.assert_array_equal(i, np.broadcast_to(np.arange(17), (4, 17)))
    assert (d == d[:, :1]).all()


def test_binary_vs_ubinary_distances(rng):
    x = rng.standard_normal((40, 300)).astype(np.float32)
    b = quantlib.quantize_embeddings(x, "binary")
    u = quantlib.quantize_embeddings(x, "ubinary")
    assert b.dtype == I8 and u.dtype == U8
    np.testing.assert_array_equal(search(b[:5], b, 40, precision="binary")[0],
                                  search(u[:5], u, 40, precision="ubinary")[0])
    np.testing.assert_array_equal(hamming_distance(b, b), hamming_distance(u, u))
    np.testing.assert_array_equal(hamming_distance(b, u), hamming_distance(u, u))


# ----------------------------------------------------------------- int8/uint8

INT_DIMS = [1, 2, 3, 4, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 257,
            384, 511, 512, 513, 768, 1000, 1023, 1024, 1025, 1100]


@pytest.mark.parametrize("d", INT_DIMS)
@pytest.mark.parametrize("precision", REG.where(kernel="dot8"))
def test_int_dims(isa, rng, d, precision):
    signed = precision == "int8"
    q = random_scalar(rng, 7, d, signed)
    c = random_scalar(rng, 41, d, signed, distinct=6)
    lo, hi = (-128, 127) if signed else (0, 255)
    q[0] = lo
    q[1] = hi
    c[2] = lo
    c[3] = hi
    keys = ref_dot(q, c)
    for k in (1, 10, 41, 46):
        check_search(search(q, c, k, precision=precision, threads=1), keys, k, descending=True)


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
@pytest.mark.parametrize("k", [1, 10, "N", "N+5"])
@pytest.mark.parametrize("precision", REG.where(kernel="dot8"))
@pytest.mark.parametrize("d", [64, 384, 1024])
def test_int_sizes(isa, rng, n, k, precision, d):
    k = resolve_k(k, n)
    signed = precision == "int8"
    q = random_scalar(rng, 5, d, signed)
    if k < 1:  # k = N = 0
        with pytest.raises(ValueError, match="k must be >= 1"):
            search(q, q[:0], k, precision=precision)
        return
    c = random_scalar(rng, n, d, signed, distinct=5 if n > 7 else None)
    got = search(q, c, k, precision=precision)
    assert got[0].shape == (5, min(k, n))
    check_search(got, ref_dot(q, c), k, descending=True)


@pytest.mark.parametrize("precision", REG.where(kernel="dot8"))
def test_int_extremes(isa, precision):
    """All -128 / 127 (int8) and 0 / 255 (uint8) rows: the largest exact sums."""
    signed = precision == "int8"
    dt = I8 if signed else U8
    lo, hi = (-128, 127) if signed else (0, 255)
    d = 1100
    c = np.array([[lo] * d, [hi] * d, [lo] * d, [hi] * d] * 3, dt)
    q = np.array([[lo] * d, [hi] * d], dt)
    keys = ref_dot(q, c)
    check_search(search(q, c, 12, precision=precision), keys, 12, descending=True)
    np.testing.assert_array_equal(int8_dot(q, c), keys)
    if signed:
        assert int8_dot(q, c)[0, 0] == 128 * 128 * d


def test_int8_100k(isa, rng):
    n = 100_000
    q = random_scalar(rng, 3, 256, True)
    c = random_scalar(rng, n, 256, True, distinct=40)
    keys = ref_dot(q, c)
    for threads in (1, 2):
        check_search(search(q, c, 10, precision="int8", threads=threads), keys, 10, descending=True)


def test_int_dim_limit():
    d = quantlib._core.DOT_MAX_DIM_UNSIGNED + 1
    x = np.zeros((1, d), U8)
    with pytest.raises(ValueError, match=r"uint8.*exact in int32 up to"):
        search(x, x, 1, precision="uint8")
    with pytest.raises(ValueError, match=r"exact in int32"):
        int8_dot(x, x)


# ----------------------------------------------------------------- float32


@pytest.mark.parametrize("d", [1, 3, 16, 100, 385])
@pytest.mark.parametrize("n", [0, 1, 7, 1000, 20_000])
def test_float32(rng, d, n):
    """Integer-valued floats so every BLAS order gives the exact same sums (and ties)."""
    q = rng.integers(-3, 4, (6, d)).astype(np.float32)
    c = rng.integers(-3, 4, (n, d)).astype(np.float32)
    keys = q.astype(np.float64) @ c.astype(np.float64).T
    for k in (1, 10, n + 5):
        check_search(search(q, c, k), keys, k, descending=True, dtype=np.float32)
    # float64 input gives the same answer (computed in float32)
    check_search(search(q.astype(np.float64), c.astype(np.float64), 10, precision="float32"),
                 keys, 10, descending=True, dtype=np.float32)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_float32_nonfinite_errors(rng):
    c = rng.integers(-3, 4, (50, 8)).astype(np.float32)
    q = c[:2].copy()
    q[1, 3] = np.nan
    with pytest.raises(ValueError, match="queries"):
        search(q, c)
    q = np.full((1, 8), 1e300)  # finite float64, inf in float32
    with pytest.raises(ValueError, match="queries"):
        search(q, c)
    c[7, 1] = np.nan
    with pytest.raises(ValueError, match="corpus"):
        search(c[:2].copy() * 0 + 1, c, 5)


# ------------------------------------------------------------- shapes / k


@pytest.mark.parametrize("precision", ["binary", "ubinary", "int8", "uint8", "float32"])
def test_shapes(rng, precision):
    if precision == "float32":
        c = rng.integers(-3, 4, (20, 24)).astype(np.float32)
    else:
        c = random_codes(rng, 20, 24, precision)
    q = c[:3]
    # 1-D query -> 1-D results equal to the first row of the 2-D call
    v2, i2 = search(q, c, 5, precision=precision)
    v1, i1 = search(q[0], c, 5, precision=precision)
    assert v1.shape == i1.shape == (5,)
    np.testing.assert_array_equal(v1, v2[0])
    np.testing.assert_array_equal(i1, i2[0])
    # k > N: N columns, never padding
    v, i = search(q, c, 25, precision=precision)
    assert v.shape == i.shape == (3, 20)
    assert sorted(i[0]) == list(range(20))
    # a k beyond any C integer still means "every row"
    v, i = search(q, c, 2**70, precision=precision)
    assert v.shape == (3, 20)
    # N = 0: (Q, 0)
    v, i = search(q, c[:0], 5, precision=precision)
    assert v.shape == i.shape == (3, 0)
    assert i.dtype == np.int64
    v, i = search(q[0], c[:0], 5, precision=precision)
    assert v.shape == i.shape == (0,)
    # no queries: (0, min(k, N))
    v, i = search(q[:0], c, 5, precision=precision)
    assert v.shape == i.shape == (0, 5)


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("nq", [2, 200])
def test_threads_identical(isa, rng, threads, nq):
    """Few queries split the corpus, many split the queries; results never change."""
    n = 40_000 if nq == 2 else 4_000
    q = random_codes(rng, nq, 64)
    c = random_codes(rng, n, 64, distinct=30)
    check_search(search(q, c, 10, precision="ubinary", threads=threads), ref_hamming(q, c), 10, False)
    qi = random_scalar(rng, nq, 128, True)
    ci = random_scalar(rng, n, 128, True, distinct=30)
    check_search(search(qi, ci, 10, precision="int8", threads=threads), ref_dot(qi, ci), 10, True)


# ---------------------------------------------------------------- matrices


@pytest.mark.parametrize("nbytes", [1, 7, 8, 9, 33, 64, 65, 128, 130, 256])
def test_hamming_distance_matrix(isa, rng, nbytes):
    a = random_codes(rng, 13, nbytes)
    b = random_codes(rng, 29, nbytes)
    want = ref_hamming(a, b)
    got = hamming_distance(a, b)
    assert got.dtype == np.int32 and got.shape == (13, 29)
    np.testing.assert_array_equal(got, want)
    # binary/ubinary mix: the binary code of the same bits is ubinary ^ 0x80 as int8
    np.testing.assert_array_equal(hamming_distance((a ^ U8(0x80)).view(I8), b), want)
    np.testing.assert_array_equal(hamming_distance(b, (a ^ U8(0x80)).view(I8)), want.T)
    np.testing.assert_array_equal(hamming_distance(a[3], b), want[3])
    np.testing.assert_array_equal(hamming_distance(a, b[4]), want[:, 4])
    assert hamming_distance(a[3], b[4]) == want[3, 4]
    assert hamming_distance(a[:0], b).shape == (0, 29)


@pytest.mark.parametrize("d", [1, 15, 16, 33, 64, 100, 257, 1024, 1100])
@pytest.mark.parametrize("precision", REG.where(kernel="dot8"))
def test_int8_dot_matrix(isa, rng, d, precision):
    signed = precision == "int8"
    a = random_scalar(rng, 11, d, signed)
    b = random_scalar(rng, 23, d, signed)
    want = ref_dot(a, b)
    got = int8_dot(a, b)
    assert got.dtype == np.int32 and got.shape == (11, 23)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(int8_dot(a[0], b), want[0])
    np.testing.assert_array_equal(int8_dot(a, b[1]), want[:, 1])


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_matrix_threads(isa, rng, threads):
    """One row against many (columns split across threads) and many against many."""
    a = random_codes(rng, 1, 64)
    b = random_codes(rng, 70_000, 64)
    np.testing.assert_array_equal(hamming_distance(a, b, threads=threads), ref_hamming(a, b))
    a = random_codes(rng, 300, 64)
    b = random_codes(rng, 300, 64)
    np.testing.assert_array_equal(hamming_distance(a, b, threads=threads), ref_hamming(a, b))
    x = random_scalar(rng, 1, 256, True)
    y = random_scalar(rng, 20_000, 256, True)
    np.testing.assert_array_equal(int8_dot(x, y, threads=threads), ref_dot(x, y))


# ----------------------------------------------------------------- rescore

RESCORE_RTOL = 1e-12


def _assert_rescore_close(got, want, scale):
    """|got - want| <= 1e-12 * (|want| + scale), scale = sum_i |q_i| * max|x_i| (the
    magnitude of the terms summed, so cancellation cannot fake a failure)."""
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite)
    err = np.abs(got[finite] - want[finite])
    bound = RESCORE_RTOL * (np.abs(want[finite]) + np.broadcast_to(scale, want.shape)[finite])
    assert (err <= bound).all(), float((err / bound).max())


def _on_scalar(fn):
    with use_isa("scalar"):
        return fn()


@pytest.mark.parametrize("d", [1, 7, 8, 9, 64, 65, 100, 384, 1024, 1100])
@pytest.mark.parametrize("precision", REG.where(kernel="dot8"))
def test_rescore_scalar_codes(isa, rng, d, precision):
    n, nq, m = 60, 5, 12
    x = rng.standard_normal((n, d)).astype(np.float32)
    ranges = np.vstack((x.min(0), x.max(0)))
    codes = quantlib.quantize_embeddings(x, precision, ranges=ranges)
    q = rng.standard_normal((nq, d))
    ids = rng.integers(0, n, (nq, m))
    ids[1, 4] = -1
    run = lambda: rescore(q, codes, ids, precision=precision, ranges=ranges)
    scores, rid = run()
    deq = dequantize_embeddings(codes, precision, ranges)  # float64
    raw = np.einsum("qd,qmd->qm", q, deq[np.where(ids < 0, 0, ids)])
    raw[ids < 0] = -np.inf
    # order: descending score, ties to lower id, empty slot last with id -1
    assert rid.dtype == np.int64 and scores.dtype == np.float64
    assert rid[1, -1] == -1 and scores[1, -1] == -np.inf
    want = np.take_along_axis(raw, np.argsort(-raw, axis=1, kind="stable"), axis=1)
    scale = np.abs(q) @ np.abs(deq).max(0)
    _assert_rescore_close(scores, want, scale[:, None])
    # each returned id's exact score is the reported one (ids are a permutation of the candidates)
    exact = np.take_along_axis(raw, _pos_of(ids, rid), axis=1)
    _assert_rescore_close(scores, exact, scale[:, None])
    assert np.all(np.diff(np.where(np.isfinite(scores), scores, -1e308), axis=1) <= 0)
    # identical on every kernel level, top-k prefix
    s0, r0 = _on_scalar(run)
    np.testing.assert_array_equal(scores, s0)
    np.testing.assert_array_equal(rid, r0)
    s3, r3 = rescore(q, codes, ids, precision=precision, ranges=ranges, k=3)
    np.testing.assert_array_equal(s3, scores[:, :3])
    np.testing.assert_array_equal(r3, rid[:, :3])


def _pos_of(ids, rid):
    """Positions in ``ids`` of the returned ``rid`` (first occurrence)."""
    pos = np.empty(rid.shape, np.int64)
    for i in range(ids.shape[0]):
        for j, r in enumerate(rid[i]):
            pos[i, j] = int(np.flatnonzero(ids[i] == r)[0])
    return pos


@pytest.mark.parametrize("d", [1, 7, 8, 9, 64, 65, 100, 384, 1024, 1100])
@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_rescore_bits(isa, rng, d, precision):
    n, nq, m = 50, 4, 9
    x = rng.standard_normal((n, d)).astype(np.float32)
    codes = quantlib.quantize_embeddings(x, precision)
    q = rng.standard_normal((nq, d))
    ids = rng.integers(0, n, (nq, m))
    ids[2, 0] = -1
    run = lambda: rescore(q, codes, ids, precision=precision)
    scores, rid = run()
    bits = np.unpackbits(quantlib.quantize_embeddings(x, "ubinary"), axis=1)[:, :d].astype(np.float64)
    valid = rid >= 0
    want = np.full(rid.shape, -np.inf)
    want[valid] = np.einsum("qd,qmd->qm", q, bits[np.where(valid, rid, 0)])[valid]
    _assert_rescore_close(scores, want, np.abs(q).sum(1)[:, None])
    assert rid[2, -1] == -1
    # each returned id is one of the candidates, sorted descending
    for i in range(nq):
        assert sorted(rid[i].tolist()) == sorted(ids[i].tolist())
    assert np.all(np.diff(np.where(valid, scores, -1e308), axis=1) <= 0)
    s0, r0 = _on_scalar(run)
    np.testing.assert_array_equal(scores, s0)
    np.testing.assert_array_equal(rid, r0)


def test_rescore_1d_and_ties(rng):
    x = rng.standard_normal((10, 16)).astype(np.float32)
    codes = quantlib.quantize_embeddings(x, "ubinary")
    q = rng.standard_normal(16)
    s, r = rescore(q, codes, np.array([3, 3, 1, 3]), precision="ubinary")
    assert s.shape == r.shape == (4,)
    # duplicates of one row tie: lower id first, then input order is irrelevant
    assert list(r).count(3) == 3


def test_rescore_int8_has_no_offset_cancellation(isa):
    """int8 codes are dequantized as (c + 128) * step + start; the kernel sums
    w * (c + 128) directly, so a huge query weight on a dim whose code is -128
    (dequantized to exactly ``start``) cannot cancel the small terms away
    (fuzzing finding: folding 128 * sum(w) into a bias gave 0.0 for -237)."""
    codes = np.array([[89, -108, -128]], np.int8)
    ranges = np.array([[0, 0, 0], [255, 255, 255]], np.float32)  # step 1, start 0
    q = np.array([[-1.0, -1.0, -3e38]])
    s, r = rescore(q, codes, np.array([[0]]), precision="int8", ranges=ranges)
    assert s[0, 0] == -237.0 and r[0, 0] == 0


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("precision", REG.where(kernel="dot8"))
def test_rescore_empty_slots_stay_minus_inf_when_the_bias_overflows(precision):
    """Huge finite queries overflow the folded range offset (q . start); rows
    with only empty slots (-1) must still give -inf / -1, not NaN (fuzzing
    finding); rows with real candidates raise."""
    codes = np.arange(-6, 6, dtype=np.int8).reshape(4, 3)
    codes = codes if precision == "int8" else codes.view(np.uint8)
    ranges = np.zeros((2, 3), np.float32)  # start 0, step 0 -> every dims' step falls back to 1
    ranges[0] = 3e38
    q = np.full((2, 3), 1.7e308)
    s, r = rescore(q, codes, np.full((2, 4), -1), precision=precision, ranges=ranges)
    np.testing.assert_array_equal(s, np.full((2, 4), -np.inf))
    np.testing.assert_array_equal(r, np.full((2, 4), -1))
    with pytest.raises(ValueError, match="overflowed"):
        rescore(q, codes, np.array([[-1, 0, -1, -1], [-1, -1, -1, -1]]), precision=precision, ranges=ranges)


# ---------------------------------------------------------------- inputs


class _Recorder:
    """Stands in for quantlib._core inside quantlib.search: records the arrays
    handed to the kernels and forwards the call."""

    def __init__(self, core):
        self._core = core
        self.seen = []

    def __getattr__(self, name):
        attr = getattr(self._core, name)
        if not callable(attr):
            return attr

        def wrapper(*args, **kw):
            self.seen.append((name, [a for a in args if isinstance(a, np.ndarray)]))
            return attr(*args, **kw)

        return wrapper


@pytest.mark.parametrize("precision", ["ubinary", "int8"])
def test_memmap_no_copy(tmp_path, rng, monkeypatch, precision):
    n, w = 20000, 96  # large enough for the 2-thread corpus split
    path = tmp_path / "codes.bin"
    dt = U8 if precision == "ubinary" else I8
    data = random_codes(rng, n, w, precision).astype(dt)
    data.tofile(path)
    mm = np.memmap(path, dtype=dt, mode="r", shape=(n, w))
    q = data[:4].copy()
    rec = _Recorder(search_mod._core)
    monkeypatch.setattr(search_mod, "_core", rec)
    got = search(q, mm, 7, precision=precision, threads=2)
    assert rec.seen, "no kernel call recorded"
    for name, arrays in rec.seen:
        corpus_args = [a for a in arrays if a.shape[1:] == (w,) and a.shape[0] > 4]
        assert corpus_args, name
        for a in corpus_args:
            assert np.shares_memory(a, mm), f"{name} got a copy of the memmapped corpus"
    keys = ref_hamming(q, data) if precision == "ubinary" else ref_dot(q, data)
    check_search(got, keys, 7, descending=precision != "ubinary")
    # the all-pairs matrices scan the map in place too
    rec.seen.clear()
    if precision == "ubinary":
        np.testing.assert_array_equal(hamming_distance(q, mm, threads=2), ref_hamming(q, data))
    else:
        np.testing.assert_array_equal(int8_dot(q, mm, threads=2), ref_dot(q, data))
    assert rec.seen and all(any(np.shares_memory(a, mm) for a in arrs) for _, arrs in rec.seen)
    # rescore gathers candidate rows straight from the map as well
    rec.seen.clear()
    if precision == "int8":
        ranges = np.vstack((np.full(w, -1.0), np.full(w, 1.0))).astype(np.float32)
        rescore(rng.standard_normal((4, w)), mm, got[1], precision="int8", ranges=ranges)
        kern = [a for nm, arrs in rec.seen if nm == "rescore_codes" for a in arrs]
        assert any(np.shares_memory(a, mm) for a in kern)


@pytest.mark.parametrize("precision", REG.where(kernel="hamming")[::-1] + REG.where(kernel="dot8"))
def test_layouts_equal(isa, rng, precision):
    """Read-only, strided rows, Fortran order, negative strides: same results."""
    base = random_codes(rng, 400, 40, precision)
    q = base[:5].copy()
    c = base.copy()
    want = search(q, c, 12, precision=precision)

    ro = c.copy()
    ro.flags.writeable = False
    qro = q.copy()
    qro.flags.writeable = False
    _eq(search(qro, ro, 12, precision=precision), want)
    _eq(search(np.asfortranarray(q), np.asfortranarray(c), 12, precision=precision), want)

    wide = np.zeros((400, 80), c.dtype)
    wide[:, ::2] = c  # strided columns
    _eq(search(q, wide[:, ::2], 12, precision=precision), want)
    tall = np.repeat(c, 2, axis=0)[::2]  # strided rows
    _eq(search(q, tall, 12, precision=precision), want)

    rev = c[::-1]  # negative stride: equals searching the reversed copy
    _eq(search(q[::-1], rev, 12, precision=precision),
        search(np.ascontiguousarray(q[::-1]), np.ascontiguousarray(rev), 12, precision=precision))


def _eq(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_torch_tensors(rng):
    torch = pytest.importorskip("torch")
    c = random_codes(rng, 300, 32)
    q = c[:4]
    _eq(search(torch.from_numpy(q), torch.from_numpy(c), 5, precision="ubinary"),
        search(q, c, 5, precision="ubinary"))
    ci = random_scalar(rng, 300, 48, True)
    _eq(search(torch.from_numpy(ci[:3]), torch.from_numpy(ci), 5, precision="int8"),
        search(ci[:3], ci, 5, precision="int8"))
    f = rng.integers(-3, 4, (300, 16)).astype(np.float32)
    _eq(search(torch.from_numpy(f[:3]), torch.from_numpy(f), 5), search(f[:3], f, 5))
    np.testing.assert_array_equal(hamming_distance(torch.from_numpy(q), torch.from_numpy(c)),
                                  hamming_distance(q, c))
    np.testing.assert_array_equal(int8_dot(torch.from_numpy(ci[:3]), torch.from_numpy(ci)),
                                  int8_dot(ci[:3], ci))
    t = torch.from_numpy(f[:3]).requires_grad_(True)
    _eq(search(t, f, 5), search(f[:3], f, 5))


# ----------------------------------------------------------------- errors

_C8 = np.zeros((10, 16), U8)
_S8 = np.zeros((10, 16), I8)
_F = np.zeros((10, 16), np.float32)

ERROR_CASES = [
    # (call, exception, regex the message must match)
    (lambda: search(_C8, _C8.astype(np.uint16), 3, precision="ubinary"), TypeError,
     r"corpus must have dtype uint8 for precision='ubinary', got uint16"),
    (lambda: search(_S8, _C8, 3, precision="ubinary"), TypeError,
     r"queries must have dtype uint8 .*got int8"),
    (lambda: search(_C8, _C8, 3, precision="binary"), TypeError, r"queries must have dtype int8.*got uint8"),
    # float queries for packed bits are quantized by sign (like Index.search); their dims must pack to the width
    (lambda: search(_F, _C8, 3, precision="ubinary"), ValueError, r"queries have 16 float dims, which pack to 2 bytes"),
    (lambda: search(_C8, _F, 3, precision="ubinary"), TypeError, r"corpus must have dtype uint8.*float32"),
    (lambda: search(_C8[:, :8], _C8, 3, precision="ubinary"), ValueError,
     r"queries have 8 bytes per code \(64 bits\) but corpus has 16 bytes per code \(128 bits\)"),
    (lambda: search(_S8[:, :8], _S8, 3, precision="int8"), ValueError, r"queries have 8 dims but corpus has 16 dims"),
    (lambda: search(_F[:, :8], _F, 3), ValueError, r"queries have 8 dims but corpus has 16 dims"),
    (lambda: search(_C8, _C8, 0, precision="ubinary"), ValueError, r"k must be >= 1, got 0"),
    (lambda: search(_C8, _C8, -3, precision="ubinary"), ValueError, r"k must be >= 1, got -3"),
    (lambda: search(_C8, _C8, True, precision="ubinary"), TypeError, r"k must be a positive int, got bool"),
    (lambda: search(_C8, _C8, 2.0, precision="ubinary"), TypeError, r"k must be a positive int, got float"),
    (lambda: search(_C8, _C8, None, precision="ubinary"), TypeError, r"k must be a positive int, got NoneType"),
    (lambda: search(_C8[None], _C8, 3, precision="ubinary"), ValueError,
     r"queries must be 1-D \(d,\) or 2-D \(n, d\), got 3-D array of shape \(1, 10, 16\)"),
    (lambda: search(_C8, _C8[None], 3, precision="ubinary"), ValueError, r"corpus must be 2-D .*3-D"),
    (lambda: search(_C8, _C8[0], 3, precision="ubinary"), ValueError, r"corpus must be 2-D .*1-D"),
    (lambda: search(np.uint8(3), _C8, 3, precision="ubinary"), ValueError, r"queries must be .*0-D"),
    (lambda: search(_C8, _C8, 3), ValueError, r"precision is ambiguous for uint8 corpus.*'ubinary'.*'uint8'"),
    (lambda: search(_S8, _S8, 3), ValueError, r"precision is ambiguous for int8 corpus.*'binary'.*'int8'"),
    (lambda: search(_C8.astype(np.int32), _C8.astype(np.int32), 3), TypeError,
     r"corpus must be float32 embeddings or int8/uint8 codes, got dtype int32"),
    (lambda: search(_C8, _C8, 3, precision="int4"), ValueError, r"precision must be one of .*got 'int4'"),
    (lambda: search(_C8, _C8, 3, precision=8), ValueError, r"precision must be one of .*got 8"),
    (lambda: search(_C8[:, :0], _C8[:, :0], 3, precision="ubinary"), ValueError, r"width 0"),
    (lambda: search(_S8, _F, 3), TypeError, r"queries must be float embeddings .*got dtype int8"),
    (lambda: search(None, _C8, 3, precision="ubinary"), TypeError, r"queries must be a numpy array.*NoneType"),
    (lambda: search(_C8, "abc", 3, precision="ubinary"), TypeError, r"corpus must be a numpy array.*str"),
    (lambda: search(_C8, _C8, 3, precision="ubinary", threads=0), ValueError, r"threads must be >= 1"),
    (lambda: search(_C8, _C8, 3, precision="ubinary", threads=1.5), TypeError, r"threads must be an int"),
    (lambda: hamming_distance(_F, _C8), TypeError, r"a must be packed binary codes .*got dtype float32"),
    (lambda: hamming_distance(_C8, _C8[:, :3]), ValueError,
     r"a have 16 bytes per code \(128 bits\) but b has 3 bytes per code \(24 bits\)"),
    (lambda: hamming_distance(_C8[None], _C8), ValueError, r"a must be 1-D .*3-D"),
    (lambda: int8_dot(_S8, _C8), TypeError, r"a and b must both be int8 or both uint8 codes, got int8 and uint8"),
    (lambda: int8_dot(_F, _F), TypeError, r"got float32 and float32"),
    (lambda: int8_dot(_S8, _S8[:, :5]), ValueError, r"a have 16 dims but b has 5 dims"),
    (lambda: int8_dot(_S8, _S8[None]), ValueError, r"b must be 1-D .*3-D"),
    (lambda: quantlib.merge_topk(np.zeros((2, 3)), np.zeros((2, 3)), -1, descending=True), ValueError,
     r"k must be >= 1, got -1"),
    (lambda: quantlib.merge_topk(np.zeros((2, 3)), np.zeros((2, 4)), 2, descending=True), ValueError,
     r"values and ids must be 2-D arrays of one shape, got \(2, 3\) and \(2, 4\)"),
]

_Q16 = np.zeros((3, 16))
_Q128 = np.zeros((3, 128))
_R16 = np.vstack((np.full(16, -1.0), np.full(16, 1.0)))
RESCORE_ERRORS = [
    (lambda: rescore(_Q128, _C8, [[0, 10]] * 3, precision="ubinary"), ValueError,
     r"candidates must be in \[0, 10\) or -1.*max 10"),
    (lambda: rescore(_Q128, _C8, [[0, -2]] * 3, precision="ubinary"), ValueError, r"candidates .*min -2"),
    (lambda: rescore(_Q128, _C8, np.full((3, 2), 2**63 + 5, np.uint64), precision="ubinary"), ValueError,
     r"candidates must be in \[0, 10\)"),
    (lambda: rescore(_Q128, _C8, [[0.0, 1.0]] * 3, precision="ubinary"), TypeError,
     r"candidates must be .*integer.*float64"),
    (lambda: rescore(_Q128, _C8, np.zeros((3, 2, 2), int), precision="ubinary"), ValueError,
     r"candidates must be .*2-D.*\(3, 2, 2\)"),
    (lambda: rescore(_Q128, _C8, [[0, 1]] * 2, precision="ubinary"), ValueError,
     r"candidates has 2 rows but there are 3 queries"),
    (lambda: rescore(_Q128, _C8, [[0, 1]] * 3, precision="float32"), ValueError, r"precision must be one of"),
    (lambda: rescore(_Q128, _C8, [[0, 1]] * 3), TypeError, r"precision"),
    (lambda: rescore(_Q128[:, :120], _C8, [[0, 1]] * 3, precision="ubinary"), ValueError,
     r"codes have 16 bytes per row \(128 bits\) but queries have 120 dims, which pack to 15 bytes"),
    (lambda: rescore(_Q16, _C8, [[0, 1]] * 3, precision="uint8"), ValueError, r"ranges is required"),
    (lambda: rescore(_Q16[:, :8], _C8, [[0, 1]] * 3, precision="uint8", ranges=_R16), ValueError,
     r"codes have 16 dims but queries have 8"),
    (lambda: rescore(_Q16, _C8, [[0, 1]] * 3, precision="uint8", ranges=_R16[:, :4]), ValueError,
     r"ranges must have shape \(2, 16\)"),
    (lambda: rescore(_Q16, _S8, [[0, 1]] * 3, precision="uint8", ranges=_R16), TypeError,
     r"codes must have dtype uint8 for precision='uint8', got int8"),
    (lambda: rescore(_Q16.astype(I8), _S8, [[0, 1]] * 3, precision="int8", ranges=_R16), TypeError,
     r"queries must be float embeddings, got dtype int8"),
    (lambda: rescore(_Q128, _C8, [[0, 1]] * 3, precision="ubinary", k=0), ValueError, r"k must be >= 1"),
    (lambda: rescore(_Q128, _C8, [[0, 1]] * 3, precision="ubinary", k=1.5), TypeError, r"k must be a positive int"),
    (lambda: rescore(np.full((3, 128), np.nan), _C8, [[0, 1]] * 3, precision="ubinary"), ValueError,
     r"queries contain NaN"),
    (lambda: rescore(_Q128, _C8[0], [[0, 1]] * 3, precision="ubinary"), ValueError, r"codes must be 2-D"),
]


@pytest.mark.parametrize("call,exc,msg", ERROR_CASES + RESCORE_ERRORS,
                         ids=[f"search{i}" for i in range(len(ERROR_CASES))]
                         + [f"rescore{i}" for i in range(len(RESCORE_ERRORS))])
def test_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


# ---------------------------------------------------------- QUANTLIB_ISA


def _run_with_isa(value):
    env = dict(os.environ, QUANTLIB_ISA=value)
    code = ("import numpy as np, quantlib as q;"
            "c = np.arange(64, dtype=np.uint8).reshape(8, 8);"
            "d, i = q.search(c[:2], c, 3, precision='ubinary');"
            "print(q.get_isa(), d.tolist(), i.tolist())")
    root = os.path.dirname(os.path.dirname(os.path.abspath(quantlib.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_env_isa_selects_each_level():
    outs = set()
    for level in quantlib.available_isas():
        r = _run_with_isa(level)
        assert r.returncode == 0, r.stderr
        name, rest = r.stdout.strip().split(" ", 1)
        assert name == level
        outs.add(rest)
    assert len(outs) == 1  # same answer on every level


def test_env_isa_best():
    r = _run_with_isa("best")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == quantlib.available_isas()[-1]


def test_env_isa_bogus_is_import_error():
    r = _run_with_isa("bogus")
    assert r.returncode == 1, (r.returncode, r.stderr)  # a Python exception, not a signal
    assert "ImportError" in r.stderr and "QUANTLIB_ISA='bogus'" in r.stderr, r.stderr


def test_merge_topk_int32_extremes():
    """-INT32_MIN does not fit in int32: merging must widen before negating."""
    v = np.array([[-2**31, 5, 2**31 - 1, -2**31]], np.int32)
    i = np.array([[0, 1, 2, 3]])
    mv, mi = quantlib.merge_topk(v, i, 4, descending=True)
    np.testing.assert_array_equal(mi, [[2, 1, 0, 3]])
    mv, mi = quantlib.merge_topk(v, i, 3, descending=False)
    np.testing.assert_array_equal(mi, [[0, 3, 1]])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64])
@pytest.mark.parametrize("descending", [True, False])
def test_merge_topk_integer_extremes_every_dtype(rng, dtype, descending):
    """The order key must not overflow for any integer dtype: -INT64_MIN wraps
    even after widening, and negating unsigned values wraps (found by fuzzing)."""
    info = np.iinfo(dtype)
    pool = np.array([info.min, info.min + 1, -1 if info.min < 0 else 2, 0, 1, info.max - 1, info.max], dtype=dtype)
    v = rng.choice(pool, size=(5, 23))
    i = np.stack([rng.permutation(40)[:23] for _ in range(5)]).astype(np.int64)
    mv, mi = quantlib.merge_topk(v, i, 9, descending=descending)
    for r in range(5):  # Python ints: an exact, overflow-free reference
        order = sorted(range(23), key=lambda j: (-int(v[r, j]) if descending else int(v[r, j]), int(i[r, j])))[:9]
        np.testing.assert_array_equal(mi[r], i[r, order])
        np.testing.assert_array_equal(mv[r], v[r, order])
    assert mv.dtype == dtype


# ------------------------------------------------- sentence-transformers parity


@pytest.mark.parametrize("precision", REG.where(kernel="dot8") + REG.where(kernel="hamming"))
def test_rescore_matches_sentence_transformers(rng, precision):
    """Scores and order equal sentence-transformers 6.2's rescoring step: float
    query einsum dequantized (or unpacked) candidates, argsort(-scores)."""
    stq = pytest.importorskip("sentence_transformers.util.quantization")
    d, n = 77, 200  # not a multiple of 8: padding bits must be ignored
    x = rng.standard_normal((n, d)).astype(np.float32)
    calib = rng.standard_normal((300, d)).astype(np.float32)
    ranges = np.vstack((calib.min(0), calib.max(0)))
    codes = stq.quantize_embeddings(x, precision, ranges=ranges if "int8" in precision else None)
    q = rng.standard_normal((6, d)).astype(np.float32)
    cand = rng.choice(n, (6, 20), replace=True)
    if precision in ("int8", "uint8"):
        rows = stq._dequantize_embeddings(codes[cand], precision, ranges)
    else:
        u = codes.view(np.uint8) ^ np.uint8(0x80) if precision == "binary" else codes
        rows = np.unpackbits(u[cand], axis=-1)[..., :d]
    want = np.einsum("ij,ikj->ik", q, rows).astype(np.float64)
    got_s, got_i = rescore(q, codes, cand, precision=precision,
                           ranges=ranges if "int8" in precision else None)
    order = np.argsort(-want, axis=1, kind="stable")
    ws = np.take_along_axis(want, order, 1)
    # ST computes the einsum in float32 x float64 promotion; quantlib in float64
    np.testing.assert_allclose(got_s, ws, rtol=1e-6, atol=1e-5 * np.abs(q).sum())
    # same ranking wherever ST's scores are not near-tied
    gap = np.diff(ws, axis=1)
    clear = np.ones_like(ws, bool)
    clear[:, 1:] &= gap < -1e-4
    clear[:, :-1] &= gap < -1e-4
    np.testing.assert_array_equal(got_i[clear], np.take_along_axis(cand, order, 1)[clear])


def test_rescore_upstream_examples():
    """The worked examples of the upstream test-suite (binary rescoring)."""
    q = np.arange(1, 11, dtype=np.float32)  # 1..10 against an all-ones corpus of dim 10 -> 55
    ones = quantlib.quantize_embeddings(np.ones((1, 10), np.float32), "ubinary")
    s, i = rescore(q, ones, [0], precision="ubinary")
    assert s.tolist() == [55.0] and i.tolist() == [0]
    q = np.array([10.0] + [1.0] * 7)
    corpus = quantlib.quantize_embeddings(np.array([[1.0] * 8, [-1.0] + [1.0] * 7]), "binary")
    s, i = rescore(q, corpus, [1, 0], precision="binary")
    assert i.tolist() == [0, 1] and s.tolist() == [17.0, 7.0]


@pytest.mark.parametrize("precision", REG.where(kernel="hamming"))
def test_float_queries_for_packed_bits_are_quantized_by_sign(precision):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((300, 21)).astype(np.float32)
    c = quantlib.quantize_embeddings(x, precision)
    q = rng.standard_normal((4, 21))
    got = search(q, c, 7, precision=precision)
    want = search(quantlib.quantize_embeddings(q, precision), c, 7, precision=precision)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    idx = quantlib.Index(21, precision)
    idx.add(c)
    np.testing.assert_array_equal(idx.search(q, 7)[1], got[1])
