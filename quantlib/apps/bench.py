"""``quantlib bench``: a quick, self-contained speed report on synthetic data.

Each task runs in quantlib and in the same process with numpy (the best plain
numpy formulation: BLAS matmuls on unpacked bits or on codes cast to float32)
and, when installed, sentence-transformers, faiss and usearch, on identical
data. Indexes of other libraries are built outside the timed region; timings
are medians of ``--repeat`` runs after one warm-up.
"""
from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .demo import CLIError, write_figure

BENCH_EXTRA = 'pip install "quantlib-embed[bench]"'


@dataclass
class Result:
    task: str
    impl: str
    seconds: float
    note: str = ""


def _median(fn: Callable[[], object], repeat: int) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> Dict[str, str]:
    import quantlib

    out = {"quantlib": quantlib.__version__, "numpy": np.__version__, "python": platform.python_version()}
    for mod in ("sentence_transformers", "faiss", "usearch"):
        try:
            m = __import__(mod)
            out[mod.replace("_", "-")] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001 - optional, any import failure means "not available"
            pass
    return out


# ------------------------------------------------------ numpy baselines
def np_topk(scores: np.ndarray, k: int, largest: bool) -> np.ndarray:
    s = -scores if largest else scores
    part = np.argpartition(s, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(s, part, 1).argsort(axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def np_hamming_topk(q_bits: np.ndarray, c_bits_f: np.ndarray, c_pop: np.ndarray, k: int) -> np.ndarray:
    """Hamming = |a| + |b| - 2 a.b on unpacked {0,1} float32 bits (BLAS)."""
    qb = np.unpackbits(q_bits.view(np.uint8), axis=1).astype(np.float32)
    dist = qb.sum(1, keepdims=True) + c_pop[None, :] - 2.0 * (qb @ c_bits_f.T)
    return np_topk(dist, k, largest=False)


def np_int8_topk(q_codes: np.ndarray, c_codes_f: np.ndarray, k: int) -> np.ndarray:
    """int8 dot products as a float32 BLAS matmul (exact while d*128*128 < 2**24)."""
    return np_topk(q_codes.astype(np.float32) @ c_codes_f.T, k, largest=True)


# ---------------------------------------------------------------- tasks
def run_bench(n: int, d: int, nq: int, k: int, multiplier: int, repeat: int, threads: Optional[int],
              log: Callable[[str], None], skip: Tuple[str, ...] = ()) -> List[Result]:
    import quantlib as ql

    rng = np.random.default_rng(42)
    corpus = rng.standard_normal((n, d), dtype=np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = rng.standard_normal((nq, d), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ranges = ql.calibration_ranges(corpus)
    c_bin = ql.quantize_embeddings(corpus, "binary")
    q_bin = ql.quantize_embeddings(queries, "binary")
    c_ub = c_bin.view(np.uint8) ^ np.uint8(0x80)
    q_ub = q_bin.view(np.uint8) ^ np.uint8(0x80)
    c_i8 = ql.quantize_embeddings(corpus, "int8", ranges=ranges)
    q_i8 = ql.quantize_embeddings(queries, "int8", ranges=ranges)
    t = threads

    st = faiss = usearch_index = None
    if "sentence-transformers" not in skip:
        try:
            import logging

            logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
            from sentence_transformers.util import quantization as st
        except Exception:  # noqa: BLE001
            st = None
    if "faiss" not in skip:
        try:
            import faiss

            if t:
                faiss.omp_set_num_threads(t)
        except Exception:  # noqa: BLE001
            faiss = None
    if "usearch" not in skip:
        try:
            import usearch.index as usearch_index
        except Exception:  # noqa: BLE001
            usearch_index = None

    res: List[Result] = []

    def time_it(task: str, impl: str, fn: Callable[[], object], note: str = "") -> None:
        try:
            secs = _median(fn, repeat)
        except Exception as e:  # noqa: BLE001 - a failing third-party backend is reported, not fatal
            log(f"  {task} / {impl}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
            return
        res.append(Result(task, impl, secs, note))
        log(f"  {task:28s} {impl:34s} {secs * 1e3:10.2f} ms")

    # 1. quantization
    task = f"quantize binary {n}x{d}"
    time_it(task, "quantlib", lambda: ql.quantize_embeddings(corpus, "binary"))
    time_it(task, "numpy packbits", lambda: (np.packbits(corpus > 0, axis=-1) - np.uint8(128)).view(np.int8))
    if st:
        time_it(task, "sentence-transformers", lambda: st.quantize_embeddings(corpus, "binary"))
    task = f"quantize int8 {n}x{d}"
    time_it(task, "quantlib", lambda: ql.quantize_embeddings(corpus, "int8", ranges=ranges))

    def np_int8():
        start = ranges[0]
        step = (ranges[1] - start) / np.float32(255)
        step[step == 0] = 1
        return (np.clip(np.floor((corpus - start) / step), 0, 255) - 128).astype(np.int8)

    time_it(task, "numpy", np_int8)
    if st:
        time_it(task, "sentence-transformers", lambda: st.quantize_embeddings(corpus, "int8", ranges=ranges))

    # 2. float32 exact top-k (the reference every speed-up is measured against)
    task = f"float32 top-{k} (reference)"
    time_it(task, "quantlib (numpy BLAS)", lambda: ql.search(queries, corpus, k, precision="float32", threads=t))
    time_it(task, "numpy matmul + argpartition", lambda: np_topk(queries @ corpus.T, k, True))
    if faiss:
        fidx = faiss.IndexFlatIP(d)
        fidx.add(corpus)
        time_it(task, "faiss IndexFlatIP", lambda: fidx.search(queries, k))

    # 3. Hamming top-k
    task = f"Hamming top-{k}"
    time_it(task, "quantlib", lambda: ql.search(q_bin, c_bin, k, precision="binary", threads=t))
    c_bits_f = np.unpackbits(c_ub, axis=1).astype(np.float32)
    c_pop = c_bits_f.sum(1)
    time_it(task, "numpy unpackbits + BLAS", lambda: np_hamming_topk(q_bin, c_bits_f, c_pop, k))  # noqa: F821 (runs before the del)
    del c_bits_f
    if faiss:
        bidx = faiss.IndexBinaryFlat(c_ub.shape[1] * 8)
        bidx.add(c_ub)
        time_it(task, "faiss IndexBinaryFlat", lambda: bidx.search(q_ub, k))
    if usearch_index:  # usearch's brute-force entry point: no HNSW graph to build
        time_it(task, "usearch b1 exact", lambda: usearch_index.search(
            c_ub, q_ub, k, "hamming", exact=True, threads=t or 0, dtype="b1"))

    # 4. int8 top-k
    task = f"int8 top-{k}"
    time_it(task, "quantlib", lambda: ql.search(q_i8, c_i8, k, precision="int8", threads=t))
    if d * 128 * 128 <= 2 ** 24:
        c_f = c_i8.astype(np.float32)
        time_it(task, "numpy float32 BLAS on codes", lambda: np_int8_topk(q_i8, c_f, k))
        del c_f
    if usearch_index:
        time_it(task, "usearch i8 exact", lambda: usearch_index.search(
            c_i8, q_i8, k, "ip", exact=True, threads=t or 0))

    # 5. binary search + int8 rescoring
    task = f"binary + int8 rescore x{multiplier}"

    def ql_pipeline():
        _, cand = ql.search(q_bin, c_bin, k * multiplier, precision="binary", threads=t)
        return ql.rescore(queries, c_i8, cand, precision="int8", ranges=ranges, k=k, threads=t)

    time_it(task, "quantlib search + rescore", ql_pipeline)
    c_bits_f = np.unpackbits(c_ub, axis=1).astype(np.float32)
    c_pop = c_bits_f.sum(1)
    start = ranges[0].astype(np.float64)
    step = ((ranges[1] - ranges[0]) / np.float32(255)).astype(np.float32)
    step[step == 0] = 1
    step = step.astype(np.float64)

    def np_rescore(cand):  # dequantize the candidates' int8 rows, score, keep the best k
        deq = (c_i8[cand].astype(np.float64) + 128.0) * step + start
        scores = np.einsum("ij,ikj->ik", queries.astype(np.float64), deq)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(cand, order, 1)

    def np_pipeline():
        return np_rescore(np_hamming_topk(q_bin, c_bits_f, c_pop, k * multiplier))  # noqa: F821 (runs before the del)

    time_it(task, "numpy", np_pipeline)
    del c_bits_f
    if st and faiss:
        bidx2 = faiss.IndexBinaryFlat(c_ub.shape[1] * 8)
        bidx2.add(c_ub)
        time_it(task, "sentence-transformers + faiss", lambda: st.semantic_search_faiss(
            queries, corpus_index=bidx2, corpus_precision="ubinary", top_k=k, rescore_multiplier=multiplier),
            note="rescores with its binary codes, not int8")
    if faiss:
        def faiss_pipeline():  # the blog's recommended pipeline: faiss binary search, int8 rows rescored
            return np_rescore(bidx.search(q_ub, k * multiplier)[1])

        time_it(task, "faiss binary + numpy int8 rescore", faiss_pipeline)
    return res


def format_results(res: List[Result]) -> str:
    head = ["task", "implementation", "median", "vs quantlib"]
    rows = []
    ref: Dict[str, float] = {}
    for r in res:
        if r.impl.startswith("quantlib"):
            ref[r.task] = r.seconds
    last = None
    for r in res:
        base = ref.get(r.task)
        if r.impl.startswith("quantlib"):
            ratio = "1.00x"
        elif base:
            ratio = f"{r.seconds / base:.2f}x slower" if r.seconds >= base else f"{base / r.seconds:.2f}x faster"
        else:
            ratio = "-"
        rows.append([r.task if r.task != last else "", r.impl + (f" ({r.note})" if r.note else ""),
                     f"{r.seconds * 1e3:.2f} ms", ratio])
        last = r.task
    widths = [max(len(h), *(len(x[i]) for x in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(x) for x in rows])


def save_plot(res: List[Result], path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError(f"--plot needs matplotlib; install the extra: {BENCH_EXTRA}")
    tasks = list(dict.fromkeys(r.task for r in res))
    fig, axes = plt.subplots(len(tasks), 1, figsize=(9, 1.0 + 1.15 * sum(
        1 for r in res) / max(1, len(tasks)) * len(tasks) / 2.2), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks):
        rs = [r for r in res if r.task == task]
        y = np.arange(len(rs))
        ms = [r.seconds * 1e3 for r in rs]
        ax.barh(y, ms, color=["#c44e52" if r.impl.startswith("quantlib") else "#4c72b0" for r in rs])
        ax.set_yticks(y)
        ax.set_yticklabels([r.impl for r in rs], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(task, fontsize=8, loc="left")
        ax.tick_params(axis="x", labelsize=7)
        for yi, v in zip(y, ms):
            ax.text(v, yi, f" {v:.2f} ms", va="center", fontsize=6)
        ax.set_xlim(0, max(ms) * 1.3)
    axes[-1, 0].set_xlabel("median time (ms), lower is better", fontsize=8)
    fig.suptitle(title, fontsize=8)
    write_figure(plt, fig, path)


def run(args: argparse.Namespace) -> int:
    import quantlib as ql
    from .._threads import usable_cores

    for name in ("n", "dim", "queries", "top_k", "repeat", "rescore_multiplier"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    if args.top_k * args.rescore_multiplier > args.n:
        need = args.top_k * args.rescore_multiplier
        raise CLIError(f"--top-k x --rescore-multiplier ({need}) exceeds --n ({args.n})")
    need = args.n * args.dim * 4 * 3
    if need > 8 * 2 ** 30:
        raise CLIError(f"--n {args.n} x --dim {args.dim} needs about {need / 2**30:.0f} GiB; choose smaller sizes")
    if args.plot:
        from .demo import check_plot_target

        check_plot_target(args.plot, BENCH_EXTRA)
    skip = tuple(s.strip() for s in (args.skip or "").split(",") if s.strip())
    threads = args.threads
    vers = _versions()
    print(f"quantlib bench  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"cpu      : {cpu_name()} ({usable_cores()} usable cores)")
    print(f"isa      : {ql.get_isa()} (available: {' '.join(ql.available_isas())})")
    print(f"threads  : {threads if threads else 'all (' + str(usable_cores()) + ')'} for quantlib/faiss/usearch; "
          f"numpy uses its BLAS threads")
    print("versions : " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    print(f"data     : corpus {args.n} x {args.dim} float32 (random, normalized), {args.queries} queries, "
          f"top-{args.top_k}, median of {args.repeat} runs")
    print("", flush=True)
    t0 = time.perf_counter()
    res = run_bench(args.n, args.dim, args.queries, args.top_k, args.rescore_multiplier, args.repeat, threads,
                    (lambda s: print(s, flush=True)) if args.verbose else (lambda s: None), skip)
    print(format_results(res))
    ql_times = {r.task: r.seconds for r in res if r.impl.startswith("quantlib")}
    ref = next((v for k, v in ql_times.items() if k.startswith("float32")), None)
    if ref:
        parts = [f"{k.split(' (')[0]} {ref / v:.1f}x" for k, v in ql_times.items()
                 if not k.startswith(("float32", "quantize")) and v > 0]
        print("\nspeed-up of quantlib's quantized search over float32 exact search: " + ", ".join(parts))
    print(f"\n(total {time.perf_counter() - t0:.1f} s)")
    if args.plot:
        save_plot(res, args.plot, f"quantlib bench: {args.n} x {args.dim}, {args.queries} queries, "
                                  f"{cpu_name()}, ISA {ql.get_isa()}")
        print(f"plot written to {args.plot}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=100_000, help="corpus rows (default 100000)")
    p.add_argument("--dim", type=int, default=384, help="embedding dimension (default 384, as all-MiniLM-L6-v2)")
    p.add_argument("--queries", type=int, default=100, help="queries per search (default 100)")
    p.add_argument("--top-k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--rescore-multiplier", type=int, default=4, help="binary candidates = top-k x M (default 4)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement, median shown (default 5)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all usable cores)")
    p.add_argument("--skip", metavar="LIB[,LIB]", help="skip comparisons: sentence-transformers,faiss,usearch")
    p.add_argument("--plot", metavar="OUT.png", help="save a bar chart of the medians")
    p.add_argument("-v", "--verbose", action="store_true", help="print each timing as it is measured")
