"""RescorePipeline: streaming build from a memmap, results equal to
brute-force binary retrieval + numpy rescoring, persistence and memory."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import quantlib
from quantlib import RescorePipeline, load_index


def reference(q, x, ranges, top_k, mult, precision="int8"):
    """numpy: Hamming top (top_k*mult) by (distance, id), then float64 einsum
    with the dequantized codes, sorted by (-score, id)."""
    qb = np.unpackbits(np.packbits(q > 0, axis=-1), axis=-1).astype(np.int64)
    xb = np.unpackbits(np.packbits(x > 0, axis=-1), axis=-1).astype(np.int64)
    ham = (qb[:, None, :] != xb[None, :, :]).sum(-1)
    r = ranges.astype(np.float32)
    steps = (r[1] - r[0]) / np.float32(255)
    steps = np.where(steps == 0, np.float32(1), steps)
    q_codes = np.clip(np.floor((x - r[0]) / steps), 0, 255)  # upstream's formula (uint8 value)
    deq = q_codes.astype(np.float64) * steps + r[0]  # int8: (code + 128) * step + min == the same
    n = len(x)
    out_s, out_i = [], []
    for i in range(len(q)):
        cand = np.lexsort((np.arange(n), ham[i]))[: top_k * mult]
        sc = np.einsum("j,kj->k", q[i].astype(np.float64), deq[cand])
        o = np.lexsort((cand, -sc))[:top_k]
        out_s.append(sc[o])
        out_i.append(cand[o])
    return np.array(out_s), np.array(out_i)


@pytest.fixture(scope="module")
def float_memmap(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(7)
    n, dim = 1500, 100
    mm = np.lib.format.open_memmap(d / "emb.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    for s in range(0, n, 500):
        mm[s: s + 500] = rng.standard_normal((min(500, n - s), dim))
    mm.flush()
    del mm
    return np.load(d / "emb.npy", mmap_mode="r"), d


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_pipeline_equals_reference(float_memmap, tmp_path, precision):
    x, _ = float_memmap
    calls = []
    p = RescorePipeline.build(x, tmp_path / "p.qlx", chunk_size=333, progress=lambda a, b: calls.append((a, b)),
                              rescore_precision=precision)
    assert calls[-1] == (len(x), len(x)) and len(calls) == -(-len(x) // 333)
    assert isinstance(p.rescore_codes, np.memmap) and p.rescore_precision == precision
    ranges = quantlib.calibration_ranges(np.asarray(x))
    np.testing.assert_array_equal(p.ranges, ranges)
    np.testing.assert_array_equal(p.binary_codes, quantlib.quantize_embeddings(np.asarray(x), "ubinary"))
    np.testing.assert_array_equal(np.asarray(p.rescore_codes),
                                  quantlib.quantize_embeddings(np.asarray(x), precision, ranges=ranges))
    q = np.random.default_rng(8).standard_normal((6, x.shape[1])).astype(np.float32)
    for top_k, mult in ((10, 4), (1, 1), (5, 50)):
        s, i = p.search(q, top_k=top_k, rescore_multiplier=mult)
        rs, ri = reference(q, np.asarray(x), ranges, top_k, mult)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_allclose(s, rs, rtol=1e-12, atol=1e-9)
    s1, i1 = p.search(q[0])
    s2, i2 = p.search(q[:1])
    assert s1.shape == (10,) and np.array_equal(i1, i2[0])


def test_pipeline_matches_semantic_search_ubinary_int8_combo(float_memmap, tmp_path):
    """Binary retrieval + int8 rescoring equals sentence-transformers' recipe
    done by hand: ubinary candidates, then 6.2's dequantized einsum."""
    st_q = pytest.importorskip("sentence_transformers.util.quantization")
    x, _ = float_memmap
    x = np.asarray(x)
    p = RescorePipeline.build(x, tmp_path / "p.qlx")
    q = np.random.default_rng(9).standard_normal((4, x.shape[1])).astype(np.float32)
    ranges = quantlib.calibration_ranges(x)
    res, _ = st_q.semantic_search_faiss(q, quantlib.quantize_embeddings(x, "ubinary"), corpus_precision="ubinary",
                                        top_k=40, rescore=False)
    int8 = quantlib.quantize_embeddings(x, "int8", ranges=ranges)
    s, i = p.search(q, top_k=10, rescore_multiplier=4)
    for qi, row in enumerate(res):
        cand = np.array([h["corpus_id"] for h in row])
        dist = np.array([h["score"] for h in row])
        if np.sum(dist == dist[-1]) > 1 and len(row) == 40:
            continue  # faiss's order inside a Hamming tie at the cut is unspecified
        deq = st_q._dequantize_embeddings(int8[cand], "int8", ranges)
        sc = deq.astype(np.float64) @ q[qi].astype(np.float64)
        o = np.lexsort((cand, -sc))[:10]
        np.testing.assert_array_equal(i[qi], cand[o])
        np.testing.assert_allclose(s[qi], sc[o], rtol=1e-12)


def test_pipeline_persistence_and_memory(float_memmap, tmp_path):
    x, _ = float_memmap
    path = tmp_path / "p.qlx"
    p = RescorePipeline.build(x, path, calibration_embeddings=np.asarray(x[:200]))
    np.testing.assert_array_equal(p.ranges, quantlib.calibration_ranges(np.asarray(x[:200])))
    q = np.random.default_rng(1).standard_normal((3, x.shape[1])).astype(np.float32)
    want = p.search(q)
    for mmap in (True, False):
        j = load_index(path, mmap=mmap)
        assert isinstance(j, RescorePipeline)
        got = j.search(q)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
        mu = j.memory_usage()
        n, d = x.shape
        assert mu["disk_bytes"] == os.path.getsize(path)
        assert mu["binary_bytes"] == n * ((d + 7) // 8) and mu["rescore_bytes"] == n * d
        if mmap:
            assert mu["resident_bytes"] == n * ((d + 7) // 8) + 2 * d * 4 and mu["mapped_bytes"] == n * d
        else:
            assert mu["mapped_bytes"] == 0 and mu["resident_bytes"] == n * ((d + 7) // 8) + 2 * d * 4 + n * d
    copy = tmp_path / "copy.qlx"
    p.save(copy)
    got = load_index(copy).search(q)
    np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(ValueError, match="own"):
        p.save(path)
    quantlib.Index(4, "ubinary").save(tmp_path / "i.qlx")
    with pytest.raises(quantlib.FormatError, match="not a RescorePipeline"):
        RescorePipeline.load(tmp_path / "i.qlx")


def test_pipeline_given_ranges_and_errors(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 12)).astype(np.float32)
    ranges = np.vstack([-np.full(12, 2.0), np.full(12, 2.0)]).astype(np.float32)
    p = RescorePipeline.build(x, tmp_path / "a.qlx", ranges=ranges)
    np.testing.assert_array_equal(p.ranges, ranges)
    with pytest.raises(ValueError, match="single embedding"):
        RescorePipeline.build(x[:1], tmp_path / "b.qlx")
    with pytest.raises(TypeError):
        RescorePipeline.build(x.astype(np.int8), tmp_path / "c.qlx")
    with pytest.raises(ValueError, match="dims"):
        p.search(np.ones((1, 13), np.float32))
    s, i = p.search(x[:2], top_k=100)
    assert s.shape == (2, 50)  # never padding
    e = RescorePipeline.build(np.zeros((0, 12), np.float32), tmp_path / "e.qlx", ranges=ranges)
    assert len(e) == 0 and e.search(x[:2])[0].shape == (2, 0)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_pipeline_concurrent_search(float_memmap, tmp_path):
    x, _ = float_memmap
    p = RescorePipeline.build(x, tmp_path / "c.qlx")
    q = np.random.default_rng(3).standard_normal((32, x.shape[1])).astype(np.float32)
    want = p.search(q, threads=1)
    out = [None] * 6

    def run(t):
        out[t] = p.search(q, threads=2)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(6)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    for s, i in out:
        np.testing.assert_array_equal(s, want[0])
        np.testing.assert_array_equal(i, want[1])


def test_pipeline_ids(float_memmap, tmp_path):
    x, _ = float_memmap
    ids = np.random.default_rng(5).permutation(len(x)).astype(np.int64) * 7919 + 10 ** 12  # distinct, not row numbers
    path = tmp_path / "ids.qlx"
    p = RescorePipeline.build(x, path, ids=ids, chunk_size=500)
    plain = RescorePipeline.build(x, tmp_path / "plain.qlx", chunk_size=500)
    q = np.random.default_rng(6).standard_normal((4, x.shape[1])).astype(np.float32)
    s0, i0 = plain.search(q)
    for mmap in (True, False):
        j = load_index(path, mmap=mmap)
        s1, i1 = j.search(q)
        np.testing.assert_array_equal(i1, ids[i0])
        np.testing.assert_array_equal(s1, s0)
        assert isinstance(j.ids, np.memmap) == mmap
    p.save(tmp_path / "copy.qlx")
    np.testing.assert_array_equal(load_index(tmp_path / "copy.qlx").search(q)[1], ids[i0])
    with pytest.raises(ValueError, match="ids"):
        RescorePipeline.build(x, tmp_path / "bad.qlx", ids=ids[:5])
