"""Issue 3: exact Hamming top-k, 1 M codes x 1024 bits, k = 10, Q in {1, 16, 1000}.

    python -m pytest benchmarks/bench_hamming.py --benchmark-only -p no:cacheprovider \
        [--bench-n 1000000] [--bench-queries 1,16,1000] [--bench-threads 1,2]

Every contender runs on the same codes; each run is checked against
quantlib's exact distances (never a timing assertion). ``benchmarks/report.py``
prints the same comparison as one table with ratios and ceilings.
"""
import numpy as np
import pytest

from conftest import HAMMING_CONTENDERS, K, contenders

CONTENDERS = contenders(HAMMING_CONTENDERS)


@pytest.mark.parametrize("name", list(CONTENDERS))
def test_hamming_topk(benchmark, hamming_data, name, nq, threads):
    setup, _, threaded = CONTENDERS[name]
    if not threaded and threads != 1:
        pytest.skip(f"{name} is single-threaded")
    fn = setup(hamming_data, threads)
    q = hamming_data["queries"][:nq]
    benchmark.group = f"hamming Q={nq}"
    benchmark.extra_info.update(threads=threads, n=len(hamming_data["codes"]), bits=hamming_data["bits"])
    vals, _ = benchmark(fn, q, K)
    want, _ = HAMMING_CONTENDERS["quantlib"][0](hamming_data, 1)(q, K)
    np.testing.assert_array_equal(np.asarray(vals).astype(np.int64), want.astype(np.int64))
