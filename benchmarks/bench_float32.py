"""Issue 16.2: fused float32 inner-product top-k vs faiss IndexFlatIP.

    python -m pytest benchmarks/bench_float32.py --benchmark-only -p no:cacheprovider \
        [--bench-n 55000] [--bench-queries 1,16,1000] [--bench-threads 1,2]

numpy's ``q @ c.T`` baseline lives in ``report.py --only float32`` only: it must run
in a child process with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset.
"""
import numpy as np
import pytest

import quantlib
from conftest import K, float_corpus, float_queries

D = 384


@pytest.fixture(scope="module")
def float_data(request):
    n = request.config.getoption("--bench-n", default=55000) or 55000
    return float_corpus(min(int(n), 200_000), D, 3), float_queries(1000, D, 3)


@pytest.mark.parametrize("name", ["quantlib", "faiss IndexFlatIP"])
def test_float32_topk(benchmark, float_data, name, nq, threads):
    c, fq = float_data
    q = fq[:nq]
    if name == "quantlib":
        fn = lambda: quantlib.search(q, c, K, precision="float32", threads=threads)  # noqa: E731
    else:
        faiss = pytest.importorskip("faiss")
        faiss.omp_set_num_threads(threads)
        ix = faiss.IndexFlatIP(D)
        ix.add(c)
        fn = lambda: ix.search(q, K)  # noqa: E731
    benchmark.group = f"float32 Q={nq}"
    benchmark.extra_info.update(threads=threads, n=len(c), d=D)
    vals, ids = benchmark(fn)
    want = quantlib.search(q, c, K, precision="float32", threads=1)
    assert np.array_equal(np.asarray(ids)[:, 0], want[1][:, 0]) or np.allclose(vals[:, 0], want[0][:, 0], rtol=1e-5)
