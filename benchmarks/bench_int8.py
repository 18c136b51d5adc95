"""Issue 4: exact int8 top-k, 1 M x 1024 int8, k = 10, Q in {1, 16, 1000}, and
rescoring 1 000 queries x 100 candidates x 1024 dims from a memmap.

    python -m pytest benchmarks/bench_int8.py --benchmark-only -p no:cacheprovider \
        [--bench-n 1000000] [--bench-queries 1,16,1000] [--bench-threads 1,2]

The numpy float32 BLAS baseline lives in ``report.py`` only: it must run in a
child process with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset.
"""
import numpy as np
import pytest

from conftest import (INT8_CONTENDERS, K, contenders, numpy_rescore, ql_rescore, rescore_candidates,
                      rescore_memmap)

CONTENDERS = contenders(INT8_CONTENDERS)


@pytest.mark.parametrize("name", list(CONTENDERS))
def test_int8_topk(benchmark, int8_data, name, nq, threads):
    setup, _, threaded = CONTENDERS[name]
    if not threaded and threads != 1:
        pytest.skip(f"{name} is single-threaded")
    fn = setup(int8_data, threads)
    q = int8_data["queries"][:nq]
    benchmark.group = f"int8 Q={nq}"
    benchmark.extra_info.update(threads=threads, n=len(int8_data["codes"]), d=int8_data["d"])
    vals, _ = benchmark(fn, q, K)
    want, _ = INT8_CONTENDERS["quantlib"][0](int8_data, 1)(q, K)
    np.testing.assert_array_equal(np.rint(np.asarray(vals, np.float64)).astype(np.int64), want.astype(np.int64))


@pytest.fixture(scope="module")
def rescore_setup(int8_data, tmp_path_factory):
    mm = rescore_memmap(str(tmp_path_factory.mktemp("rescore")), int8_data)
    nq = 1000
    rng = np.random.default_rng(5)
    q = rng.standard_normal((nq, int8_data["d"]))
    return mm, q, rescore_candidates(len(mm), nq, 100)


@pytest.mark.parametrize("name", ["quantlib", "numpy"])
def test_rescore_memmap(benchmark, int8_data, rescore_setup, name, threads):
    mm, q, cand = rescore_setup
    if name == "numpy" and threads != 1:
        pytest.skip("numpy path is single-threaded")
    fn = (ql_rescore if name == "quantlib" else numpy_rescore)(mm, int8_data["ranges"], threads)
    benchmark.group = "rescore 1000 q x 100 cand x 1024 d (memmap)"
    benchmark.extra_info.update(threads=threads, queries=len(q))
    scores, ids = benchmark(fn, q, cand)
    ws, wi = ql_rescore(mm, int8_data["ranges"], 1)(q, cand)
    np.testing.assert_allclose(scores, ws, rtol=1e-12, atol=1e-9)
