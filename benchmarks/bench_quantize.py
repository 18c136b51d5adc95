"""pytest-benchmark: quantize_embeddings (binary, int8) vs sentence-transformers' numpy code.

    QUANTLIB_BENCH_N=1000000 pytest benchmarks/bench_quantize.py --benchmark-min-rounds=5

Size: QUANTLIB_BENCH_N rows x 1024 float32 (default 200 000 = 0.8 GB).
Threads: quantlib uses QUANTLIB_BENCH_THREADS (default: all usable cores);
sentence-transformers' numpy code is single-threaded.
"""
import os

import numpy as np
import pytest

import quantlib

N = int(os.environ.get("QUANTLIB_BENCH_N", "200000"))
D = 1024
THREADS = int(os.environ.get("QUANTLIB_BENCH_THREADS", "0")) or None

st = pytest.importorskip("sentence_transformers.util.quantization")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D), dtype=np.float32)
    return x, quantlib.calibration_ranges(x)


@pytest.mark.parametrize("precision", ["binary", "int8"])
@pytest.mark.parametrize("impl", ["quantlib", "sentence-transformers"])
def test_quantize(benchmark, data, impl, precision):
    x, ranges = data
    kw = {"ranges": ranges} if precision == "int8" else {}
    benchmark.group = f"quantize {precision} {N}x{D} float32"
    benchmark.extra_info.update(isa=quantlib.get_isa(), threads=THREADS or "all", n=N, d=D)
    if impl == "quantlib":
        out = benchmark(quantlib.quantize_embeddings, x, precision, threads=THREADS, **kw)
    else:
        out = benchmark(st.quantize_embeddings, x, precision, **kw)
    assert out.shape[0] == N


@pytest.mark.parametrize("impl", ["quantlib", "numpy"])
def test_calibration_ranges(benchmark, data, impl):
    x, _ = data
    benchmark.group = f"calibration ranges {N}x{D} float32"
    if impl == "quantlib":
        benchmark(quantlib.calibration_ranges, x, threads=THREADS)
    else:
        benchmark(lambda a: np.vstack((a.min(0), a.max(0))).astype(np.float32), x)
