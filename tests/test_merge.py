"""Hypothesis properties of quantlib.merge_topk, the one merge used by the
thread split of search() and by the sharded (Dask) search: merging the
per-part top-k of any partition of the candidates gives the top-k of the
whole, ordered by value then lower id. Pure numpy: no Dask needed."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantlib import merge_topk

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

I32 = np.iinfo(np.int32)
# small alphabets: ties are the common case; the extremes check the int64 widening / inf handling
INT_VALUES = st.sampled_from([0, 1, 2, 3, I32.min, I32.max, -1]) | st.integers(-5, 5)
FLOAT_VALUES = st.sampled_from([0.0, -0.0, 1.5, -2.25, np.inf, -np.inf]) | st.integers(-3, 3).map(float)


def reference_topk(values, ids, k, descending):
    """Sort every row by (value, id) with numpy's lexsort, keep k."""
    key = -values.astype(np.float64) if descending else values.astype(np.float64)
    order = np.lexsort((ids, key), axis=-1)[:, :k]
    return np.take_along_axis(values, order, 1), np.take_along_axis(ids, order, 1)


@st.composite
def candidates(draw):
    q = draw(st.integers(1, 3))
    m = draw(st.integers(0, 40))
    is_int = draw(st.booleans())
    vals = draw(st.lists(INT_VALUES if is_int else FLOAT_VALUES, min_size=q * m, max_size=q * m))
    values = np.array(vals, dtype=np.int32 if is_int else np.float32).reshape(q, m)
    # ids: distinct per row (as global rows are), not sorted, not contiguous
    ids = np.stack([np.array(draw(st.permutations(range(0, 3 * m, 3))), dtype=np.int64).reshape(m)
                    for _ in range(q)]) if m else np.empty((q, 0), np.int64)
    cuts = sorted(draw(st.lists(st.integers(0, m), max_size=5)))  # repeated cuts -> empty parts
    k = draw(st.integers(1, 50))  # often > m
    descending = draw(st.booleans())
    return values, ids, cuts, k, descending


@SETTINGS
@given(candidates())
def test_merge_of_any_partition_equals_topk_of_whole(case):
    values, ids, cuts, k, descending = case
    want_v, want_i = reference_topk(values, ids, k, descending)
    got_v, got_i = merge_topk(values, ids, k, descending=descending)
    np.testing.assert_array_equal(got_v, want_v)
    np.testing.assert_array_equal(got_i, want_i)
    assert got_v.dtype == values.dtype and got_i.dtype == np.int64
    assert got_v.shape == (values.shape[0], min(k, values.shape[1]))
    # per-part top-k (each part keeps at most k), concatenated, merged again
    bounds = [0] + cuts + [values.shape[1]]
    parts = [merge_topk(values[:, a:b], ids[:, a:b], k, descending=descending) for a, b in zip(bounds, bounds[1:])]
    mv, mi = merge_topk(np.concatenate([p[0] for p in parts], axis=1),
                        np.concatenate([p[1] for p in parts], axis=1), k, descending=descending)
    np.testing.assert_array_equal(mv, want_v)
    np.testing.assert_array_equal(mi, want_i)


@SETTINGS
@given(candidates())
def test_ties_go_to_the_lower_id(case):
    values, ids, _, k, descending = case
    v, i = merge_topk(values, ids, k, descending=descending)
    for row_v, row_i in zip(v, i):
        for a in range(len(row_v) - 1):
            if row_v[a] == row_v[a + 1]:
                assert row_i[a] < row_i[a + 1]
            elif descending:
                assert row_v[a] > row_v[a + 1]
            else:
                assert row_v[a] < row_v[a + 1]


@SETTINGS
@given(candidates())
def test_merge_is_idempotent_and_order_free(case):
    values, ids, _, k, descending = case
    v, i = merge_topk(values, ids, k, descending=descending)
    v2, i2 = merge_topk(v, i, k, descending=descending)
    np.testing.assert_array_equal(v2, v)
    np.testing.assert_array_equal(i2, i)
    # shuffling the candidate columns changes nothing
    perm = np.random.default_rng(values.shape[1]).permutation(values.shape[1])
    v3, i3 = merge_topk(values[:, perm], ids[:, perm], k, descending=descending)
    np.testing.assert_array_equal(v3, v)
    np.testing.assert_array_equal(i3, i)


def test_merge_shard_results_of_search_equals_whole_search():
    """The distributed code path in miniature: quantlib.search on contiguous
    parts with row offsets, merged, equals search on the whole."""
    import quantlib

    rng = np.random.default_rng(3)
    x = quantlib.quantize_embeddings(rng.standard_normal((257, 16)), "ubinary")  # 16 bits: many ties
    x[200] = x[3]  # the same code on both sides of a boundary
    q = x[[3, 10, 200]]
    whole = quantlib.search(q, x, 9, precision="ubinary")
    bounds = [0, 0, 3, 4, 200, 257]
    parts = []
    for a, b in zip(bounds, bounds[1:]):
        if b > a:
            v, i = quantlib.search(q, x[a:b], 9, precision="ubinary")
            parts.append((v, i + a))
    mv, mi = merge_topk(np.concatenate([p[0] for p in parts], 1), np.concatenate([p[1] for p in parts], 1), 9,
                        descending=False)
    np.testing.assert_array_equal(mv, whole[0])
    np.testing.assert_array_equal(mi, whole[1])


@pytest.mark.parametrize("bad_k", [0, -1, 1.5, True])
def test_merge_rejects_bad_k(bad_k):
    with pytest.raises((TypeError, ValueError), match="k"):
        merge_topk(np.zeros((1, 3)), np.arange(3)[None], bad_k, descending=True)


def test_merge_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        merge_topk(np.zeros((2, 3)), np.zeros((2, 4), np.int64), 2, descending=True)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_long_rows_select_then_sort_path(dtype, descending, k):
    """Rows much longer than k take the partition + survivors path: it must
    equal a full (value, id) sort, with heavy ties at the threshold, repeated
    ids, NaN rows (full-sort fallback) and rows where every value ties."""
    rng = np.random.default_rng(k * 7 + descending)
    q, m = 9, 700
    if np.dtype(dtype).kind == "f":
        values = rng.integers(-4, 5, (q, m)).astype(dtype)
        values[1, ::7] = np.inf
        values[2, ::5] = -np.inf
        values[3, 10] = np.nan  # NaN sorts last in both orders (as lexsort puts it)
        values[4, :] = -0.0
        values[4, ::2] = 0.0
    else:
        info = np.iinfo(dtype)
        values = rng.choice(np.array([info.min, 0, 1, 2, info.max], dtype=dtype), size=(q, m))
    values[5, :] = values[5, 0]  # one value everywhere: ids decide
    ids = rng.integers(0, 300, (q, m)).astype(np.int64)  # repeated ids too
    variants = [values]
    if np.dtype(dtype).kind == "f":  # any NaN sends the whole batch to the full sort: test both paths
        clean = values.copy()
        clean[3, 10] = 1
        variants.append(clean)
    for values in variants:
        got_v, got_i = merge_topk(values, ids, k, descending=descending)
        if np.dtype(dtype).kind == "f":
            key = -values if descending else values
        else:
            key = -values.astype(object) if descending else values.astype(object)  # exact, no wrap
        for r in range(q):
            order = sorted(range(m), key=lambda j: (np.isnan(values[r, j]), key[r, j] if not np.isnan(values[r, j])
                                                    else 0, ids[r, j]))[:k]
            np.testing.assert_array_equal(got_i[r], ids[r, order])
            np.testing.assert_array_equal(got_v[r], values[r, order])
