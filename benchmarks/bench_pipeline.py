"""End-to-end retrieval benchmark: quantlib's binary -> int8 rescoring
pipeline vs exact float32 search and vs sentence-transformers' quantized
search (the Hugging Face blog's setup).

Data: N x 1024 random float32 embeddings (QL_BENCH_N, default 1_000_000),
Q in {1, 1000} random float queries, top_k=10, rescore_multiplier=4.

Contenders (all exact, all given float queries, index built outside timing):
  quantlib_pipeline   RescorePipeline.search: Hamming top-40 over in-RAM
                      ubinary codes + float64 rescoring from the int8 memmap
  numpy_f32           numpy BLAS q @ corpus.T per corpus block + argpartition
  faiss_flat_ip       faiss.IndexFlatIP (float32)
  st_faiss_ubinary    sentence_transformers semantic_search_faiss, ubinary
                      corpus, rescore=True (prebuilt IndexBinaryFlat passed in)
  st_usearch_int8     sentence_transformers semantic_search_usearch, int8
                      corpus, rescore=True (prebuilt usearch i8 index passed in)
  ql_faiss_ubinary / ql_usearch_int8
                      quantlib's drop-ins for the two functions above

Run (pytest-benchmark)::

    QL_BENCH_N=200000 QL_BENCH_THREADS=2 taskset -c 0,1 \\
        python -m pytest benchmarks/bench_pipeline.py -s --benchmark-columns=median,min,rounds

``-s`` prints a summary with medians, ratios to numpy float32 and the
pipeline's resident memory vs disk size. Rivals that are not installed are
skipped.
"""
from __future__ import annotations

import os
import platform
import sys
import tempfile
import time

import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # run from a checkout: use the in-place build
    sys.path.insert(0, _ROOT)

import quantlib  # noqa: E402

N = int(os.environ.get("QL_BENCH_N", "1000000"))
D = int(os.environ.get("QL_BENCH_D", "1024"))
THREADS = int(os.environ.get("QL_BENCH_THREADS", "0")) or None
TOP_K = 10
MULT = 4
QS = [1, 1000]
ROUNDS = {1: int(os.environ.get("QL_BENCH_ROUNDS_Q1", "15")), 1000: int(os.environ.get("QL_BENCH_ROUNDS_Q1000", "5"))}
_BLOCK = 65536

_RESULTS: dict = {}


def _threads() -> int:
    from quantlib._threads import resolve_threads

    return resolve_threads(THREADS)


@pytest.fixture(scope="module")
def pipe_data():
    tmp = tempfile.mkdtemp(prefix="ql-bench-")
    corpus = np.empty((N, D), np.float32)
    for b, s in enumerate(range(0, N, _BLOCK)):
        corpus[s: s + _BLOCK] = np.random.default_rng([1, b]).standard_normal((min(_BLOCK, N - s), D),
                                                                              dtype=np.float32)
    queries = np.random.default_rng([1, 99]).standard_normal((max(QS), D), dtype=np.float32)
    t0 = time.perf_counter()
    pipe = quantlib.RescorePipeline.build(corpus, os.path.join(tmp, "pipe.qlx"), chunk_size=65536, threads=THREADS)
    build_s = time.perf_counter() - t0
    info = {"build_seconds": build_s, **pipe.memory_usage()}
    _RESULTS["_meta"] = info
    yield {"corpus": corpus, "queries": queries, "pipe": pipe, "tmp": tmp}
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    _print_summary()


def _record(name: str, q: int, benchmark) -> None:
    stats = benchmark.stats.stats if hasattr(benchmark.stats, "stats") else benchmark.stats
    _RESULTS[(name, q)] = stats.median


def _bench(benchmark, name, q, fn):
    benchmark.extra_info.update({"N": N, "D": D, "Q": q, "threads": _threads(), "top_k": TOP_K, "mult": MULT})
    result = benchmark.pedantic(fn, rounds=ROUNDS[q], iterations=1, warmup_rounds=1 if q == 1 else 0)
    _record(name, q, benchmark)
    return result


def numpy_search(q: np.ndarray, corpus: np.ndarray, k: int):
    """Exact float32 inner-product top-k with numpy BLAS, per corpus block
    (the (Q, N) score matrix never exists in full)."""
    block = max(1024, min(len(corpus), (1 << 26) // max(1, len(q))))  # <= 256 MB of scores
    best_s = np.empty((len(q), 0), np.float32)
    best_i = np.empty((len(q), 0), np.int64)
    for s in range(0, len(corpus), block):
        sc = q @ corpus[s: s + block].T
        kk = min(k, sc.shape[1])
        part = np.argpartition(-sc, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(sc, part, 1)], 1)
        best_i = np.concatenate([best_i, part + s], 1)
    order = np.argsort(-best_s, axis=1)[:, :k]
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


# ------------------------------------------------------------------ contenders
@pytest.mark.parametrize("q", QS)
def test_quantlib_pipeline(benchmark, pipe_data, q):
    pipe, queries = pipe_data["pipe"], pipe_data["queries"][:q]
    s, i = _bench(benchmark, "quantlib_pipeline", q, lambda: pipe.search(queries, TOP_K, MULT, threads=THREADS))
    assert i.shape == (q, TOP_K)


@pytest.mark.parametrize("q", QS)
def test_numpy_f32(benchmark, pipe_data, q):
    corpus, queries = pipe_data["corpus"], pipe_data["queries"][:q]
    _bench(benchmark, "numpy_f32", q, lambda: numpy_search(queries, corpus, TOP_K))


@pytest.mark.parametrize("q", QS)
def test_faiss_flat_ip(benchmark, pipe_data, q):
    faiss = pytest.importorskip("faiss")
    faiss.omp_set_num_threads(_threads())
    if "faiss_index" not in pipe_data:
        idx = faiss.IndexFlatIP(D)
        idx.add(pipe_data["corpus"])
        pipe_data["faiss_index"] = idx
    idx, queries = pipe_data["faiss_index"], pipe_data["queries"][:q]
    _bench(benchmark, "faiss_flat_ip", q, lambda: idx.search(queries, TOP_K))


def _st():
    return pytest.importorskip("sentence_transformers.util.quantization")


@pytest.mark.parametrize("q", QS)
def test_st_faiss_ubinary(benchmark, pipe_data, q):
    st_q = _st()
    faiss = pytest.importorskip("faiss")
    faiss.omp_set_num_threads(_threads())
    queries = pipe_data["queries"][:q]
    if "st_faiss_index" not in pipe_data:
        codes = quantlib.quantize_embeddings(pipe_data["corpus"], "ubinary")
        _, _, pipe_data["st_faiss_index"] = st_q.semantic_search_faiss(
            queries[:2], codes, corpus_precision="ubinary", top_k=1, output_index=True)
    idx = pipe_data["st_faiss_index"]
    _bench(benchmark, "st_faiss_ubinary", q, lambda: st_q.semantic_search_faiss(
        queries, corpus_index=idx, corpus_precision="ubinary", top_k=TOP_K, rescore=True, rescore_multiplier=MULT))


@pytest.mark.parametrize("q", QS)
def test_st_usearch_int8(benchmark, pipe_data, q):
    st_q = _st()
    pytest.importorskip("usearch")
    queries = pipe_data["queries"][:q]
    ranges = pipe_data["pipe"].ranges
    if "st_usearch_index" not in pipe_data:
        codes = np.asarray(pipe_data["pipe"].rescore_codes)
        _, _, pipe_data["st_usearch_index"] = st_q.semantic_search_usearch(
            queries[:2], codes, corpus_precision="int8", top_k=1, ranges=ranges, output_index=True)
    idx = pipe_data["st_usearch_index"]
    _bench(benchmark, "st_usearch_int8", q, lambda: st_q.semantic_search_usearch(
        queries, corpus_index=idx, corpus_precision="int8", top_k=TOP_K, ranges=ranges, rescore=True,
        rescore_multiplier=MULT))


@pytest.mark.parametrize("q", QS)
def test_ql_faiss_ubinary(benchmark, pipe_data, q):
    queries = pipe_data["queries"][:q]
    if "ql_bin_index" not in pipe_data:
        pipe_data["ql_bin_index"] = quantlib.Index._wrap(pipe_data["pipe"].binary_codes, "ubinary", D, None)
    idx = pipe_data["ql_bin_index"]
    _bench(benchmark, "ql_faiss_ubinary", q, lambda: quantlib.semantic_search_faiss(
        queries, corpus_index=idx, corpus_precision="ubinary", top_k=TOP_K, rescore=True, rescore_multiplier=MULT))


@pytest.mark.parametrize("q", QS)
def test_ql_usearch_int8(benchmark, pipe_data, q):
    queries = pipe_data["queries"][:q]
    ranges = pipe_data["pipe"].ranges
    if "ql_int8_index" not in pipe_data:
        pipe_data["ql_int8_index"] = quantlib.Index._wrap(np.asarray(pipe_data["pipe"].rescore_codes), "int8", D,
                                                          ranges)
    idx = pipe_data["ql_int8_index"]
    _bench(benchmark, "ql_usearch_int8", q, lambda: quantlib.semantic_search_usearch(
        queries, corpus_index=idx, corpus_precision="int8", top_k=TOP_K, ranges=ranges, rescore=True,
        rescore_multiplier=MULT))


# ------------------------------------------------------------------ summary
def _print_summary() -> None:
    meta = _RESULTS.get("_meta", {})
    lines = [
        "",
        f"quantlib {quantlib.__version__} | isa {quantlib.get_isa()} | threads {_threads()} | "
        f"python {platform.python_version()} | numpy {np.__version__} | "
        f"cpu {platform.processor() or platform.machine()} | load avg {os.getloadavg()[0]:.1f}",
        f"N={N} D={D} top_k={TOP_K} rescore_multiplier={MULT}",
    ]
    if meta:
        lines.append(
            f"pipeline build {meta['build_seconds']:.2f}s | resident {meta['resident_bytes'] / 2**20:.1f} MiB "
            f"(binary {meta['binary_bytes'] / 2**20:.1f} MiB) | int8 mapped {meta['mapped_bytes'] / 2**20:.1f} MiB | "
            f"file {meta['disk_bytes'] / 2**20:.1f} MiB | float32 corpus {N * D * 4 / 2**20:.1f} MiB")
    for q in QS:
        base = _RESULTS.get(("numpy_f32", q))
        lines.append(f"Q={q}:")
        for (name, qq), med in sorted(((k, v) for k, v in _RESULTS.items() if k != "_meta"), key=lambda kv: kv[1]):
            if qq != q:
                continue
            ratio = f"{base / med:8.2f}x vs numpy f32" if base else ""
            lines.append(f"  {name:20s} median {med * 1e3:10.2f} ms  {ratio}")
    print("\n".join(lines))
