"""Parity of quantlib's semantic_search_faiss / semantic_search_usearch with
the real sentence-transformers 6.2 functions (faiss / usearch backends), and
of semantic_search with numpy references.

Data are "planted" so that no two relevant scores are near-tied: for every
query, 24 corpus documents are copies of it with 0, 1, 2, ... signs flipped
(so Hamming distances 0..23 are distinct and every similarity decreases with
each flip), plus random documents far from every query. Each test also
asserts, on a numpy reference, that the scores it compares are separated.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

import quantlib
from quantlib.util import quantization as QL

st_q = pytest.importorskip("sentence_transformers.util.quantization")
faiss = pytest.importorskip("faiss")
usearch = pytest.importorskip("usearch")

FAISS_PRECISIONS = ["float32", "uint8", "ubinary"]
USEARCH_PRECISIONS = ["float32", "int8", "ubinary", "binary"]
D = 100  # not a multiple of 8
M = 24  # planted neighbours per query


def planted(nq=5, d=D, m=M, extra=80, seed=0):
    rng = np.random.default_rng(seed)
    q = (rng.choice([-1.0, 1.0], size=(nq, d)) * rng.uniform(0.5, 1.5, size=(nq, d))).astype(np.float32)
    docs = []
    for i in range(nq):
        perm = rng.permutation(d)
        for j in range(m):
            v = q[i] * rng.uniform(0.98, 1.02, size=d)
            v[perm[:j]] *= -1
            docs.append(v)
    docs.append(rng.standard_normal((extra, d)))
    corpus = np.vstack(docs).astype(np.float32)
    corpus = corpus[rng.permutation(len(corpus))]
    return q, corpus


def ids_scores(res):
    return ([[h["corpus_id"] for h in r] for r in res], [np.array([h["score"] for h in r], np.float64) for r in res])


def assert_same(a, b, rtol=1e-5, atol=1e-5):
    ia, sa = ids_scores(a)
    ib, sb = ids_scores(b)
    assert ia == ib
    for x, y in zip(sa, sb):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# ------------------------------------------------------------- numpy reference
def unpack(codes, d):
    return np.unpackbits(codes.view(np.uint8), axis=-1)[..., :d].astype(np.float64)


def dequant(codes, precision, ranges):
    r = ranges.astype(np.float32)
    steps = (r[1] - r[0]) / np.float32(255)
    steps = np.where(steps == 0, np.float32(1), steps)
    v = codes.astype(np.float64) + (128 if precision == "int8" else 0)
    return v * steps + r[0]


def stage1(backend, precision, qc, cc, d):
    """(keys ascending-is-better, displayed score) of every corpus row."""
    if precision in ("binary", "ubinary"):
        h = (unpack(qc, cc.shape[1] * 8)[:, None, :] != unpack(cc, cc.shape[1] * 8)[None]).sum(-1).astype(np.float64)
        return h, h
    if precision == "float32":
        if backend == "usearch":
            qn = qc / np.linalg.norm(qc.astype(np.float64), axis=1, keepdims=True)
            cn = cc / np.linalg.norm(cc.astype(np.float64), axis=1, keepdims=True)
            dist = 1 - qn @ cn.T
            return dist, dist
        s = qc.astype(np.float64) @ cc.astype(np.float64).T
        return -s, s
    s = qc.astype(np.int64) @ cc.astype(np.int64).T
    if backend == "usearch":
        return -s.astype(np.float64), 1.0 - s
    return -s.astype(np.float64), s.astype(np.float64)


def reference(backend, precision, q, corpus_codes, top_k, rescore, mult, ranges, tol=1e-4):
    """Expected [[(id, score)]], asserting the data has no near-ties where it matters."""
    d = q.shape[1]
    if precision == "float32":
        qc = q.astype(np.float32)
    else:
        qc = quantlib.quantize_embeddings(q, precision, ranges=ranges if precision.endswith("int8") else None)
    keys, shown = stage1(backend, precision, qc, corpus_codes, d)
    n = corpus_codes.shape[0]
    do_rescore = rescore and precision != "float32"
    k1 = min(n, top_k * mult if do_rescore else top_k)
    out = []
    for i in range(len(q)):
        order = np.lexsort((np.arange(n), keys[i]))
        srt = keys[i][order]
        gaps_upto = min(n, k1 + 1)
        if not do_rescore:
            assert np.all(np.diff(srt[:gaps_upto]) > tol), "near-tie in the reference (bad test data)"
            out.append([(int(j), float(shown[i, j])) for j in order[:k1]])
            continue
        if k1 < n:
            assert srt[k1] - srt[k1 - 1] > tol, "near-tie at the candidate boundary (bad test data)"
        cand = order[:k1]
        if precision in ("binary", "ubinary"):
            bits = corpus_codes[cand].view(np.uint8) ^ np.uint8(0x80 if precision == "binary" else 0)
            vec = unpack(bits, corpus_codes.shape[1] * 8)[:, :d]  # true sign bits, padding trimmed
        else:
            vec = dequant(corpus_codes[cand], precision, ranges)
        sc = np.einsum("j,kj->k", q[i].astype(np.float64), vec)
        o2 = np.lexsort((cand, -sc))
        assert np.all(np.diff(-sc[o2][: top_k + 1]) > tol), "near-tie after rescoring (bad test data)"
        out.append([(int(cand[j]), float(sc[j])) for j in o2[:top_k]])
    return out


def as_result(ref):
    return [[{"corpus_id": i, "score": s} for i, s in row] for row in ref]


@pytest.fixture(scope="module")
def data():
    q, corpus = planted()
    ranges = quantlib.calibration_ranges(corpus)
    codes = {p: quantlib.quantize_embeddings(corpus, p, ranges=ranges if p.endswith("int8") else None)
             for p in ("float32", "int8", "uint8", "binary", "ubinary")}
    return q, corpus, ranges, codes


# ------------------------------------------------------------- main parity grid
@pytest.mark.parametrize("top_k", [1, 5, 10])
@pytest.mark.parametrize("rescore", [False, True])
@pytest.mark.parametrize("backend,precision",
                         [("faiss", p) for p in FAISS_PRECISIONS] + [("usearch", p) for p in USEARCH_PRECISIONS])
def test_parity_grid(data, backend, precision, rescore, top_k):
    q, corpus, ranges, codes = data
    fn = "semantic_search_" + backend
    kw = dict(corpus_precision=precision, top_k=top_k, rescore=rescore, rescore_multiplier=2,
              calibration_embeddings=corpus)
    ours, t = getattr(QL, fn)(q, codes[precision], **kw)
    theirs, _ = getattr(st_q, fn)(q, codes[precision], **kw)
    assert isinstance(t, float) and t >= 0
    ref = as_result(reference(backend, precision, q, codes[precision], top_k, rescore, 2, ranges))
    tol = 1e-6 if precision == "float32" else 1e-10  # float32 search reports float32 values
    assert_same(ours, ref, rtol=tol, atol=tol)
    assert_same(ours, theirs)
    assert all(len(r) == min(top_k, len(corpus)) for r in ours)


@pytest.mark.parametrize("backend,precision",
                         [("faiss", p) for p in FAISS_PRECISIONS] + [("usearch", p) for p in USEARCH_PRECISIONS])
def test_parity_int32_queries(data, backend, precision):
    q, corpus, ranges, codes = data
    qi = np.round(q * 20).astype(np.int32)
    fn = "semantic_search_" + backend
    kw = dict(corpus_precision=precision, top_k=5, rescore=True, rescore_multiplier=3, ranges=ranges)
    ours, _ = getattr(QL, fn)(qi, codes[precision], **kw)
    theirs, _ = getattr(st_q, fn)(qi, codes[precision], **kw)
    assert_same(ours, theirs)
    ref = as_result(reference(backend, precision, qi, codes[precision], 5, True, 3, ranges))
    tol = 1e-6 if precision == "float32" else 1e-10
    assert_same(ours, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend,precision", [("faiss", "uint8"), ("faiss", "ubinary"), ("usearch", "int8"),
                                               ("usearch", "ubinary"), ("usearch", "binary")])
def test_parity_pre_quantized_queries(data, backend, precision):
    q, corpus, ranges, codes = data
    qc = quantlib.quantize_embeddings(q, precision, ranges=ranges if precision.endswith("int8") else None)
    fn = "semantic_search_" + backend
    kw = dict(corpus_precision=precision, top_k=5, rescore=False)
    assert_same(getattr(QL, fn)(qc, codes[precision], **kw)[0], getattr(st_q, fn)(qc, codes[precision], **kw)[0])


# ------------------------------------------------------------- upstream's cases
@pytest.mark.parametrize("rescore", [False, True])
@pytest.mark.parametrize("backend,precision",
                         [("faiss", p) for p in FAISS_PRECISIONS] + [("usearch", p) for p in USEARCH_PRECISIONS])
@pytest.mark.parametrize("n_docs", [0, 1, 3])
def test_short_and_empty_corpus(data, backend, precision, rescore, n_docs):
    q, corpus, ranges, codes = data
    fn = "semantic_search_" + backend
    c = codes[precision][:n_docs]
    kw = dict(corpus_precision=precision, top_k=5, rescore=rescore, ranges=ranges)
    ours, _ = getattr(QL, fn)(q[:2], c, **kw)
    theirs, _ = getattr(st_q, fn)(q[:2], c, **kw)
    assert [sorted(r) for r in ids_scores(ours)[0]] == [sorted(r) for r in ids_scores(theirs)[0]]
    assert all(len(r) == n_docs for r in ours)
    if n_docs == 3:  # no near-ties among 3 planted/random docs here: full equality
        assert_same(ours, theirs)


@pytest.mark.parametrize("rescore", [False, True])
@pytest.mark.parametrize("precision", ["ubinary", "uint8"])
def test_faiss_upstream_empty_corpus(precision, rescore):
    queries = np.random.default_rng(1).standard_normal((2, 16))
    cal = np.random.default_rng(2).standard_normal((100, 16))
    corpus = np.zeros((0, 2 if precision == "ubinary" else 16), np.uint8)
    kw = dict(corpus_precision=precision, top_k=5, rescore=rescore, calibration_embeddings=cal)
    ours, _ = QL.semantic_search_faiss(queries, corpus, **kw)
    theirs, _ = st_q.semantic_search_faiss(queries, corpus, **kw)
    assert ours == theirs == [[], []]


@pytest.mark.parametrize("backend", ["faiss", "usearch"])
def test_rescore_non_byte_aligned_55(backend):
    query = np.arange(1, 11, dtype=np.float32)[None, :]
    corpus = quantlib.quantize_embeddings(np.ones((1, 10), np.float32), "ubinary")
    fn = "semantic_search_" + backend
    ours, _ = getattr(QL, fn)(query, corpus, corpus_precision="ubinary", top_k=1, rescore=True)
    theirs, _ = getattr(st_q, fn)(query, corpus, corpus_precision="ubinary", top_k=1, rescore=True)
    assert ours == theirs
    assert ours[0][0]["score"] == float(query.sum())


def test_usearch_signed_binary_rescoring_17():
    query = np.array([[10.0] + [1.0] * 7], np.float32)
    corpus = quantlib.quantize_embeddings(np.array([[1.0] * 8, [-1.0] + [1.0] * 7], np.float32), "binary")
    ours, _ = QL.semantic_search_usearch(query, corpus, corpus_precision="binary", top_k=1, rescore=True)
    theirs, _ = st_q.semantic_search_usearch(query, corpus, corpus_precision="binary", top_k=1, rescore=True)
    assert ours == theirs
    assert ours[0][0]["corpus_id"] == 0 and ours[0][0]["score"] == float(query.sum())


@pytest.mark.parametrize("precision", ["float32", "uint8"])
def test_faiss_inexact_keeps_inner_product(precision):
    queries = np.array([[1, 0], [1, 1]], np.float32)
    corpus = np.array([[1, 0], [2, 0], [0, 3]], np.float32)
    if precision == "uint8":
        queries, corpus = queries.astype(np.uint8), corpus.astype(np.uint8)
    kw = dict(corpus_precision=precision, top_k=2, rescore=False, exact=False)
    ours, _ = QL.semantic_search_faiss(queries, corpus, **kw)
    theirs, _ = st_q.semantic_search_faiss(queries, corpus, **kw)
    assert ours == theirs
    expect = []
    s = queries.astype(np.float64) @ corpus.astype(np.float64).T
    for row in s:
        o = np.lexsort((np.arange(3), -row))[:2]
        expect.append([{"corpus_id": int(j), "score": float(row[j])} for j in o])
    assert ours == expect


def test_usearch_binary_equals_ubinary(data):
    q, corpus, ranges, codes = data
    n = len(corpus)
    a, _ = QL.semantic_search_usearch(q, codes["binary"], corpus_precision="binary", top_k=10,
                                      rescore_multiplier=n // 10 + 1)
    b, _ = QL.semantic_search_usearch(q, codes["ubinary"], corpus_precision="ubinary", top_k=10,
                                      rescore_multiplier=n // 10 + 1)
    assert a == b
    a, _ = QL.semantic_search_usearch(q, codes["binary"], corpus_precision="binary", top_k=10, rescore=False)
    b, _ = QL.semantic_search_usearch(q, codes["ubinary"], corpus_precision="ubinary", top_k=10, rescore=False)
    assert a == b


def test_single_query_usearch_short_corpus(data):
    q, corpus, ranges, codes = data
    for p in USEARCH_PRECISIONS:
        kw = dict(corpus_precision=p, top_k=5, ranges=ranges)
        ours, _ = QL.semantic_search_usearch(q[:1], codes[p][:3], **kw)
        theirs, _ = st_q.semantic_search_usearch(q[:1], codes[p][:3], **kw)
        assert_same(ours, theirs)


# ------------------------------------------------------------- errors and warnings
def _err(fn, *a, **kw):
    with pytest.raises(Exception) as ei:
        fn(*a, **kw)
    return type(ei.value), str(ei.value)


@pytest.mark.parametrize("backend", ["faiss", "usearch"])
@pytest.mark.parametrize("case", ["both", "neither", "precision", "both+precision", "neither+precision"])
def test_errors_match_upstream(backend, case):
    q = np.ones((2, 16), np.float32)
    c = np.ones((3, 16), np.float32)
    kw = {}
    if "both" in case:
        kw.update(corpus_embeddings=c, corpus_index=object())
    elif "precision" in case and "neither" not in case:
        kw.update(corpus_embeddings=c)
    if "precision" in case:
        kw["corpus_precision"] = "float16"
    fn = "semantic_search_" + backend
    assert _err(getattr(QL, fn), q, **kw) == _err(getattr(st_q, fn), q, **kw)


@pytest.mark.parametrize("backend,precision", [("faiss", "int8"), ("faiss", "binary"), ("usearch", "uint8")])
def test_rejects_unsupported_precision(backend, precision):
    q = np.ones((2, 16), np.float32)
    c = np.ones((3, 16), np.int8 if precision != "uint8" else np.uint8)
    fn = "semantic_search_" + backend
    ours = _err(getattr(QL, fn), q, c, corpus_precision=precision)
    assert ours == _err(getattr(st_q, fn), q, c, corpus_precision=precision)
    assert ours[0] is ValueError and "corpus_precision" in ours[1]


@pytest.mark.parametrize("backend", ["faiss", "usearch"])
def test_foreign_index_type_error(backend):
    q = np.ones((2, 16), np.float32)
    foreign = faiss.IndexFlatIP(16) if backend == "faiss" else usearch.index.Index(ndim=16, metric="cos")
    with pytest.raises(TypeError, match="quantlib.Index"):
        getattr(QL, "semantic_search_" + backend)(q, corpus_index=foreign)


def _warnings(caplog, fn, *a, **kw):
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fn(*a, **kw)
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("backend", ["faiss", "usearch"])
def test_warnings_match_upstream(data, backend, caplog):
    q, corpus, ranges, codes = data
    fn = "semantic_search_" + backend
    qp = "uint8" if backend == "faiss" else "int8"
    cases = [
        dict(args=(q, codes["float32"]), kw=dict(corpus_precision="float32", rescore=True)),  # not quantized
        dict(args=(quantlib.quantize_embeddings(q, "ubinary"), codes["ubinary"]),
             kw=dict(corpus_precision="ubinary", rescore=True)),  # query quantized
        dict(args=(q[:5], codes[qp]), kw=dict(corpus_precision=qp, rescore=True)),  # ranges from 5 queries
    ]
    for c in cases:
        ours = _warnings(caplog, getattr(QL, fn), *c["args"], **c["kw"])
        theirs = _warnings(caplog, getattr(st_q, fn), *c["args"], **c["kw"])
        assert ours == theirs and ours, (ours, theirs)


@pytest.mark.parametrize("backend,precision", [("faiss", "uint8"), ("usearch", "int8")])
def test_single_query_without_ranges_raises_like_upstream(data, backend, precision):
    q, corpus, ranges, codes = data
    fn = "semantic_search_" + backend
    for rescore in (True, False):
        assert _err(getattr(QL, fn), q[:1], codes[precision], corpus_precision=precision, rescore=rescore) == \
            _err(getattr(st_q, fn), q[:1], codes[precision], corpus_precision=precision, rescore=rescore)


# ------------------------------------------------------------- quantlib-only behaviour
@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("rescore", [False, True])
def test_semantic_search_all_precisions_vs_numpy(data, precision, rescore):
    q, corpus, ranges, codes = data
    ours, _ = quantlib.semantic_search(q, codes[precision], corpus_precision=precision, top_k=7, ranges=ranges,
                                       rescore=rescore, rescore_multiplier=3)
    ref = as_result(reference("faiss", precision, q, codes[precision], 7, rescore, 3, ranges))
    tol = 1e-6 if precision == "float32" else 1e-10
    assert_same(ours, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
def test_output_index_roundtrip(data, precision, tmp_path):
    q, corpus, ranges, codes = data
    res, _, idx = quantlib.semantic_search(q, codes[precision], corpus_precision=precision, top_k=5,
                                           ranges=ranges, output_index=True)
    assert isinstance(idx, quantlib.Index) and len(idx) == len(corpus)
    again, _ = quantlib.semantic_search(q, corpus_index=idx, corpus_precision=precision, top_k=5, ranges=ranges)
    assert again == res
    idx.save(tmp_path / "i.qlx")
    loaded = quantlib.load_index(tmp_path / "i.qlx")
    again, _ = quantlib.semantic_search(q, corpus_index=loaded, corpus_precision=precision, top_k=5, ranges=ranges)
    assert again == res


def test_index_ids_are_reported(data):
    q, corpus, ranges, codes = data
    idx = quantlib.Index(D, "ubinary")
    ids = np.arange(len(corpus), dtype=np.int64) * 7 + 3
    idx.add(codes["ubinary"], ids=ids)
    plain, _ = quantlib.semantic_search(q, codes["ubinary"], corpus_precision="ubinary", top_k=5)
    mapped, _ = quantlib.semantic_search(q, corpus_index=idx, corpus_precision="ubinary", top_k=5)
    assert [[h["corpus_id"] for h in r] for r in mapped] == [[int(ids[h["corpus_id"]]) for h in r] for r in plain]
    assert [[h["score"] for h in r] for r in mapped] == [[h["score"] for h in r] for r in plain]


def test_precision_mismatch_and_1d_query(data):
    q, corpus, ranges, codes = data
    idx = quantlib.Index(D, "int8", ranges)
    with pytest.raises(ValueError, match="corpus_precision"):
        quantlib.semantic_search(q, corpus_index=idx, corpus_precision="ubinary")
    one, _ = quantlib.semantic_search(q[0], codes["ubinary"], corpus_precision="ubinary", top_k=3)
    two, _ = quantlib.semantic_search(q[:1], codes["ubinary"], corpus_precision="ubinary", top_k=3)
    assert one == two and len(one) == 1


def test_exact_false_falls_back_to_exact(data):
    q, corpus, ranges, codes = data
    a, _ = quantlib.semantic_search(q, codes["ubinary"], corpus_precision="ubinary", exact=False)
    b, _ = quantlib.semantic_search(q, codes["ubinary"], corpus_precision="ubinary", exact=True)
    assert a == b


@pytest.mark.parametrize("name", ["semantic_search_faiss", "semantic_search_usearch"])
def test_signature_matches_upstream(name):
    import inspect

    ours = inspect.signature(getattr(QL, name)).parameters
    theirs = inspect.signature(getattr(st_q, name)).parameters
    assert [(p.name, p.default, p.kind) for p in ours.values()] == \
        [(p.name, p.default, p.kind) for p in theirs.values()]
    assert getattr(quantlib, name) is getattr(QL, name)
