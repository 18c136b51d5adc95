#!/usr/bin/env python
"""One-process benchmark report for quantlib's exact search (issues 3 and 4).

    python benchmarks/report.py                       # 1 M rows, Q = 1,16,1000, 1 and 2 threads
    python benchmarks/report.py --n 100000 --queries 1,16,100 --only hamming \
        --markdown out.md --plot out.png

Every contender runs in this process on the same data (the numpy float32 BLAS
baseline runs in a child process started with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE removed from its environment, because OpenBLAS reads them
once at load time; the child regenerates the identical float corpus from the
same seeds and the report checks a checksum). Times are medians of
``--repeat`` (>= 5) runs after one warm-up run. Every contender's top-k
distances are compared with quantlib's exact ones ("exact" column).

A single-threaded numpy baseline (bitwise_count loop, int32 matmul) whose
predicted run time exceeds ``--max-run-seconds`` is timed on the first Q'
queries and scaled by Q/Q' (its work is linear in Q); such rows are marked
"~" and say which Q' was measured. quantlib and the rival libraries are always
timed on all Q queries.

Ceilings are measured in the same run (issue 16.1): benchmarks/ceilings.c,
compiled with the system cc, measures per thread count vpopcntq / AVX2 popcount,
vpdpbusd, FP32 FMA (AVX-512 and AVX2) throughput and the streaming read
bandwidth of a 2 GiB buffer with all threads. Compute ceilings are taken per
second of the probe's own CPU time (what the cores deliver while we are on them;
the machine is shared), bandwidth per wall second with all threads. The ceiling
time of a row is max(corpus read time, compute time at that thread count);
``--bw`` / ``--popcnt-peak`` / ``--vnni-peak`` / ``--fma-peak`` override the
measured values (default: measure).

``--only float32``: fused float32 search vs numpy ``q @ c.T`` alone (a child
process with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, its BLAS kernel
reported by threadpoolctl; the product per corpus block into one reused output
buffer, no selection) and faiss IndexFlatIP, on the sets of ``--float-sets``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import ceilings as CEIL  # noqa: E402  (the C probe of the hardware ceilings)
import conftest as C  # noqa: E402  (data builders and contenders, shared with the pytest files)
import quantlib  # noqa: E402

# ------------------------------------------------------------------ timing


def measure(fn, args, repeat):
    """One warm-up run, then ``repeat`` timed runs; returns (median s, result of the warm-up)."""
    res = fn(*args)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), res


# only these (single-threaded numpy loops, linear in Q) may be timed on a query prefix and scaled
EXTRAPOLATABLE = {"numpy", "numpy int32 matmul"}


def timed_rows(name, fn, queries, k, repeat, max_s, per_query_hint):
    """Time fn on all queries, or (numpy baselines only) on a prefix scaled
    linearly when the full run would take too long."""
    nq = len(queries)
    est = per_query_hint * nq * (repeat + 1) if per_query_hint else 0.0
    if name in EXTRAPOLATABLE and est > max_s and nq > 1:
        sub = max(1, int(max_s / (per_query_hint * (repeat + 1))))
        sub = min(sub, nq - 1)
        t, res = measure(fn, (queries[:sub], k), repeat)
        return t * nq / sub, res, sub
    t, res = measure(fn, (queries, k), repeat)
    return t, res, None


# ------------------------------------------------------------------ environment


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions():
    out = {"python": platform.python_version(), "numpy": np.__version__, "quantlib": quantlib.__version__}
    for mod in ("faiss", "usearch", "simsimd", "numkong", "threadpoolctl"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception:
            out[mod] = "not installed"
    return out


def blas_info():
    try:
        from threadpoolctl import threadpool_info

        return [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')}, "
                f"{os.path.basename(i.get('filepath', ''))})"
                for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception as exc:  # pragma: no cover
        return [f"threadpoolctl unavailable: {exc}"]


# ------------------------------------------------------------------ ceilings


def peak(a, key, threads):
    """Measured ceiling `key` (ceilings.c) at `threads` threads, or the CLI override."""
    over = {"read_bw": a.bw and a.bw * 1e9, "vpopcntq_bits": a.popcnt_peak and a.popcnt_peak * 1024 / 2 * threads,
            "vnni_macs": a.vnni_peak and a.vnni_peak / 2 * threads, "fma512_flops": a.fma_peak and a.fma_peak / 2 * threads}
    if over.get(key):
        return over[key]
    if key == "read_bw":  # all threads
        return a.ceil[max(a.ceil)]["read_bw"]
    t = threads if threads in a.ceil else max(a.ceil)
    v = a.ceil[t].get(key + "_oncpu") or a.ceil[t].get(key)
    if key == "fma512_flops" and not v:
        v = a.ceil[t].get("fma256_flops_oncpu") or a.ceil[t].get("fma256_flops")
    return v


def ceiling_hamming(n, nbytes, nq, threads, a):
    read = n * nbytes / peak(a, "read_bw", threads)
    compute = nq * n * nbytes * 8 / peak(a, "vpopcntq_bits", threads)
    return max(read, compute)


def ceiling_int8(n, d, nq, threads, a):
    read = n * d / peak(a, "read_bw", threads)
    compute = nq * n * d / peak(a, "vnni_macs", threads)
    return max(read, compute)


def ceiling_float(n, d, nq, threads, a):
    read = n * d * 4 / peak(a, "read_bw", threads)
    compute = 2.0 * nq * n * d / peak(a, "fma512_flops", threads)
    return max(read, compute)


# ------------------------------------------------------------------ sections


def _fmt_ms(t):
    ms = t * 1e3
    return f"{ms:,.3f}" if ms < 10 else f"{ms:,.1f}" if ms < 1000 else f"{ms:,.0f}"


def _ratio(x):
    return "" if x is None else f"{x:.2f}x"


def run_search_section(kind, data, table, a, log):
    """Runs every contender of ``table`` for every (Q, threads); returns rows."""
    queries_all = data["queries"]
    n = len(data["codes"])
    width = data["codes"].shape[1]
    rows = []
    per_query = {}  # (name, threads) -> s/query at the last Q (to predict slow runs)
    setups = {}
    for nq in a.queries:
        q = queries_all[:nq]
        want = None
        for threads in a.threads:
            for name, (setup, _mod, threaded) in table.items():
                if not threaded and threads != a.threads[0]:
                    continue  # single-threaded baselines: timed once per Q
                key = (name, threads if threaded else 1)
                if key not in setups:
                    setups[key] = setup(data, key[1])
                fn = setups[key]
                t, res, sub = timed_rows(name, fn, q, C.K, a.repeat, a.max_run_seconds, per_query.get(key))
                per_query[key] = t / nq
                vals = np.asarray(res[0])
                if name == "quantlib" and want is None:
                    want = vals
                nref = min(len(vals), len(want)) if want is not None else 0  # extrapolated rows: a prefix
                exact = "yes" if want is not None and np.array_equal(
                    np.rint(vals[:nref].astype(np.float64)).astype(np.int64), want[:nref].astype(np.int64)) else "NO"
                if kind == "hamming":
                    ceil = ceiling_hamming(n, width, nq, key[1], a)
                else:
                    ceil = ceiling_int8(n, width, nq, key[1], a)
                rows.append(dict(section=kind, q=nq, threads=key[1], name=name, t=t, sub=sub,
                                 exact=exact, ceiling=ceil, n=n, nbytes=width, d=width))
                log(f"  {kind} Q={nq:<5} t={key[1]} {name:<26} {_fmt_ms(t):>10} ms"
                    + (f"  (~ from Q'={sub})" if sub else ""))
    return rows


def run_float_child(a, log):
    """numpy float32 BLAS search in a child with the OpenBLAS overrides removed."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    cmd = [sys.executable, os.path.abspath(__file__), "--_float-child", "--n", str(a.n),
           "--queries", ",".join(map(str, a.queries)), "--threads", ",".join(map(str, a.threads)),
           "--repeat", str(a.repeat), "--max-run-seconds", str(a.max_run_seconds)]
    log("  numpy float32 BLAS: child process without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE ...")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        log(f"  float32 child failed:\n{r.stderr[-2000:]}")
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def float_child_main(a):
    from threadpoolctl import threadpool_info

    seed, d = 2, C.DIM
    corpus = C.float_corpus(a.n, d, seed)
    fq = C.float_queries(max(a.queries), d, seed)
    out = {"results": [], "checksum": float(fq.astype(np.float64).sum() + corpus[:256].astype(np.float64).sum()),
           "blas": [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                           "threading_layer", "filepath")}
                    for i in threadpool_info() if i.get("user_api") == "blas"],
           "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}}
    per_query = {}
    for nq in a.queries:
        for threads in a.threads:
            fn = C.numpy_float32_blas(corpus, threads)
            t, _, sub = timed_rows("blas", fn, fq[:nq], C.K, a.repeat, a.max_run_seconds, per_query.get(threads))
            per_query[threads] = t / nq
            out["results"].append({"q": nq, "threads": threads, "t": t, "sub": sub})
    print(json.dumps(out))


def float_sets(a):
    """[(n, d, [Q...])] from --float-sets "NxD:q,q;NxD:q,q"."""
    out = []
    for part in a.float_sets.split(";"):
        shape, qs = part.split(":")
        n, d = (int(x) for x in shape.lower().split("x"))
        out.append((n, d, [int(x) for x in qs.split(",")]))
    return out


def _faiss_flatip(c, threads):
    import faiss

    faiss.omp_set_num_threads(threads)
    ix = faiss.IndexFlatIP(c.shape[1])
    ix.add(c)

    def fn(q, k):
        faiss.omp_set_num_threads(threads)
        return ix.search(q, k)
    return fn


def run_float_section(a, log):
    """Fused float32 search vs numpy q @ c.T alone (child) vs faiss IndexFlatIP."""
    rows = []
    for n, d, qs in float_sets(a):
        log(f"float32: building {n:,} x {d} float32 ...")
        c = C.float_corpus(n, d, 3)
        fq = C.float_queries(max(qs), d, 3)
        table = {"quantlib": lambda th: (lambda q, k: quantlib.search(q, c, k, precision="float32", threads=th))}
        try:
            import faiss  # noqa: F401

            table["faiss IndexFlatIP"] = lambda th: _faiss_flatip(c, th)
        except ImportError:
            pass
        for nq in qs:
            want = None
            for threads in a.threads:
                for name, setup in table.items():
                    fn = setup(threads)
                    t, res = measure(fn, (fq[:nq], C.K), a.repeat)
                    ids = np.asarray(res[1])
                    if name == "quantlib":
                        want = res
                    ex = np.mean(np.asarray(res[0], np.float64)[:, 0] == np.asarray(want[0], np.float64)[:, 0])
                    rows.append(dict(section=f"float32 {n}x{d}", n=n, d=d, q=nq, threads=threads, name=name, t=t,
                                     sub=None, exact=f"top-1 score equal {100 * ex:.0f} %" if name != "quantlib"
                                     else "fixed order", ceiling=ceiling_float(n, d, nq, threads, a)))
                    log(f"  float32 {n}x{d} Q={nq:<5} t={threads} {name:<20} {_fmt_ms(t):>10} ms")
                    del fn, res, ids
        del c, table
        child = run_matmul_child(a, n, d, qs, log)
        if child:
            blas = "; ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']} "
                             f"({b['threading_layer']}, {b['num_threads']} threads)" for b in child["blas"])
            a.header_extra.append(f"- numpy `q @ c.T` baseline for {n:,} x {d} (child process, env {child['env']}): "
                                  f"{blas}")
            for r in child["results"]:
                rows.append(dict(section=f"float32 {n}x{d}", n=n, d=d, q=r["q"], threads=r["threads"],
                                 name="numpy q @ c.T alone", t=r["t"], sub=None, exact="n/a (no top-k)",
                                 ceiling=ceiling_float(n, d, r["q"], r["threads"], a)))
                log(f"  float32 {n}x{d} Q={r['q']:<5} t={r['threads']} numpy q @ c.T alone {_fmt_ms(r['t']):>10} ms")
    return rows


def run_matmul_child(a, n, d, qs, log):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    cmd = [sys.executable, os.path.abspath(__file__), "--_matmul-child", f"{n}x{d}:{','.join(map(str, qs))}",
           "--threads", ",".join(map(str, a.threads)), "--repeat", str(a.repeat)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        log(f"  matmul child failed:\n{r.stderr[-2000:]}")
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def matmul_child_main(a):
    """numpy q @ c.T alone: per corpus block of 65 536 rows into one reused buffer."""
    from threadpoolctl import threadpool_info, threadpool_limits

    shape, qs = a._matmul_child.split(":")
    n, d = (int(x) for x in shape.split("x"))
    qs = [int(x) for x in qs.split(",")]
    c = C.float_corpus(n, d, 3)
    fq = C.float_queries(max(qs), d, 3)
    blk = 65536
    out = {"results": [], "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}}
    for nq in qs:
        q = fq[:nq]
        buf = np.empty((nq, min(blk, n)), np.float32)

        def fn(q, k):
            for s in range(0, n, blk):
                e = min(n, s + blk)
                np.matmul(q, c[s:e].T, out=buf[:, : e - s])
            return buf, None
        for threads in a.threads:
            with threadpool_limits(limits=threads, user_api="blas"):
                t, _ = measure(fn, (q, C.K), a.repeat)
                out["blas"] = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                                      "threading_layer")}
                               for i in threadpool_info() if i.get("user_api") == "blas"]
            out["results"].append({"q": nq, "threads": threads, "t": t})
    print(json.dumps(out))


def run_rescore_section(data, a, log):
    rows = []
    nq, m = a.rescore_queries, 100
    with tempfile.TemporaryDirectory(prefix="ql_rescore_") as tmp:
        mm = C.rescore_memmap(tmp, data)
        rng = np.random.default_rng(5)
        q = rng.standard_normal((nq, data["d"]))
        cand = C.rescore_candidates(len(mm), nq, m)
        ref = None
        for threads in a.threads:
            for name, setup in (("quantlib", C.ql_rescore), ("numpy (dequantize + einsum)", C.numpy_rescore)):
                if name.startswith("numpy") and threads != a.threads[0]:
                    continue
                tt = threads if name == "quantlib" else 1
                fn = setup(mm, data["ranges"], tt)
                t, res = measure(fn, (q, cand), a.repeat)
                if ref is None:
                    ref = res[0]
                close = np.allclose(res[0], ref, rtol=1e-12, atol=1e-9)
                rows.append(dict(section="rescore", q=nq, threads=tt, name=name, t=t, sub=None,
                                 exact="yes (rtol 1e-12)" if close else "NO", ceiling=None))
                log(f"  rescore t={tt} {name:<28} {t / nq * 1e6:>9.1f} us/query")
        del mm
    return rows


# ------------------------------------------------------------------ report


# single-threaded numpy baselines: timed once per Q and shown with every thread count
SINGLE_THREADED = {"numpy", "numpy int32 matmul", "numpy (dequantize + einsum)"}
# baselines are not "rivals" (the best-rival ratio is over the other libraries only)
NUMPY_BASELINES = SINGLE_THREADED | {"numpy float32 BLAS (float data)"}


def render(sections, header, a):
    lines = list(header)
    targets = {
        "hamming": "issue 3 targets: Q=1 >= 80 % of read bandwidth; Q=1000 >= 70 % of popcount peak; "
                   ">= 1.5x faiss IndexBinaryFlat; >= 1.2x the best other peer",
        "int8": "issue 4 targets: Q=1000 >= 60 % of VNNI peak; Q=1 >= 80 % of read bandwidth; "
                ">= 2x numpy float32 BLAS; >= 1.5x the best peer",
    }
    for kind, rows, title in sections:
        if not rows:
            continue
        lines += ["", f"### {title}", ""]
        if kind == "rescore":
            lines += ["| queries x candidates | threads | contender | median ms | us / query | x vs numpy | check |",
                      "|---|---|---|---|---|---|---|"]
            base = {r["q"]: r["t"] for r in rows if r["name"] in NUMPY_BASELINES}
            for r in rows:
                sp = base.get(r["q"])
                lines.append(f"| {r['q']} x 100 | {r['threads']} | {r['name']} | {_fmt_ms(r['t'])} | "
                             f"{r['t'] / r['q'] * 1e6:.1f} | {_ratio(sp / r['t'] if sp else None)} | {r['exact']} |")
            continue
        lines += ["| Q | threads | contender | median ms | ms / query | x vs numpy | best rival / this "
                  "| % of ceiling (ceiling ms) | exact |",
                  "|---|---|---|---|---|---|---|---|---|"]
        numpy_name = "numpy" if kind == "hamming" else "numpy int32 matmul"
        for nq in a.queries:
            for threads in a.threads:
                group = [r for r in rows if r["q"] == nq and (r["threads"] == threads or
                                                              (r["name"] in SINGLE_THREADED and threads == a.threads[0]))]
                base = next((r["t"] for r in rows if r["q"] == nq and r["name"] == numpy_name), None)
                rivals = [r["t"] for r in rows if r["q"] == nq and r["threads"] == threads
                          and r["name"] != "quantlib" and r["name"] not in NUMPY_BASELINES]
                best = min(rivals) if rivals else None
                for r in sorted(group, key=lambda r: r["t"]):
                    t = r["t"]
                    mark = f" ~(Q'={r['sub']})" if r["sub"] else ""
                    ceil = r.get("ceiling")
                    pct = f"{100 * ceil / t:.0f} % ({_fmt_ms(ceil)})" if ceil else ""
                    lines.append(
                        f"| {nq} | {r['threads']} | {r['name']} | {_fmt_ms(t)}{mark} | {_fmt_ms(t / nq)} | "
                        f"{_ratio(base / t if base else None)} | {_ratio(best / t if best else None)} | "
                        f"{pct} | {r['exact']} |")
        lines += ["", targets.get(kind, "")]
        ql = [r for r in rows if r["name"] == "quantlib"]
        for r in ql:
            extra = []
            for other in rows:
                if other["q"] == r["q"] and other["threads"] == r["threads"] and other["name"] in (
                        "faiss IndexBinaryFlat",):
                    extra.append(f"{other['t'] / r['t']:.2f}x faiss")
                if other["q"] == r["q"] and other["name"] == "numpy float32 BLAS (float data)" \
                        and other["threads"] == r["threads"]:
                    extra.append(f"{other['t'] / r['t']:.2f}x float32 BLAS")
            others = [o["t"] for o in rows if o["q"] == r["q"] and o["threads"] == r["threads"]
                      and o["name"] not in NUMPY_BASELINES and o["name"] != "quantlib"
                      and o["name"] != "faiss IndexBinaryFlat"]
            if others:
                extra.append(f"{min(others) / r['t']:.2f}x best other peer")
            lines.append(f"- quantlib Q={r['q']} threads={r['threads']}: {100 * r['ceiling'] / r['t']:.0f} % of "
                         f"ceiling; " + ", ".join(extra))
    return "\n".join(lines)


def render_float(rows, a):
    """Markdown table of the float32 section: ratios to numpy q @ c.T alone and
    faiss, share of the measured FMA peak and of the row's ceiling."""
    lines = []
    sets = list(dict.fromkeys((r["n"], r["d"]) for r in rows))
    for n, d in sets:
        lines += ["", f"### Issue 16.2: float32 inner-product top-{C.K}, {n:,} x {d} float32", "",
                  "| Q | threads | contender | median ms | x vs numpy q @ c.T alone | x vs faiss | GFLOP/s | "
                  "% of FMA peak | % of ceiling (ceiling ms) | check |", "|---|---|---|---|---|---|---|---|---|---|"]
        grp = [r for r in rows if r["n"] == n and r["d"] == d]
        for nq in sorted({r["q"] for r in grp}):
            for threads in a.threads:
                g = [r for r in grp if r["q"] == nq and r["threads"] == threads]
                base = next((r["t"] for r in g if r["name"].startswith("numpy")), None)
                fa = next((r["t"] for r in g if r["name"].startswith("faiss")), None)
                for r in sorted(g, key=lambda r: r["t"]):
                    fl = 2.0 * nq * n * d / r["t"]
                    pk = peak(a, "fma512_flops", threads)
                    lines.append(f"| {nq} | {threads} | {r['name']} | {_fmt_ms(r['t'])} | "
                                 f"{_ratio(base / r['t'] if base else None)} | {_ratio(fa / r['t'] if fa else None)} | "
                                 f"{fl / 1e9:.1f} | {100 * fl / pk:.0f} % | "
                                 f"{100 * r['ceiling'] / r['t']:.0f} % ({_fmt_ms(r['ceiling'])}) | {r['exact']} |")
        lines += ["", "issue 16 targets: float32 search at least as fast as numpy `q @ c.T` alone at every Q "
                      "(same threads); >= 50 % of the measured FMA peak at Q=1000; x > 1 = quantlib faster"]
    return lines


def roofline(all_rows, a, path):
    """Achieved vs ceiling per operation, Q and thread count: x = operations per
    corpus byte, y = operations/s; the roof is min(compute peak, read BW * x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = []
    for r in all_rows:
        k = r["section"]
        if k == "rescore":
            continue
        if k not in kinds:
            kinds.append(k)
    if not kinds:
        return
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rows = [r for r in all_rows if r["section"] == kind]
        if kind == "hamming":
            unit, key = "bit ops (XOR+popcount bits)", "vpopcntq_bits"
            per = lambda r: (r["q"] * r["nbytes"] * 8, r["nbytes"])  # ops per row, bytes per row
        elif kind == "int8":
            unit, key = "u8 x s8 MAC", "vnni_macs"
            per = lambda r: (r["q"] * r["d"], r["d"])
        else:
            unit, key = "FP32 FLOP", "fma512_flops"
            per = lambda r: (2 * r["q"] * r["d"], 4 * r["d"])
        xs = np.logspace(-2, 4, 200)
        bw = peak(a, "read_bw", max(a.threads))
        for t in a.threads:
            pk = peak(a, key, t)
            ax.plot(xs, np.minimum(pk, bw * xs), "--", lw=1, label=f"roof {t} thr ({pk:.3g}/s, {bw / 1e9:.1f} GB/s)")
        for name in dict.fromkeys(r["name"] for r in rows):
            pts = [r for r in rows if r["name"] == name]
            x = [per(r)[0] / per(r)[1] for r in pts]
            y = [per(r)[0] * r.get("n", 0) / r["t"] for r in pts]
            ax.scatter(x, y, s=18, label=name)
            if name == "quantlib":
                for r, xi, yi in zip(pts, x, y):
                    ax.annotate(f"Q={r['q']},{r['threads']}t", (xi, yi), fontsize=6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{unit} per corpus byte")
        ax.set_ylabel(f"{unit} / s")
        ax.set_title(f"roofline: {kind}", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot(sections, a, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    secs = [(k, rows, title) for k, rows, title in sections if rows and k != "rescore"]
    if not secs:
        return
    fig, axes = plt.subplots(1, len(secs), figsize=(7 * len(secs), 5), squeeze=False)
    for ax, (kind, rows, title) in zip(axes[0], secs):
        names = list(dict.fromkeys(r["name"] for r in rows))
        groups = [(q, t) for q in a.queries for t in a.threads]
        width = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            ys = []
            for q, t in groups:
                r = next((r for r in rows if r["name"] == name and r["q"] == q and
                          (r["threads"] == t or (r["name"] in SINGLE_THREADED))), None)
                ys.append(r["t"] * 1e3 if r else np.nan)
            ax.bar(np.arange(len(groups)) + j * width, ys, width, label=name)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
        ax.set_xticklabels([f"Q={q}\n{t} thr" for q, t in groups])
        ax.set_yscale("log")
        ax.set_ylabel("median ms (log)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="corpus rows (default 1 000 000)")
    p.add_argument("--queries", default="1,16,1000", help="comma-separated Q values (default 1,16,1000)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--only", default="hamming,int8,rescore",
                   help="comma-separated subset of hamming,int8,rescore (default: all)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement, median taken (>= 5)")
    p.add_argument("--max-run-seconds", type=float, default=60.0,
                   help="predicted time above which a contender is timed on fewer queries and scaled")
    p.add_argument("--rescore-queries", type=int, default=1000)
    p.add_argument("--bw", type=float, default=None, help="override: read bandwidth GB/s (default: measure)")
    p.add_argument("--popcnt-peak", type=float, default=None,
                   help="override: 1024-bit distances/s on 2 cores (default: measure)")
    p.add_argument("--vnni-peak", type=float, default=None, help="override: u8 x s8 MAC/s on 2 cores (default: measure)")
    p.add_argument("--fma-peak", type=float, default=None, help="override: FP32 FLOP/s on 2 cores (default: measure)")
    p.add_argument("--float-sets", default="1000000x1024:1,16,1000;55000x384:1,16,1000,5000",
                   help="float32 section data sets, NxD:Q,Q;... (default 1M x 1024 and 55k x 384)")
    p.add_argument("--plot", help="save a bar chart (PNG) here, and the roofline next to it (*-roofline.png)")
    p.add_argument("--_matmul-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--markdown", help="also write the markdown report here")
    p.add_argument("--_float-child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.queries = [int(x) for x in a.queries.split(",")]
    a.threads = [int(x) for x in a.threads.split(",")]
    if a._matmul_child:
        return matmul_child_main(a)
    if a.repeat < 5 and not a._float_child:
        p.error("--repeat must be >= 5 (medians of at least 5 runs)")
    only = set(a.only.split(","))
    if not only <= {"hamming", "int8", "rescore", "float32"}:
        p.error(f"--only takes hamming, int8, rescore, float32; got {a.only}")
    if a._float_child:
        return float_child_main(a)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    cfg = quantlib.show_config(print_out=False)
    log("ceilings: compiling and running benchmarks/ceilings.c ...")
    a.ceil = CEIL.measure(sorted(set(a.threads)))
    a.header_extra = []
    try:
        ts = subprocess.run(["taskset", "-p", str(os.getpid())], capture_output=True, text=True).stdout.strip()
    except OSError:
        ts = "taskset unavailable"
    header = [
        "## quantlib exact search benchmark",
        "",
        f"- CPU: {cpu_model()} ({cfg['threads']} usable cores); {platform.system()} {platform.machine()}",
        f"- quantlib {quantlib.__version__}: active ISA **{quantlib.get_isa()}** (usable: "
        f"{', '.join(quantlib.available_isas())}); CPU features: {' '.join(cfg['cpu_features'])}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        f"- BLAS in this process: {'; '.join(blas_info())}; OPENBLAS_CORETYPE="
        f"{os.environ.get('OPENBLAS_CORETYPE')}, OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE')}",
        f"- threads: quantlib `threads=`, faiss `omp_set_num_threads`, usearch `threads=`, SimSIMD "
        f"`threads=`, NumKong via threadpoolctl (OpenMP), BLAS via threadpoolctl; numpy baselines are "
        f"single-threaded (timed once, compared with every thread count)",
        f"- N = {a.n:,}, k = {C.K}, Q in {a.queries}, threads in {a.threads}; median of {a.repeat} runs after "
        f"1 warm-up",
        f"- affinity: `taskset -p` -> {ts}; usable cores {len(os.sched_getaffinity(0))}",
        "- ceilings measured now by benchmarks/ceilings.c (best of 5; compute per second of the probe's own CPU "
        "time, wall-clock value in brackets; read BW of a 2 GiB buffer, wall clock):",
        "",
        "| threads | FMA512 GFLOP/s | FMA256 GFLOP/s | vpdpbusd GMAC/s | vpopcntq Gbit/s | AVX2 popcount Gbit/s "
        "| read GB/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for t, cc in sorted(a.ceil.items()):
        def f(key, scale=1e9):
            v, w = cc.get(key + "_oncpu"), cc.get(key)
            return "n/a" if v is None else f"{v / scale:.1f} [{w / scale:.1f}]"
        header.append(f"| {t} | {f('fma512_flops')} | {f('fma256_flops')} | {f('vnni_macs')} | {f('vpopcntq_bits')} | "
                      f"{f('avx2_popcnt_bits')} | {cc['read_bw'] / 1e9:.1f} |")
    overrides = [f"{k}={getattr(a, k)}" for k in ("bw", "popcnt_peak", "vnni_peak", "fma_peak") if getattr(a, k)]
    header.append("")
    header.append("- ceilings used: " + ("CLI overrides " + ", ".join(overrides) + "; else " if overrides else "")
                  + "measured (compute: on-CPU value at the row's thread count; read: all threads)")
    sections = []
    t_start = time.time()
    load0 = os.getloadavg()
    if "hamming" in only:
        log(f"hamming: building {a.n:,} x {C.BITS} bit codes ...")
        hd = C.make_hamming_data(a.n, max(a.queries))
        rows = run_search_section("hamming", hd, C.contenders(C.HAMMING_CONTENDERS), a, log)
        sections.append(("hamming", rows, f"Issue 3: Hamming top-{C.K}, {a.n:,} codes x {C.BITS} bits"))
        del hd
    idata = None
    if "int8" in only or "rescore" in only:
        log(f"int8: building {a.n:,} x {C.DIM} int8 codes ...")
        idata = C.make_int8_data(a.n, max(a.queries))
    if "int8" in only:
        rows = run_search_section("int8", idata, C.contenders(C.INT8_CONTENDERS), a, log)
        child = run_float_child(a, log)
        if child:
            want = float(idata["float_queries"].astype(np.float64).sum()
                         + C.float_corpus(min(256, a.n), C.DIM, 2).astype(np.float64).sum())
            same = abs(child["checksum"] - want) <= 1e-6 * max(1.0, abs(want))
            blas = "; ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']} "
                             f"({b['threading_layer']})" for b in child["blas"])
            header.append(f"- numpy float32 BLAS baseline (child process, OPENBLAS_CORETYPE/L2_SIZE unset: "
                          f"{child['env']}): {blas}; same float data: {'yes' if same else 'NO (checksum differs)'}")
            for r in child["results"]:
                rows.append(dict(section="int8", q=r["q"], threads=r["threads"], n=a.n, d=C.DIM, nbytes=C.DIM,
                                 name="numpy float32 BLAS (float data)", t=r["t"], sub=r["sub"],
                                 exact="n/a (float)", ceiling=ceiling_int8(a.n, C.DIM, r["q"], r["threads"], a)))
                log(f"  int8 Q={r['q']:<5} t={r['threads']} numpy float32 BLAS         {_fmt_ms(r['t']):>10} ms")
        sections.append(("int8", rows, f"Issue 4: int8 top-{C.K}, {a.n:,} x {C.DIM} int8"))
    float_rows = run_float_section(a, log) if "float32" in only else []
    if "rescore" in only:
        rows = run_rescore_section(idata, a, log)
        sections.append(("rescore", rows, f"Rescoring {a.rescore_queries} queries x 100 candidates x {C.DIM} dims "
                                          f"(int8 codes from a memmap, warm page cache)"))
    header.append(f"- wall time of the report: {time.time() - t_start:.0f} s; load average at start "
                  f"{load0[0]:.2f}, at end {os.getloadavg()[0]:.2f} (other processes on these cores make "
                  f"multi-thread timings noisy)")
    header += a.header_extra
    text = render(sections, header, a)
    if float_rows:
        text += "\n" + "\n".join(render_float(float_rows, a))
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")
    if a.plot:
        plot(sections, a, a.plot)
        roof = os.path.splitext(a.plot)[0] + "-roofline.png"
        roofline([r for _, rows, _ in sections for r in rows] + float_rows, a, roof)
        log(f"plots saved to {a.plot} and {roof}")


if __name__ == "__main__":
    main()
