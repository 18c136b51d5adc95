"""Concurrency: many Python threads calling quantlib at once get bit-identical
results to serial calls, and every long kernel call releases the GIL."""
import sys
import threading
import time

import numpy as np
import pytest

import quantlib

N_THREADS = 8


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, 256)).astype(np.float32)
    ranges = np.vstack((x.min(0), x.max(0)))
    return {
        "x": x,
        "ranges": ranges,
        "bin": quantlib.quantize_embeddings(x, "ubinary"),
        "i8": quantlib.quantize_embeddings(x, "int8", ranges=ranges),
        "q": rng.standard_normal((40, 256)),
    }


def _jobs(d):
    """(name, callable) pairs covering every entry point that runs kernels."""
    return [
        ("search_bin", lambda: quantlib.search(d["bin"][:40], d["bin"], 10, precision="ubinary", threads=1)),
        ("search_bin_t2", lambda: quantlib.search(d["bin"][:3], d["bin"], 10, precision="ubinary", threads=2)),
        ("search_i8", lambda: quantlib.search(d["i8"][:40], d["i8"], 10, precision="int8", threads=1)),
        ("search_i8_t2", lambda: quantlib.search(d["i8"][:200], d["i8"], 10, precision="int8", threads=2)),
        ("hamming", lambda: quantlib.hamming_distance(d["bin"][:50], d["bin"])),
        ("dot", lambda: quantlib.int8_dot(d["i8"][:50], d["i8"])),
        ("quant_i8", lambda: quantlib.quantize_embeddings(d["x"], "int8", ranges=d["ranges"])),
        ("quant_bin", lambda: quantlib.quantize_embeddings(d["x"], "binary")),
        ("rescore_i8", lambda: quantlib.rescore(d["q"], d["i8"], np.arange(40 * 100).reshape(40, 100) % 3000,
                                                precision="int8", ranges=d["ranges"], k=10)),
        ("rescore_bin", lambda: quantlib.rescore(d["q"], d["bin"], np.arange(40 * 100).reshape(40, 100) % 3000,
                                                 precision="ubinary", k=10)),
    ]


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


def test_concurrent_calls_bit_identical(data):
    jobs = _jobs(data)
    serial = {name: _as_tuple(fn()) for name, fn in jobs}
    results = [dict() for _ in range(N_THREADS)]
    errors = []
    barrier = threading.Barrier(N_THREADS)

    def worker(t):
        try:
            barrier.wait()
            for rep in range(3):
                for j in range(len(jobs)):  # every thread starts at a different job
                    name, fn = jobs[(j + t) % len(jobs)]
                    results[t].setdefault(name, []).append(_as_tuple(fn()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for t in range(N_THREADS):
        for name, runs in results[t].items():
            assert len(runs) == 3
            for got in runs:
                for g, w in zip(got, serial[name]):
                    assert g.dtype == w.dtype
                    np.testing.assert_array_equal(g, w, err_msg=f"thread {t} {name}")


@pytest.fixture
def long_switch_interval():
    """A GIL holder is only forced to hand over after this interval, so while a
    C call holds the GIL no other Python thread can run at all."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _progress_during(fn, min_seconds=0.2):
    """How many loop iterations a background Python thread completes while ``fn``
    runs (repeatedly, for at least ``min_seconds`` so faster kernels keep the
    probe meaningful) on this thread. The background loop gives the GIL away on
    every iteration (sleep(0)), so this thread always gets it back promptly; with
    a 1 s switch interval the background thread can only advance while ``fn``
    has released the GIL. The pass criterion is a count, not a time."""
    count = [0]
    stop = threading.Event()
    ready = threading.Event()

    def spin():
        ready.set()
        while not stop.is_set():
            count[0] += 1
            time.sleep(0)  # drops the GIL

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    ready.wait()
    try:
        before = count[0]
        t0 = time.perf_counter()
        fn()
        while time.perf_counter() - t0 < min_seconds:
            fn()
        after = count[0]
    finally:
        stop.set()
        th.join()
    return after - before


def _gil_holding_control():
    # a single C-level call that never releases the GIL (about 50 ms)
    return sum(range(3_000_000))


@pytest.mark.usefixtures("long_switch_interval")
def test_gil_released_during_kernels():
    rng = np.random.default_rng(3)
    # a long single-threaded kernel call per entry point (threads=1: runs on this thread)
    codes = rng.integers(0, 256, (200_000, 128), dtype=np.uint8)
    q = codes[:48].copy()
    i8 = rng.integers(-128, 128, (40_000, 512)).astype(np.int8)
    x = rng.standard_normal((100_000, 256)).astype(np.float32)
    ranges = np.vstack((x.min(0), x.max(0)))
    cand = rng.integers(0, len(i8), (300, 500))
    qf = rng.standard_normal((300, 512))
    r512 = np.vstack((np.full(512, -1.0), np.full(512, 1.0)))
    calls = {
        "search_hamming": lambda: quantlib.search(q, codes, 10, precision="ubinary", threads=1),
        "search_int8": lambda: quantlib.search(i8[:48], i8, 10, precision="int8", threads=1),
        "hamming_distance": lambda: quantlib.hamming_distance(q, codes, threads=1),
        "int8_dot": lambda: quantlib.int8_dot(i8[:48], i8, threads=1),
        "quantize_int8": lambda: quantlib.quantize_embeddings(x, "int8", ranges=ranges, threads=1),
        "rescore": lambda: quantlib.rescore(qf, i8, cand, precision="int8", ranges=r512, threads=1),
    }
    # the control proves the probe can tell: a GIL-holding call lets (almost) nothing run
    control = _progress_during(_gil_holding_control)
    assert control <= 2, f"probe is not discriminating: {control} iterations during a GIL-holding call"
    for name, fn in calls.items():
        progress = _progress_during(fn)
        assert progress >= 3, f"{name}: background thread made {progress} iterations (GIL not released?)"
