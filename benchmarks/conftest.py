"""Shared data builders and contenders for the quantlib benchmarks.

Used by the pytest-benchmark files (``bench_hamming.py``, ``bench_int8.py``)
and by ``report.py`` (which imports this module directly), so every number
comes from the same code on the same data.

A contender is built by ``setup(data, threads)`` (index construction, packing
and thread settings happen there, outside the timing) and returns a callable
``fn(queries, k) -> (values, ids)``. Rivals that only produce a distance
matrix get the usual ``argpartition`` top-k, computed per block of queries so
the (Q, N) matrix never has to exist in full.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Dict, Optional

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
if _ROOT not in sys.path:  # run from a checkout: use the in-place build
    sys.path.insert(0, _ROOT)

import quantlib  # noqa: E402

try:  # simsimd must be imported before usearch: after `import usearch` (2.26.6),
    import simsimd  # noqa: F401  simsimd 6.5.16's cdist raises "Input tensors must
except ImportError:  # pragma: no cover   have matching datatypes" for every input
    pass

K = 10
BITS = 1024
DIM = 1024
_BLOCK_ROWS = 65536  # corpus rows per generated block (same data in every process)
_Q_SEED_OFFSET = 10_000

# --------------------------------------------------------------------- data


def float_blocks(n: int, d: int, seed: int):
    """Deterministic float32 embeddings, generated block by block (one RNG per
    block) so another process can regenerate exactly the same corpus."""
    for b, s in enumerate(range(0, n, _BLOCK_ROWS)):
        rng = np.random.default_rng([seed, b])
        yield s, rng.standard_normal((min(_BLOCK_ROWS, n - s), d), dtype=np.float32)


def float_corpus(n: int, d: int, seed: int) -> np.ndarray:
    out = np.empty((n, d), np.float32)
    for s, blk in float_blocks(n, d, seed):
        out[s : s + len(blk)] = blk
    return out


def float_queries(nq: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, _Q_SEED_OFFSET]).standard_normal((nq, d), dtype=np.float32)


def int8_ranges(d: int, seed: int) -> np.ndarray:
    calib = float_corpus(10_000, d, seed + 1)  # a separate calibration sample
    return np.vstack((calib.min(0), calib.max(0))).astype(np.float32)


def make_hamming_data(n: int, nq: int, bits: int = BITS, seed: int = 1) -> dict:
    """ubinary codes of random float embeddings (sign bits): 1 bit per dim."""
    codes = np.empty((n, bits // 8), np.uint8)
    for s, blk in float_blocks(n, bits, seed):
        codes[s : s + len(blk)] = quantlib.quantize_embeddings(blk, "ubinary")
    queries = quantlib.quantize_embeddings(float_queries(nq, bits, seed), "ubinary")
    return {"codes": codes, "queries": queries, "bits": bits, "seed": seed}


def make_int8_data(n: int, nq: int, d: int = DIM, seed: int = 2) -> dict:
    """int8 codes (sentence-transformers scalar quantization) of random float embeddings."""
    ranges = int8_ranges(d, seed)
    codes = np.empty((n, d), np.int8)
    for s, blk in float_blocks(n, d, seed):
        codes[s : s + len(blk)] = quantlib.quantize_embeddings(blk, "int8", ranges=ranges)
    fq = float_queries(nq, d, seed)
    queries = quantlib.quantize_embeddings(fq, "int8", ranges=ranges)
    return {"codes": codes, "queries": queries, "float_queries": fq, "ranges": ranges, "d": d, "seed": seed}


# ------------------------------------------------------------- top-k helpers


def topk_from_matrix(mat: np.ndarray, k: int, largest: bool):
    """argpartition top-k of a (q, n) block, then the k sorted (what users write)."""
    n = mat.shape[1]
    kk = min(k, n)
    key = -mat.astype(np.int64) if (largest and mat.dtype.kind == "u") else (-mat if largest else mat)
    if kk < n:
        part = np.argpartition(key, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(n), mat.shape)
    order = np.argsort(np.take_along_axis(key, part, axis=1), axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(mat, ids, axis=1), ids.astype(np.int64)


def _by_query_blocks(fn_block: Callable, queries: np.ndarray, k: int, largest: bool, rows: int):
    vals, ids = [], []
    for s in range(0, len(queries), rows):
        v, i = topk_from_matrix(fn_block(queries[s : s + rows]), k, largest)
        vals.append(v)
        ids.append(i)
    return np.concatenate(vals), np.concatenate(ids)


def _qrows(n: int, budget_bytes: int = 256 << 20, itemsize: int = 4) -> int:
    """Queries per block so a (rows, n) distance block stays under ~256 MB."""
    return max(1, min(1024, budget_bytes // max(1, n * itemsize)))


# ------------------------------------------------------------ contenders


def _set_openmp(threads: int):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="openmp")


# --- Hamming ---------------------------------------------------------------
def ql_hamming(data, threads):
    c = data["codes"]
    return lambda q, k: quantlib.search(q, c, k, precision="ubinary", threads=threads)


def numpy_hamming(data, threads):
    """np.bitwise_count of the XOR (on uint64 words) + argpartition; one query at a time."""
    c = data["codes"]
    c64 = c.view(np.uint64) if c.shape[1] % 8 == 0 else c

    def fn(q, k):
        q64 = np.ascontiguousarray(q).view(c64.dtype)
        vals, ids = [], []
        for row in q64:
            dist = np.bitwise_count(c64 ^ row).sum(axis=1, dtype=np.int32)
            v, i = topk_from_matrix(dist[None, :], k, largest=False)
            vals.append(v)
            ids.append(i)
        return np.concatenate(vals), np.concatenate(ids)

    return fn


def faiss_hamming(data, threads):
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexBinaryFlat(data["codes"].shape[1] * 8)
    index.add(data["codes"])

    def fn(q, k):
        faiss.omp_set_num_threads(threads)
        return index.search(q, k)

    return fn


def usearch_hamming(data, threads):
    from usearch.index import MetricKind, search

    c = data["codes"]

    def fn(q, k):
        m = search(c, q, k, MetricKind.Hamming, exact=True, threads=threads)
        return np.atleast_2d(m.distances), np.atleast_2d(m.keys)  # one query gives 1-D Matches

    return fn


def simsimd_hamming(data, threads):
    import simsimd

    c = data["codes"]
    rows = _qrows(len(c))

    def block(qb):
        return np.asarray(simsimd.cdist(qb, c, metric="hamming", dtype="bin8", out_dtype="uint32",
                                        threads=threads))

    return lambda q, k: _by_query_blocks(block, q, k, False, rows)


def numkong_hamming(data, threads):
    import numkong as nk

    packed = nk.hammings_pack(data["codes"])
    rows = _qrows(len(data["codes"]))

    def block(qb):
        with _set_openmp(threads):
            return np.asarray(nk.hammings_packed(qb, packed))

    return lambda q, k: _by_query_blocks(block, q, k, False, rows)


# --- int8 ------------------------------------------------------------------
def ql_int8(data, threads):
    c = data["codes"]
    return lambda q, k: quantlib.search(q, c, k, precision="int8", threads=threads)


def numpy_int8(data, threads):
    """Exact int32 matmul (int16 would overflow at 1024 dims), corpus converted block by block."""
    c = data["codes"]
    blk = 16384

    def fn(q, k):
        q32 = q.astype(np.int32)
        best_v = np.empty((len(q), 0), np.int32)
        best_i = np.empty((len(q), 0), np.int64)
        for s in range(0, len(c), blk):
            v, i = topk_from_matrix(q32 @ c[s : s + blk].astype(np.int32).T, k, largest=True)
            best_v, order = topk_from_matrix(np.concatenate([best_v, v], 1), k, largest=True)
            best_i = np.take_along_axis(np.concatenate([best_i, i + s], 1), order, 1)
        return best_v, best_i

    return fn


def usearch_int8(data, threads):
    from usearch.index import MetricKind, search

    c = data["codes"]

    def fn(q, k):
        m = search(c, q, k, MetricKind.IP, exact=True, threads=threads)
        return 1 - np.atleast_2d(m.distances), np.atleast_2d(m.keys)  # usearch reports 1 - dot

    return fn


def simsimd_int8(data, threads):
    import simsimd

    c = data["codes"]
    rows = _qrows(len(c))

    def block(qb):
        return np.asarray(simsimd.cdist(qb, c, metric="dot", out_dtype="int32", threads=threads))

    return lambda q, k: _by_query_blocks(block, q, k, True, rows)


def numkong_int8(data, threads):
    import numkong as nk

    packed = nk.dots_pack(data["codes"])
    rows = _qrows(len(data["codes"]))

    def block(qb):
        with _set_openmp(threads):
            return np.asarray(nk.dots_packed(qb, packed))

    return lambda q, k: _by_query_blocks(block, q, k, True, rows)


def numpy_float32_blas(corpus: np.ndarray, threads: int):
    """The float32 search users run today: BLAS sgemm per corpus block + argpartition."""
    from threadpoolctl import threadpool_limits

    blk = 65536

    def fn(q, k):
        with threadpool_limits(limits=threads, user_api="blas"):
            best_v = np.empty((len(q), 0), np.float32)
            best_i = np.empty((len(q), 0), np.int64)
            for s in range(0, len(corpus), blk):
                v, i = topk_from_matrix(q @ corpus[s : s + blk].T, k, largest=True)
                mv, order = topk_from_matrix(np.concatenate([best_v, v], 1), k, largest=True)
                best_i = np.take_along_axis(np.concatenate([best_i, i + s], 1), order, 1)
                best_v = mv
            return best_v, best_i

    return fn


def _available(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except Exception:
        return False


# name -> (setup, module it needs or None, threaded?)
HAMMING_CONTENDERS: Dict[str, tuple] = {
    "quantlib": (ql_hamming, None, True),
    "numpy": (numpy_hamming, None, False),
    "faiss IndexBinaryFlat": (faiss_hamming, "faiss", True),
    "usearch exact b1": (usearch_hamming, "usearch", True),
    "SimSIMD cdist": (simsimd_hamming, "simsimd", True),
    "NumKong hammings_packed": (numkong_hamming, "numkong", True),
}
INT8_CONTENDERS: Dict[str, tuple] = {
    "quantlib": (ql_int8, None, True),
    "numpy int32 matmul": (numpy_int8, None, False),
    "usearch exact i8": (usearch_int8, "usearch", True),
    "SimSIMD cdist": (simsimd_int8, "simsimd", True),
    "NumKong dots_packed": (numkong_int8, "numkong", True),
}


def contenders(table: Dict[str, tuple]) -> Dict[str, tuple]:
    return {name: v for name, v in table.items() if v[1] is None or _available(v[1])}


# ------------------------------------------------------------ rescoring


def rescore_memmap(tmpdir: str, data: dict) -> np.memmap:
    path = os.path.join(tmpdir, "int8_codes.bin")
    data["codes"].tofile(path)
    return np.memmap(path, dtype=np.int8, mode="r", shape=data["codes"].shape)


def rescore_candidates(n: int, nq: int, m: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, (nq, m), dtype=np.int64)


def ql_rescore(mm, ranges, threads):
    return lambda q, cand: quantlib.rescore(q, mm, cand, precision="int8", ranges=ranges, threads=threads)


def numpy_rescore(mm, ranges, threads):
    """sentence-transformers' way: dequantize the gathered rows, float64 dot, sort."""

    def fn(q, cand):
        rows = quantlib.dequantize_embeddings(np.asarray(mm[cand.ravel()]), "int8", ranges)
        scores = np.einsum("qd,qmd->qm", q.astype(np.float64), rows.reshape(cand.shape + (-1,)))
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(scores, order, 1), np.take_along_axis(cand, order, 1)

    return fn


# --------------------------------------------------------- pytest options


def pytest_addoption(parser):
    g = parser.getgroup("quantlib benchmarks")
    g.addoption("--bench-n", type=int, default=int(os.environ.get("QL_BENCH_N", 1_000_000)),
                help="corpus rows (default 1 000 000, env QL_BENCH_N)")
    g.addoption("--bench-queries", default=os.environ.get("QL_BENCH_QUERIES", "1,16,1000"),
                help="comma-separated query counts (default 1,16,1000)")
    g.addoption("--bench-threads", default=os.environ.get("QL_BENCH_THREADS", "1,2"),
                help="comma-separated thread counts (default 1,2)")


def pytest_generate_tests(metafunc):
    cfg = metafunc.config
    if "nq" in metafunc.fixturenames:
        metafunc.parametrize("nq", [int(x) for x in cfg.getoption("--bench-queries").split(",")])
    if "threads" in metafunc.fixturenames:
        metafunc.parametrize("threads", [int(x) for x in cfg.getoption("--bench-threads").split(",")])


try:  # fixtures only when loaded by pytest (report.py imports this module too)
    import pytest

    @pytest.fixture(scope="session")
    def bench_n(request):
        return request.config.getoption("--bench-n")

    @pytest.fixture(scope="session")
    def max_queries(request):
        return max(int(x) for x in request.config.getoption("--bench-queries").split(","))

    @pytest.fixture(scope="session")
    def hamming_data(bench_n, max_queries):
        return make_hamming_data(bench_n, max_queries)

    @pytest.fixture(scope="session")
    def int8_data(bench_n, max_queries):
        return make_int8_data(bench_n, max_queries)

    def pytest_collection_modifyitems(config, items):
        for item in items:
            item.add_marker(pytest.mark.benchmark(min_rounds=5, warmup=True, warmup_iterations=1))
except ImportError:  # pragma: no cover
    pass


def pytest_configure(config):
    # collect bench_*.py when the directory is given (``pytest benchmarks/``)
    config.addinivalue_line("python_files", "bench_*.py")
