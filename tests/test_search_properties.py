"""Hypothesis properties of the Hamming metric and of search() against the
numpy oracle, on random small shapes (bounded examples: the file runs in a
few seconds)."""
import numpy as np
from reference import bitwise_count as _ref_bitwise_count
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import quantlib
from helpers import use_isa
from quantlib import hamming_distance, int8_dot, search

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def code_matrix(draw, min_rows=1, max_rows=12, nbytes=None, dtype=np.uint8):
    if nbytes is None:
        nbytes = draw(st.integers(1, 80))
    n = draw(st.integers(min_rows, max_rows))
    # small alphabets make ties and equal rows common
    elems = st.sampled_from([0, 1, 0x80, 0xFF, 0x55]) | st.integers(0, 255)
    a = draw(arrays(np.uint8, (n, nbytes), elements=elems))
    return a.view(dtype)


@st.composite
def three_codes(draw):
    nbytes = draw(st.integers(1, 80))
    return draw(code_matrix(min_rows=3, max_rows=3, nbytes=nbytes))


def _ref(q, c):
    return _ref_bitwise_count(q.view(np.uint8)[:, None, :] ^ c.view(np.uint8)[None, :, :]).sum(-1)


isa_st = st.sampled_from(quantlib.available_isas())


def _with_isa(isa, fn):
    with use_isa(isa):
        return fn()


@SETTINGS
@given(code_matrix(), isa_st)
def test_self_distance_zero_and_symmetry(x, isa):
    d = _with_isa(isa, lambda: hamming_distance(x, x))
    assert (np.diag(d) == 0).all()
    np.testing.assert_array_equal(d, d.T)
    assert (d >= 0).all() and (d <= x.shape[1] * 8).all()


@SETTINGS
@given(three_codes(), isa_st)
def test_triangle_inequality(x, isa):
    d = _with_isa(isa, lambda: hamming_distance(x, x))
    a, b, c = 0, 1, 2
    assert d[a, c] <= d[a, b] + d[b, c]
    assert d[a, b] <= d[a, c] + d[c, b]
    assert d[b, c] <= d[b, a] + d[a, c]


@SETTINGS
@given(code_matrix(max_rows=20), st.data())
def test_binary_equals_ubinary(u, data):
    q = u[: data.draw(st.integers(1, len(u)))]
    k = data.draw(st.integers(1, len(u) + 3))
    b = (u ^ np.uint8(0x80)).view(np.int8)  # the binary codes of the same bits
    qb = (q ^ np.uint8(0x80)).view(np.int8)
    du, iu = search(q, u, k, precision="ubinary")
    db, ib = search(qb, b, k, precision="binary")
    np.testing.assert_array_equal(du, db)
    np.testing.assert_array_equal(iu, ib)
    np.testing.assert_array_equal(hamming_distance(qb, b), hamming_distance(q, u))
    np.testing.assert_array_equal(hamming_distance(qb, u), hamming_distance(q, u))


@SETTINGS
@given(st.data(), isa_st)
def test_search_hamming_matches_reference(data, isa):
    nbytes = data.draw(st.integers(1, 70))
    c = data.draw(code_matrix(min_rows=0, max_rows=40, nbytes=nbytes))
    q = data.draw(code_matrix(min_rows=0, max_rows=6, nbytes=nbytes))
    k = data.draw(st.integers(1, 50))
    threads = data.draw(st.sampled_from([1, 2, 3]))
    d, i = _with_isa(isa, lambda: search(q, c, k, precision="ubinary", threads=threads))
    keys = _ref(q, c)
    kk = min(k, len(c))
    assert d.shape == i.shape == (len(q), kk)
    order = np.argsort(keys, axis=1, kind="stable")[:, :kk]
    np.testing.assert_array_equal(i, order)
    np.testing.assert_array_equal(d, np.take_along_axis(keys, order, axis=1))


@SETTINGS
@given(st.data(), isa_st, st.sampled_from(["int8", "uint8"]))
def test_search_dot_matches_reference(data, isa, precision):
    dt = np.int8 if precision == "int8" else np.uint8
    d = data.draw(st.integers(1, 300))
    lo, hi = (-128, 127) if dt == np.int8 else (0, 255)
    elems = st.sampled_from([lo, hi, 0, 1, -1 if lo < 0 else 2]) | st.integers(lo, hi)
    c = data.draw(arrays(dt, (data.draw(st.integers(0, 30)), d), elements=elems))
    q = data.draw(arrays(dt, (data.draw(st.integers(1, 5)), d), elements=elems))
    k = data.draw(st.integers(1, 35))
    s, i = _with_isa(isa, lambda: search(q, c, k, precision=precision))
    keys = q.astype(np.int64) @ c.astype(np.int64).T
    kk = min(k, len(c))
    order = np.argsort(-keys, axis=1, kind="stable")[:, :kk]
    np.testing.assert_array_equal(i, order)
    np.testing.assert_array_equal(s, np.take_along_axis(keys, order, axis=1))
    np.testing.assert_array_equal(_with_isa(isa, lambda: int8_dot(q, c)), keys)


@SETTINGS
@given(st.data())
def test_merge_topk_matches_full_sort(data):
    """Splitting a row of distances anywhere and merging the partial top-k lists
    gives the global top-k (what the threaded corpus split relies on)."""
    n = data.draw(st.integers(1, 60))
    vals = np.array(data.draw(st.lists(st.integers(-2**31, 2**31 - 1) | st.integers(0, 5),
                                       min_size=n, max_size=n)), np.int32)[None, :]
    k = data.draw(st.integers(1, n + 2))
    desc = data.draw(st.booleans())
    cut = data.draw(st.integers(0, n))
    ids = np.arange(n, dtype=np.int64)[None, :]
    parts = [quantlib.merge_topk(vals[:, a:b], ids[:, a:b], k, descending=desc)
             for a, b in ((0, cut), (cut, n))]
    mv, mi = quantlib.merge_topk(np.concatenate([p[0] for p in parts], 1),
                                 np.concatenate([p[1] for p in parts], 1), k, descending=desc)
    key = -vals.astype(np.int64) if desc else vals.astype(np.int64)
    order = np.argsort(key, axis=1, kind="stable")[:, : min(k, n)]
    np.testing.assert_array_equal(mi, order)
    np.testing.assert_array_equal(mv, np.take_along_axis(vals, order, axis=1))
