#!/usr/bin/env python
"""Sharded search on a local Dask cluster vs one index (issue 9).

    python benchmarks/bench_distributed.py                      # 4 shards x 250 k x 1024, Q = 1,100,1000
    python benchmarks/bench_distributed.py --rows-per-shard 20000 --queries 1,100 --markdown out.md

What it does, all on one machine:

1. writes ``shards * rows_per_shard`` float32 embeddings of ``--dim``
   dimensions chunk by chunk into a ``.npy`` memory map in a temporary
   directory (seeded normal data; nothing of that size is held in RAM);
2. starts ``LocalCluster(n_workers=--workers, threads_per_worker=...,
   processes=...)`` and builds, timed: a sharded ubinary Index and a sharded
   RescorePipeline with ``build_sharded`` (the workers reopen the memory map
   by path), and the single-machine ubinary Index and RescorePipeline from
   the same memory map (``threads = workers * threads_per_worker``);
3. checks that the sharded results equal the single ones (values and ids);
4. times ``search`` for every Q in ``--queries`` (one warm-up, median of
   ``--repeat`` >= 5 runs): single Index vs sharded Index, single pipeline vs
   sharded pipeline (exact two-round mode and the one-round "local" mode),
   and reports latency, throughput, the payload bytes moved per query
   (query codes sent + top-k' results received, summed over shards and
   rounds, from ``search(stats=...)``) and the share of the client-side merge;
5. times ``merge_topk`` alone for more shards (``--merge-shards``) to show how
   the client's merge cost grows with the shard count.

The temporary directory (about N * dim * 4 bytes of floats plus twice
N * dim int8 bytes) is deleted at the end unless ``--keep``.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run from a checkout: use the in-place build
    sys.path.insert(0, ROOT)

import quantlib  # noqa: E402


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"


def make_data(path: str, n: int, dim: int, seed: int, chunk: int = 65536) -> np.ndarray:
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for j, s in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng([seed, j])
        mm[s: s + chunk] = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
    mm.flush()
    del mm
    return np.load(path, mmap_mode="r")


def loopback_bytes() -> int:
    """Bytes received on the loopback interface so far (/proc/net/dev): with
    worker processes, that is the client/scheduler/worker traffic including
    serialisation, Dask's framing and TCP/IP headers (plus heartbeats and any
    other loopback traffic on the machine). -1 if unavailable."""
    try:
        with open("/proc/net/dev") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name.strip() == "lo":
                    return int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def timed(fn, repeat: int):
    """One warm-up, then ``repeat`` runs: (median seconds, warm-up result, per-run extra list)."""
    res = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), res


def fmt_ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 10 else (f"{ms:.1f}" if ms < 1000 else f"{ms:,.0f}")


def fmt_bytes(b: float) -> str:
    for unit, f in (("MB", 1e6), ("kB", 1e3)):
        if b >= f:
            return f"{b / f:.1f} {unit}"
    return f"{b:.0f} B"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rows-per-shard", type=int, default=250_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", default="1,100,1000")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rescore-multiplier", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads-per-worker", type=int, default=1)
    ap.add_argument("--processes", action=argparse.BooleanOptionalAction, default=True,
                    help="worker processes (default) or threads in this process (--no-processes)")
    ap.add_argument("--direct", action=argparse.BooleanOptionalAction, default=True,
                    help="Client(direct_to_workers=...): actor calls straight to the workers (default) or "
                         "proxied through the scheduler (Dask's default; twice the bytes, one more hop)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--merge-shards", default="2,4,16,64,256")
    ap.add_argument("--markdown", help="also write the report to this file")
    ap.add_argument("--tmp", default=None, help="directory for the temporary files (default: the system's)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary files")
    ap.add_argument("--seed", type=int, default=2026)
    a = ap.parse_args(argv)
    if a.repeat < 5:
        ap.error("--repeat must be >= 5")
    qs = [int(v) for v in a.queries.split(",")]
    merge_shards = [int(v) for v in a.merge_shards.split(",")]

    import dask
    import distributed
    from distributed import Client, LocalCluster

    from quantlib.distributed import build_sharded

    n = a.shards * a.rows_per_shard
    threads = a.workers * a.threads_per_worker
    load0 = os.getloadavg()
    t_wall = time.perf_counter()
    out = []
    p = out.append
    p("## quantlib sharded search on a local Dask cluster (issue 9)\n")
    p(f"- CPU: {cpu_model()}; usable cores (taskset): {sorted(os.sched_getaffinity(0))}; "
      f"quantlib ISA {quantlib.get_isa()}")
    p(f"- cluster: LocalCluster({a.workers} workers x {a.threads_per_worker} thread, "
      f"processes={a.processes}), Client(direct_to_workers={a.direct}); shard calls use threads=1 each; "
      f"single-index runs use threads={threads}")
    p(f"- data: {a.shards} shards x {a.rows_per_shard:,} rows = {n:,} x {a.dim} float32 (seeded normal, "
      f"memory-mapped .npy); k = {a.k}, rescore_multiplier = {a.rescore_multiplier}; median of {a.repeat} "
      "runs after one warm-up")
    p(f"- versions: python {platform.python_version()}, numpy {np.__version__}, quantlib {quantlib.__version__}, "
      f"dask {dask.__version__}, distributed {distributed.__version__}")

    tmp = tempfile.mkdtemp(prefix="ql-bench-dist-", dir=a.tmp)
    try:
        t0 = time.perf_counter()
        x = make_data(os.path.join(tmp, "x.npy"), n, a.dim, a.seed)
        t_data = time.perf_counter() - t0
        qall = np.random.default_rng(a.seed + 1).standard_normal((max(qs), a.dim), dtype=np.float32)
        cluster = LocalCluster(n_workers=a.workers, threads_per_worker=a.threads_per_worker,
                               processes=a.processes, dashboard_address=":0", silence_logs=logging.ERROR)
        client = Client(cluster, direct_to_workers=a.direct)
        try:
            builds = {}
            t0 = time.perf_counter()
            sh_ub = build_sharded(x, os.path.join(tmp, "ub"), n_shards=a.shards, precision="ubinary", client=client)
            builds["sharded Index ubinary"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            sh_p = build_sharded(x, os.path.join(tmp, "pipe"), n_shards=a.shards, rescore=True, client=client)
            builds["sharded RescorePipeline (incl. global ranges pass)"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            single_ub = quantlib.Index(a.dim, "ubinary")
            for s in range(0, n, 65536):
                single_ub.add(quantlib.quantize_embeddings(np.asarray(x[s: s + 65536]), "ubinary", threads=threads))
            builds["single Index ubinary"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            single_p = quantlib.RescorePipeline.build(x, os.path.join(tmp, "single.qlx"), threads=threads)
            builds["single RescorePipeline (incl. ranges pass)"] = time.perf_counter() - t0
            same_ranges = np.array_equal(single_p.ranges, sh_p.ranges)

            def sharded(obj, **kw):
                def run(q, st):
                    return obj.search(q, a.k, stats=st, **kw)
                return run

            contenders = [
                ("single Index ubinary", lambda q, st: single_ub.search(q, a.k, threads=threads), None),
                ("sharded Index ubinary", sharded(sh_ub), "single Index ubinary"),
                ("single RescorePipeline", lambda q, st: single_p.search(q, a.k, a.rescore_multiplier,
                                                                           threads=threads), None),
                ("sharded pipeline, exact (2 rounds)", sharded(sh_p, rescore_multiplier=a.rescore_multiplier),
                 "single RescorePipeline"),
                ("sharded pipeline, local (1 round)", sharded(sh_p, rescore_multiplier=a.rescore_multiplier,
                                                             rescore_mode="local"), "single RescorePipeline"),
            ]
            rows = []
            for nq in qs:
                q = qall[:nq]
                ref = {}
                for name, fn, base in contenders:
                    stats_runs = []

                    def call():
                        st = {}
                        r = fn(q, st)
                        if st:
                            stats_runs.append(st)
                        return r

                    io0 = loopback_bytes() if a.processes else -1
                    med, res = timed(call, a.repeat)
                    io1 = loopback_bytes() if a.processes else -1
                    ref[name] = (med, res)
                    if base is None:
                        same = "(reference)"
                    else:
                        eq = np.array_equal(res[0], ref[base][1][0]) and np.array_equal(res[1], ref[base][1][1])
                        same = "yes" if eq else "no"
                    if stats_runs:
                        st = stats_runs[-1]
                        moved = (st["bytes_sent"] + st["bytes_received"]) / nq
                        merge = statistics.median(s["merge_seconds"] / s["total_seconds"] for s in stats_runs)
                        rounds = " + ".join(fmt_ms(statistics.median(s["rounds"][j]["seconds"] for s in stats_runs))
                                            for j in range(len(st["rounds"])))
                        wire = "-" if io0 < 0 or io1 < 0 else fmt_bytes((io1 - io0) / (len(stats_runs) * nq))
                        extra = (fmt_bytes(moved), wire, f"{100 * merge:.1f} %", rounds)
                    else:
                        extra = ("-", "-", "-", "-")
                    vs = "" if base is None else f"{ref[base][0] / med:.2f}x"
                    rows.append((nq, name, fmt_ms(med), f"{nq / med:,.0f}", vs, *extra, same))
                    print(rows[-1], flush=True)

            # the client's merge alone, for more shards than this machine can host
            merge_rows = []
            rng = np.random.default_rng(0)
            for nq in qs:
                for s_count in merge_shards:
                    for kp, label in ((a.k, "k"), (a.k * a.rescore_multiplier, "k*m")):
                        v = rng.integers(0, a.dim, (nq, s_count * kp)).astype(np.int32)
                        g = rng.permutation(nq * s_count * kp).reshape(nq, -1).astype(np.int64)
                        med, _ = timed(lambda: quantlib.merge_topk(v, g, kp, descending=False), a.repeat)
                        merge_rows.append((nq, s_count, f"{label} = {kp}", fmt_ms(med),
                                           fmt_bytes(s_count * kp * 12)))
            sh_ub.close()
            sh_p.close()
        finally:
            client.close()
            cluster.close()
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    p(f"- data generation {t_data:.1f} s; ranges of the sharded build equal the single pipeline's: "
      f"{'yes' if same_ranges else 'NO'}")
    p(f"- wall time {time.perf_counter() - t_wall:.0f} s; load average at start {load0[0]:.2f}, at end "
      f"{os.getloadavg()[0]:.2f}\n")
    p("### Build\n")
    p("| what | seconds |")
    p("|---|---|")
    for name, sec in builds.items():
        p(f"| {name} | {sec:.1f} |")
    p("\n### Search\n")
    p("Throughput = Q / median latency. \"speed-up\" = the single index's latency / this row's. "
      "Payload bytes = numpy bytes of the query codes sent and the top-k' values + ids received, all shards "
      "and rounds, per query (from search(stats=...)). \"wire bytes\" (worker processes only) = bytes "
      "received on the loopback interface during the runs, per query (/proc/net/dev: serialisation, Dask's "
      "framing and TCP/IP headers included, plus heartbeats). \"merge\" = share of the latency spent in the "
      "client's merge. \"rounds ms\" = median time of each round (send, shard work, receive).\n")
    p("| Q | contender | median ms | queries/s | speed-up | payload bytes / query | wire bytes / query | merge "
      "| rounds ms | identical |")
    p("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p("| " + " | ".join(str(c) for c in r) + " |")
    p("\n### Client-side merge cost vs shard count\n")
    p("`merge_topk` of Q x (S * k') candidates (int32 values, int64 ids); the bytes column is what S shards "
      "send per query in that round (S * k' * (4 + 8)).\n")
    p("| Q | shards S | k' | merge ms | received bytes / query |")
    p("|---|---|---|---|---|")
    for r in merge_rows:
        p("| " + " | ".join(str(c) for c in r) + " |")
    text = "\n".join(out) + "\n"
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
