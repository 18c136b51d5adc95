"""Quantization speed report: quantlib vs sentence-transformers, one process, same data.

    python benchmarks/report_quantize.py --n 1000000 --threads 2 --runs 5

Prints a markdown table of medians, GB/s of float32 read and the ratio to
sentence-transformers 6.2 (its numpy implementation, single-threaded).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

import quantlib


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timeit(fn, runs: int) -> float:
    fn()  # warm-up (page faults of the output)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None, help="quantlib threads (default all usable cores)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    from sentence_transformers.util.quantization import quantize_embeddings as st_quantize
    import sentence_transformers

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.d), dtype=np.float32)
    ranges = quantlib.calibration_ranges(x)
    gb = x.nbytes / 1e9
    threads = args.threads or quantlib._threads.usable_cores()
    print(f"# quantize_embeddings, {args.n} x {args.d} float32 ({gb:.2f} GB)")
    print(f"CPU: {cpu_model()}; quantlib {quantlib.__version__} ISA {quantlib.get_isa()}, "
          f"threads={threads}; sentence-transformers {sentence_transformers.__version__} (numpy "
          f"{np.__version__}, 1 thread); affinity {sorted(os.sched_getaffinity(0))}; "
          f"medians of {args.runs} runs\n")
    print("| precision | quantlib s | GB/s | sentence-transformers s | GB/s | speed-up |")
    print("|---|---|---|---|---|---|")
    for precision in ("binary", "ubinary", "int8", "uint8"):
        kw = {"ranges": ranges} if precision.endswith("int8") else {}
        a = quantlib.quantize_embeddings(x, precision, threads=threads, **kw)
        b = st_quantize(x, precision, **kw)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), "outputs differ"
        del a, b
        tq = timeit(lambda: quantlib.quantize_embeddings(x, precision, threads=threads, **kw), args.runs)
        ts = timeit(lambda: st_quantize(x, precision, **kw), args.runs)
        print(f"| {precision} | {tq:.4f} | {gb / tq:.1f} | {ts:.4f} | {gb / ts:.2f} | {ts / tq:.1f}x |")
    tq = timeit(lambda: quantlib.calibration_ranges(x, threads=threads), args.runs)
    tn = timeit(lambda: np.vstack((x.min(0), x.max(0))), args.runs)
    print(f"| ranges (min/max) | {tq:.4f} | {gb / tq:.1f} | numpy {tn:.4f} | {gb / tn:.2f} | {tn / tq:.1f}x |")


if __name__ == "__main__":
    main()
