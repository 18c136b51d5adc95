"""The fused float32 top-k kernel (csrc/f32, issue 16.2).

Contract (csrc/ql_internal.h): every score is one fixed operation sequence --
16 lanes, lane L accumulating dims L, L+16, ... with fused multiply-adds from
+0, then the tree t[i] = s[i] + s[i+8], u[i] = t[i] + t[i+4], v[i] = u[i] + u[i+2],
v[0] + v[1].  Hence results are bit-identical for every level, thread count,
query block and corpus split, and are compared here with exact equality.

Accuracy against a float64 reference: lane L sums m = ceil(d / 16) exact
products with one rounding per FMA, then 4 rounded additions, so (Higham,
recursive summation) |score - exact| <= gamma_{m+4} * sum_i |q_i c_i| with
gamma_n = n u / (1 - n u), u = 2^-24.  The ranking must agree with the float64
reference wherever two scores differ by more than the sum of their bounds.
"""
import numpy as np
import pytest

import quantlib
from quantlib import _core
from quantlib.search import merge_topk

U = 2.0 ** -24
DIMS = [1, 2, 7, 15, 16, 17, 31, 32, 33, 63, 100, 383, 384, 385, 1000, 1023, 1024, 1100]


def bound(q, c):
    """(nq, nc) rounding bound of the kernel's scores."""
    d = q.shape[1]
    n = -(-d // 16) + 4
    gamma = n * U / (1 - n * U)
    return gamma * (np.abs(q.astype(np.float64)) @ np.abs(c.astype(np.float64)).T)


def ref_scores(q, c):
    return q.astype(np.float64) @ c.astype(np.float64).T


def check_ranking(q, c, vals, ids, k):
    """vals/ids (nq, min(k, n)) against the float64 reference within the bound."""
    n = c.shape[0]
    kk = min(k, n)
    assert vals.shape == ids.shape == (q.shape[0], kk)
    if kk == 0:
        return
    ref = ref_scores(q, c)
    b = bound(q, c)
    for i in range(q.shape[0]):
        got = ids[i]
        assert len(set(got.tolist())) == kk and got.min() >= 0 and got.max() < n
        # the returned scores are within the bound of the exact ones
        assert np.all(np.abs(vals[i].astype(np.float64) - ref[i, got]) <= b[i, got] * (1 + 1e-9) + 1e-300)
        # returned scores descending, equal scores by ascending id
        v = vals[i]
        assert np.all(v[:-1] >= v[1:])
        eq = v[:-1] == v[1:]
        assert np.all(got[:-1][eq] < got[1:][eq])
        # consecutive results are in reference order unless within the bounds
        assert np.all(ref[i, got[:-1]] >= ref[i, got[1:]] - (b[i, got[:-1]] + b[i, got[1:]]) * (1 + 1e-9))
        # nothing left out scores clearly above the last one kept
        out = np.setdiff1d(np.arange(n), got)
        last = got[-1]
        if out.size:
            assert np.all(ref[i, out] <= ref[i, last] + (b[i, out] + b[i, last]) * (1 + 1e-9))


def kernel(q, c, k, offset=0):
    kk = min(k, c.shape[0])
    v = np.empty((q.shape[0], kk), np.float32)
    i = np.empty((q.shape[0], kk), np.int64)
    finite = _core.f32_topk(np.ascontiguousarray(q, np.float32), np.ascontiguousarray(c, np.float32), k, offset, v, i)
    return v, i, finite


def all_levels(fn):
    prev = quantlib.get_isa()
    out = {}
    try:
        for lv in quantlib.available_isas():
            quantlib.set_isa(lv)
            out[lv] = fn()
    finally:
        quantlib.set_isa(prev)
    return out


def same(a, b):
    return np.array_equal(a[0].view(np.int32), b[0].view(np.int32)) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("d", DIMS)
def test_every_level_bit_identical_and_within_bound(d):
    rng = np.random.default_rng(d)
    for nq, n in ((1, 1), (3, 5), (7, 29), (13, 41)):
        q = rng.standard_normal((nq, d)).astype(np.float32)
        c = rng.standard_normal((n, d)).astype(np.float32)
        res = all_levels(lambda: kernel(q, c, n + 2))
        base = res["scalar"]
        assert base[2]
        for lv, r in res.items():
            assert same(r, base), (lv, d, nq, n)
        check_ranking(q, c, base[0], base[1], n + 2)


def test_scores_equal_the_scalar_contract_spelled_in_numpy():
    """The contract evaluated with numpy float32 arithmetic (np.float32 FMA via
    float64: exact product + one rounding = fma for float32 inputs)."""
    rng = np.random.default_rng(7)
    d = 53
    q = rng.standard_normal((2, d)).astype(np.float32)
    c = rng.standard_normal((9, d)).astype(np.float32)
    dp = -(-d // 16) * 16
    qp = np.zeros((2, dp), np.float32); qp[:, :d] = q
    cp = np.zeros((9, dp), np.float32); cp[:, :d] = c
    want = np.empty((2, 9), np.float32)
    for i in range(2):
        for r in range(9):
            s = np.zeros(16, np.float32)
            for j in range(0, dp, 16):
                # float32 x float32 is exact in float64, and the float64 sum of that
                # product and a float32 is rounded once to float32 -- except in
                # double-rounding corner cases, which these random data avoid
                s = (qp[i, j:j + 16].astype(np.float64) * cp[r, j:j + 16] + s).astype(np.float32)
            t = s[:8] + s[8:]
            u = t[:4] + t[4:]
            v = u[:2] + u[2:]
            want[i, r] = (v[0] + v[1]) + np.float32(0)
    for lv, (vals, ids, _) in all_levels(lambda: kernel(q, c, 9)).items():
        got = np.empty_like(want)
        np.put_along_axis(got, ids, vals, axis=1)
        assert np.array_equal(got.view(np.int32), want.view(np.int32)), lv


def test_ties_to_the_lower_index(isa):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((5, 40)).astype(np.float32)
    c = np.concatenate([base, base, base[::-1]])  # every row three times
    q = rng.standard_normal((4, 40)).astype(np.float32)
    v, i = quantlib.search(q, c, 15, precision="float32")
    for r in range(4):
        eq = v[r][:-1] == v[r][1:]
        assert np.all(i[r][:-1][eq] < i[r][1:][eq])
    # an all-zero query: every score +0 (never -0), the lowest k ids
    v, i = quantlib.search(np.zeros(40, np.float32), -c, 4, precision="float32")
    assert np.array_equal(i, [0, 1, 2, 3]) and np.all(v.view(np.int32) == 0)


def test_negative_zero_products_score_plus_zero(isa):
    q = np.array([[-1.0, 0.0, 2.0]], np.float32)
    c = np.array([[0.0, 5.0, 0.0], [1.0, 0.0, 0.5], [0.0, -0.0, -0.0]], np.float32)
    v, i = quantlib.search(q, c, 3, precision="float32")
    assert np.array_equal(i[0], [0, 1, 2]) and np.all(v.view(np.int32) == 0)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 31])
@pytest.mark.parametrize("k", [1, 3, 40])
def test_small_corpora_and_k_above_n(isa, n, k):
    rng = np.random.default_rng(n * 100 + k)
    d = 19
    q = rng.standard_normal((3, d)).astype(np.float32)
    c = rng.standard_normal((n, d)).astype(np.float32)
    v, i = quantlib.search(q, c, k, precision="float32")
    assert v.shape == i.shape == (3, min(k, n)) and v.dtype == np.float32 and i.dtype == np.int64
    check_ranking(q, c, v, i, k)
    v1, i1 = quantlib.search(q[0], c, k, precision="float32")
    assert same((v1[None], i1[None]), (v[:1], i[:1]))


def test_no_queries():
    c = np.ones((4, 8), np.float32)
    v, i = quantlib.search(np.empty((0, 8), np.float32), c, 2, precision="float32")
    assert v.shape == i.shape == (0, 2)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_identical_for_every_thread_count(threads):
    rng = np.random.default_rng(11)
    c = rng.standard_normal((5003, 100)).astype(np.float32)
    for nq in (1, 5, 61):  # corpus split (few queries) and query split (many)
        q = rng.standard_normal((nq, 100)).astype(np.float32)
        want = quantlib.search(q, c, 10, precision="float32", threads=1)
        got = quantlib.search(q, c, 10, precision="float32", threads=threads)
        assert same(got, want)


@pytest.mark.parametrize("seed", range(6))
def test_shards_at_arbitrary_boundaries_merge_to_one_call(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(50, 3000)), int(rng.integers(1, 300))
    c = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((int(rng.integers(1, 20)), d)).astype(np.float32)
    k = int(rng.integers(1, 30))
    want = quantlib.search(q, c, k, precision="float32")
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, int(rng.integers(1, 6))), replace=False))
    bounds = [0, *cuts.tolist(), n]
    vs, ids = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        v, i = quantlib.search(q, c[a:b], k, precision="float32")
        vs.append(v)
        ids.append(i + a)
    got = merge_topk(np.concatenate(vs, axis=1), np.concatenate(ids, axis=1), k, descending=True)
    assert same(got, want)


def test_query_blocks_beyond_1024_and_tile_boundaries(isa):
    """More queries than one C query block, a corpus over several corpus tiles."""
    rng = np.random.default_rng(5)
    d = 24 if isa == "scalar" else 300
    n = 900 if isa == "scalar" else 2500
    c = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((1030, d)).astype(np.float32)
    v, i = quantlib.search(q, c, 5, precision="float32", threads=1)
    # every query alone gives the same answer (other block positions, no tile copy)
    for r in (0, 5, 1023, 1024, 1029):
        v1, i1 = quantlib.search(q[r], c, 5, precision="float32", threads=1)
        assert same((v1[None], i1[None]), (v[r:r + 1], i[r:r + 1]))
    check_ranking(q[:40], c, v[:40], i[:40], 5)


def test_strided_and_readonly_inputs():
    rng = np.random.default_rng(2)
    c = rng.standard_normal((300, 64)).astype(np.float32)
    q = rng.standard_normal((6, 64)).astype(np.float32)
    want = quantlib.search(q, c, 7, precision="float32")
    cf = np.asfortranarray(c)
    ro = c.copy()
    ro.flags.writeable = False
    assert same(quantlib.search(q, cf, 7, precision="float32"), want)
    assert same(quantlib.search(q, ro, 7, precision="float32"), want)
    assert same(quantlib.search(q.astype(np.float64), c.astype(np.float64), 7, precision="float32"), want)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_corpus_raises(isa, bad):
    c = np.ones((70, 20), np.float32)
    c[37, 3] = bad
    with pytest.raises(ValueError, match=r"corpus contains NaN or infinite values \(e.g. row 37\)"):
        quantlib.search(np.ones((2, 20), np.float32), c, 3, precision="float32")


def test_overflow_raises(isa):
    q = np.full((1, 16), 3e38, np.float32)
    c = -np.ones((40, 16), np.float32)
    with pytest.raises(ValueError, match="float32 inner products overflowed"):
        quantlib.search(q, c, 2, precision="float32")
    # a partial sum that overflows although the exact score would not
    c2 = np.zeros((3, 32), np.float32)
    c2[1, 0], c2[1, 16] = 1.0, 1.0
    q2 = np.zeros(32, np.float32)
    q2[0] = q2[16] = 3e38
    with pytest.raises(ValueError, match="overflowed"):
        quantlib.search(q2, c2, 1, precision="float32")


def test_kernel_reports_nonfinite_flag():
    c = np.ones((10, 5), np.float32)
    c[4, 0] = np.nan
    assert kernel(np.ones((1, 5), np.float32), c, 3)[2] is False
    assert kernel(np.ones((1, 5), np.float32), np.ones((10, 5), np.float32), 3)[2] is True


def test_float_key_mapping_orders_extremes(isa):
    """Scores near the float32 range, subnormal scores: the int32 key keeps the order."""
    q = np.array([[1.0]], np.float32)
    vals = np.array([3e38, -3e38, 1e-45, -1e-45, 0.0, 1.0, -1.0, 2e38, 1e-40], np.float32)
    v, i = quantlib.search(q, vals[:, None], len(vals), precision="float32")
    order = np.lexsort((np.arange(len(vals)), -vals.astype(np.float64)))
    assert np.array_equal(i[0], order)
    assert np.array_equal(v[0].view(np.int32), vals[order].view(np.int32))
