"""quantlib.Index: search vs brute force, ids, save/load round trips (mmap and
not), thread safety, and a Hypothesis state machine against a plain list."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import quantlib
from quantlib import _precision as REG
from quantlib import Index, load_index

PRECISIONS = list(REG.NAMES)  # every registered precision


# ------------------------------------------------------------------ reference
def brute_force(precision, q, codes, ids, k):
    """Exact top-k with numpy: (values, ids); ties to the lower row."""
    q = np.atleast_2d(q)
    n = len(codes)
    if precision in ("binary", "ubinary"):
        uq = np.unpackbits(q.view(np.uint8), axis=1).astype(np.int64)
        uc = np.unpackbits(codes.view(np.uint8), axis=1).astype(np.int64)
        vals = (uq[:, None, :] != uc[None, :, :]).sum(-1)
        keys = vals
    elif precision == "float32":
        vals = q.astype(np.float32) @ codes.astype(np.float32).T
        keys = -vals.astype(np.float64)
    else:
        vals = q.astype(np.int64) @ codes.astype(np.int64).T
        keys = -vals
    kk = min(k, n)
    out_v, out_i = [], []
    for i in range(len(q)):
        o = np.lexsort((np.arange(n), keys[i]))[:kk]
        out_v.append(vals[i][o])
        out_i.append(np.asarray(ids, np.int64)[o])
    return np.array(out_v).reshape(len(q), kk), np.array(out_i, np.int64).reshape(len(q), kk)


def make(precision, n=300, d=37, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    ranges = quantlib.calibration_ranges(x) if precision.endswith("int8") else None
    return x, ranges


# ------------------------------------------------------------------ basics
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("with_ids", [False, True])
def test_search_matches_brute_force(precision, with_ids):
    x, ranges = make(precision)
    idx = Index(x.shape[1], precision, ranges)
    ids = np.random.default_rng(1).permutation(len(x)) * 7919 + 10 ** 12 if with_ids else None
    idx.add(x[:100], ids=None if ids is None else ids[:100])
    idx.add(x[100:], ids=None if ids is None else ids[100:])
    codes = quantlib.quantize_embeddings(x, precision, ranges=ranges)
    np.testing.assert_array_equal(idx.codes, codes)
    q = np.random.default_rng(2).standard_normal((9, x.shape[1])).astype(np.float32)
    qc = quantlib.quantize_embeddings(q, precision, ranges=ranges)
    expect_ids = np.arange(len(x)) if ids is None else ids
    for k in (1, 10, 1000):
        v, i = idx.search(q, k)
        rv, ri = brute_force(precision, qc, codes, expect_ids, k)
        np.testing.assert_array_equal(i, ri)
        if precision == "float32":
            np.testing.assert_allclose(v, rv, rtol=1e-5, atol=1e-4)
        else:
            np.testing.assert_array_equal(v, rv)
    v1, i1 = idx.search(q[0], 5)
    v2, i2 = idx.search(q[:1], 5)
    assert v1.ndim == 1 and np.array_equal(i1, i2[0]) and np.array_equal(v1, v2[0])
    np.testing.assert_array_equal(idx.ids, expect_ids)


@pytest.mark.parametrize("precision", [n for n in REG.NAMES if not REG.PRECISIONS[n].is_float])
def test_codes_taken_as_they_are_and_sibling_dtype(precision):
    x, ranges = make(precision, n=50)
    codes = quantlib.quantize_embeddings(x, precision, ranges=ranges)
    a = Index(x.shape[1], precision, ranges)
    a.add(codes)
    b = Index(x.shape[1], precision)  # no ranges: codes only
    sibling = (codes.view(np.uint8) ^ np.uint8(0x80)).view(np.uint8 if codes.dtype == np.int8 else np.int8)
    b.add(sibling)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.codes, codes)
    assert a.search(codes[:3], 4)[1].tolist() == b.search(codes[:3], 4)[1].tolist()


def test_errors():
    idx = Index(16, "int8")
    with pytest.raises(ValueError, match="no ranges"):
        idx.add(np.ones((2, 16), np.float32))
    with pytest.raises(ValueError, match="dims"):
        idx.add(np.ones((2, 15), np.int8))
    with pytest.raises(ValueError, match="ids"):
        idx.add(np.ones((2, 16), np.int8), ids=[1, 2, 3])
    with pytest.raises(TypeError):
        idx.add(np.ones((2, 16), np.int8), ids=[1.5, 2.5])
    with pytest.raises(ValueError, match="precision"):
        Index(16, "float16")
    with pytest.raises(ValueError, match="ranges only apply"):
        Index(16, "ubinary", ranges=np.zeros((2, 16)))
    b = Index(20, "ubinary")
    with pytest.raises(ValueError, match="bytes"):
        b.add(np.ones((1, 30), np.float32))
    with pytest.raises(ValueError, match="17 dims but the index has 20"):
        b.add(np.ones((1, 17), np.float32))  # same 3 packed bytes, but padding bits would be counted
    b.add(np.ones((1, 20), np.float32))
    b.add(np.ones((1, 3), np.uint8))  # codes are taken by their byte width
    with pytest.raises(TypeError):
        Index(4, "float32").add(np.ones((1, 4), np.int8))
    with pytest.raises(ValueError):
        b.search(np.ones((1, 3), np.uint8), 0)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("with_ids", [False, True])
def test_save_load_roundtrip(tmp_path, precision, with_ids):
    x, ranges = make(precision, n=200)
    idx = Index(x.shape[1], precision, ranges)
    idx.add(x, ids=np.arange(len(x)) * 3 + 1 if with_ids else None)
    path = tmp_path / "r.qlx"
    idx.save(path)
    q = np.random.default_rng(5).standard_normal((7, x.shape[1])).astype(np.float32)
    want = idx.search(q, 9)
    for mmap in (True, False):
        j = load_index(path, mmap=mmap)
        assert isinstance(j, Index) and len(j) == len(idx) and j.precision == precision and j.dim == idx.dim
        assert j.is_mmap == mmap
        if ranges is not None:
            np.testing.assert_array_equal(j.ranges, idx.ranges)
        got = j.search(q, 9)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        if mmap:
            assert isinstance(j._snapshot()[0], np.memmap)  # searched in place, not loaded
            with pytest.raises(ValueError, match="read-only"):
                j.add(x[:1])
        else:
            j.add(x[:5])
            assert len(j) == len(idx) + 5


def test_mmap_search_does_not_copy_corpus(tmp_path, monkeypatch):
    x, _ = make("ubinary", n=1000, d=256)
    idx = Index(256, "ubinary")
    idx.add(x)
    idx.save(tmp_path / "m.qlx")
    j = load_index(tmp_path / "m.qlx", mmap=True)
    import sys

    S = sys.modules["quantlib.search"]  # the package attribute `search` is the function

    seen = {}
    real = S._kernel_topk

    def spy(q, c, k, precision, threads):
        seen["mapped"] = isinstance(c, np.memmap) or isinstance(getattr(c, "base", None), np.memmap) \
            or np.shares_memory(c, j._buf)
        return real(q, c, k, precision, threads)

    monkeypatch.setattr(S, "_kernel_topk", spy)
    j.search(x[:2], 5)
    assert seen["mapped"]
    mu = j.memory_usage()
    assert mu["resident_bytes"] == 0 and mu["mapped_bytes"] == 1000 * 32


# ------------------------------------------------------------------ threads
def test_concurrent_search_identical():
    x, _ = make("ubinary", n=3000, d=256)
    idx = Index(256, "ubinary")
    idx.add(x)
    q = x[:64]
    want = idx.search(q, 10, threads=1)
    results = [None] * 8

    def worker(t):
        results[t] = idx.search(q, 10, threads=2)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    for v, i in results:
        np.testing.assert_array_equal(v, want[0])
        np.testing.assert_array_equal(i, want[1])


def test_add_while_searching_sees_consistent_prefix():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4000, 64)).astype(np.float32)
    codes = quantlib.quantize_embeddings(x, "ubinary")
    idx = Index(64, "ubinary")
    idx.add(codes[:100])
    q = codes[:4]
    errors = []
    stop = threading.Event()

    def searcher():
        while not stop.is_set():
            try:
                v, i = idx.search(q, 5)
                # every hit must be a row that exists and have its true distance
                n_seen = int(i.max()) + 1
                rv, ri = brute_force("ubinary", q, codes[:max(n_seen, 100)], np.arange(max(n_seen, 100)), 5)
                np.testing.assert_array_equal(v, rv[:, : v.shape[1]])
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)
                return

    ts = [threading.Thread(target=searcher) for _ in range(3)]
    [t.start() for t in ts]
    for s in range(100, 4000, 100):
        idx.add(codes[s: s + 100])
    stop.set()
    [t.join() for t in ts]
    assert not errors, errors[0]
    assert len(idx) == 4000


# ------------------------------------------------------------------ stateful model
class IndexModel(RuleBasedStateMachine):
    """Index vs a brute-force list of (code, id) under add/search/save/load."""

    precision = "ubinary"
    dim = 19

    def __init__(self):
        super().__init__()
        self.rows: list = []
        self.ids: list = []
        self.readonly = False
        self.ranges = None
        self._dir = None

    @initialize()
    def setup(self):
        import tempfile

        self._dir = tempfile.mkdtemp(prefix="qlx-model-")
        if self.precision.endswith("int8"):
            self.ranges = np.vstack([-np.ones(self.dim), np.ones(self.dim)]).astype(np.float32)
        self.index = Index(self.dim, self.precision, self.ranges)

    def _codes(self, seed, m):
        x = np.random.default_rng(seed).standard_normal((m, self.dim)).astype(np.float32)
        return x, quantlib.quantize_embeddings(x, self.precision, ranges=self.ranges)

    @rule(seed=st.integers(0, 2 ** 16), m=st.integers(0, 12), explicit=st.booleans(), as_float=st.booleans())
    def add(self, seed, m, explicit, as_float):
        x, codes = self._codes(seed, m)
        ids = (np.arange(m) * 1000 + seed) if explicit else None
        if self.readonly:
            with pytest.raises(ValueError, match="read-only"):
                self.index.add(x if as_float else codes, ids=ids)
            return
        n = len(self.rows)
        self.index.add(x if as_float else codes, ids=ids)
        self.rows.extend(codes)
        self.ids.extend(ids.tolist() if ids is not None else range(n, n + m))

    @rule(seed=st.integers(0, 2 ** 16), k=st.integers(1, 20))
    def search(self, seed, k):
        x, qc = self._codes(seed + 1, 3)
        v, i = self.index.search(x, k)
        if not self.rows:
            assert v.shape == (3, 0) and i.shape == (3, 0)
            return
        rv, ri = brute_force(self.precision, qc, np.array(self.rows), self.ids, k)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_array_equal(v, rv)

    @rule(mmap=st.booleans())
    def save_load(self, mmap):
        path = f"{self._dir}/m.qlx"
        self.index.save(path)
        self.index = load_index(path, mmap=mmap)
        self.readonly = mmap

    @invariant()
    def length(self):
        if hasattr(self, "index"):
            assert len(self.index) == len(self.rows)

    def teardown(self):
        import shutil

        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


_SETTINGS = settings(max_examples=25, stateful_step_count=12, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
TestIndexModelUbinary = IndexModel.TestCase
TestIndexModelUbinary.settings = _SETTINGS


class IndexModelInt8(IndexModel):
    precision = "int8"
    dim = 9


TestIndexModelInt8 = IndexModelInt8.TestCase
TestIndexModelInt8.settings = _SETTINGS


@pytest.mark.parametrize("precision", PRECISIONS)
def test_similarity_is_one_scale(precision):
    """similarity=True: float64, higher is better, comparable across precisions."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((400, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rec = REG.PRECISIONS[precision]
    idx = Index(64, precision, quantlib.calibration_ranges(x) if rec.needs_ranges else None)
    idx.add(x)
    q = x[:6]
    raw_v, raw_i = idx.search(q, 8)
    v, i = idx.search(q, 8, similarity=True)
    assert v.dtype == np.float64
    assert (np.diff(v, axis=1) <= 0).all()
    if precision != "uint8":  # the raw 0..255 code dot product favours large codes: a row need not find itself
        assert (i[:, 0] == np.arange(6)).all() and (v[:, 0] > 0.9).all()  # each query finds itself, near 1
    assert (v <= 1.0 + 0.05).all() and (v >= -1.05).all()
    if rec.is_bits:
        np.testing.assert_array_equal(i, raw_i)
        np.testing.assert_array_equal(v, 1 - 2 * raw_v / 64)
    elif rec.is_float:
        np.testing.assert_array_equal(v, raw_v.astype(np.float64))
    else:  # the same hits, re-ordered by the dequantized dot product, computed like numpy would
        assert set(map(tuple, np.sort(i, axis=1))) == set(map(tuple, np.sort(raw_i, axis=1)))
        deq = quantlib.dequantize_embeddings(idx.codes, precision, idx.ranges)
        want = np.einsum("qd,qkd->qk", q.astype(np.float64), deq[i])
        np.testing.assert_allclose(v, want, rtol=1e-12, atol=1e-12)
        codes_q = quantlib.quantize_embeddings(q, precision, ranges=idx.ranges)
        v2, i2 = idx.search(codes_q, 8, similarity=True)
        deq_q = quantlib.dequantize_embeddings(codes_q, precision, idx.ranges)
        np.testing.assert_allclose(v2, np.einsum("qd,qkd->qk", deq_q, deq[i2]), rtol=1e-12, atol=1e-12)


def test_similarity_errors():
    idx = Index(8, "int8")
    idx.add(np.zeros((3, 8), np.int8))
    with pytest.raises(ValueError, match="needs its ranges"):
        idx.search(np.zeros((1, 8), np.int8), 2, similarity=True)
    with pytest.raises(TypeError, match="similarity must be True or False"):
        idx.search(np.zeros((1, 8), np.int8), 2, similarity="yes")
