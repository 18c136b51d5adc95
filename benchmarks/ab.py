#!/usr/bin/env python
"""A/B timing of two quantlib trees (a redesign must not slow any kernel down).

    python benchmarks/ab.py --old /path/to/old/tree --new . [--n 1000000] [--rounds 7] [--threads 1,2]

Each tree must be built in place (``python setup.py build_ext --inplace``).
Every measurement runs in a fresh child process with ``PYTHONPATH`` set to one
tree, pinned with ``taskset`` to the first ``threads`` cores when taskset
exists, timed by process CPU time (``--clock cpu``, the default: on a shared
machine wall time mostly measures the neighbours); old and new alternate round by round (so drift of a shared machine
hits both alike), each child times its rows as the median of ``--repeat``
runs after a warm-up, and the table shows, per row, the median over rounds
and new/old. The rows are quantlib's own entry points (public API) at
Q = 1, 16, 1000: Hamming top-10, int8 top-10, float32 top-10, quantize to
binary / int8, and rescoring of 100 candidates per query.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time
import numpy as np
import quantlib
n, d, threads, repeat, qs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
clock = time.process_time if sys.argv[6] == "cpu" else time.perf_counter
qs = [int(x) for x in qs.split(",")]
rng = np.random.default_rng(20261203)
x = rng.standard_normal((n, d), dtype=np.float32)
ranges = quantlib.calibration_ranges(x[:20000])
b = quantlib.quantize_embeddings(x, "ubinary", threads=threads)
i8 = quantlib.quantize_embeddings(x, "int8", ranges=ranges, threads=threads)
xq = rng.standard_normal((max(qs), d), dtype=np.float32)
bq = quantlib.quantize_embeddings(xq, "ubinary")
iq = quantlib.quantize_embeddings(xq, "int8", ranges=ranges)
def med(fn):
    fn()
    ts = []
    for _ in range(repeat):
        t0 = clock(); fn(); ts.append(clock() - t0)
    return statistics.median(ts)
out = {"isa": quantlib.get_isa()}
xs = x[:200000]  # quantize rows: 200k x d
out["quantize binary 200k"] = med(lambda: quantlib.quantize_embeddings(xs, "ubinary", threads=threads))
out["quantize int8 200k"] = med(lambda: quantlib.quantize_embeddings(xs, "int8", ranges=ranges, threads=threads))
for q in qs:
    out[f"hamming Q={q}"] = med(lambda: quantlib.search(bq[:q], b, 10, precision="ubinary", threads=threads))
    out[f"int8 Q={q}"] = med(lambda: quantlib.search(iq[:q], i8, 10, precision="int8", threads=threads))
    if q <= 16:
        out[f"float32 Q={q}"] = med(lambda: quantlib.search(xq[:q], x, 10, precision="float32", threads=threads))
cand = rng.integers(0, n, (1000, 100)).astype(np.int64)
out["rescore int8 1000x100"] = med(lambda: quantlib.rescore(xq[:1000], i8, cand, precision="int8", ranges=ranges,
                                                            k=10, threads=threads))
out["rescore bits 1000x100"] = med(lambda: quantlib.rescore(xq[:1000], b, cand, precision="ubinary", k=10,
                                                            threads=threads))
print(json.dumps(out))
"""


def run_child(tree: str, args, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    cmd = [sys.executable, "-c", CHILD, str(args.n), str(args.dim), str(threads), str(args.repeat), args.queries,
           args.clock]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", ",".join(str(i) for i in range(threads))] + cmd
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/", timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"child for {tree} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True)
    p.add_argument("--new", required=True)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--queries", default="1,16,1000")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="cpu (default): process CPU time, which a loaded machine inflates far less than wall time "
                        "(with 2 threads it is the sum of both); wall: elapsed time")
    p.add_argument("--markdown")
    args = p.parse_args()
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"A/B: old={args.old} new={args.new}; {cpu}; n={args.n} x {args.dim}; {args.rounds} alternating rounds, "
             f"each row the median of {args.repeat} runs in a fresh process ({args.clock} time); taskset to the first T cores",
             ""]
    for t in [int(v) for v in args.threads.split(",")]:
        res = {"old": [], "new": []}
        for r in range(args.rounds):
            for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                res[side].append(run_child(getattr(args, side), args, t))
                print(f"threads={t} round {r + 1}/{args.rounds} {side} done", file=sys.stderr, flush=True)
        isa = (res["old"][0]["isa"], res["new"][0]["isa"])
        lines += [f"### threads = {t} (ISA old {isa[0]}, new {isa[1]})", "",
                  "| row | old (ms) | new (ms) | new / old |", "|---|---|---|---|"]
        for key in res["old"][0]:
            if key == "isa":
                continue
            o = statistics.median(x[key] for x in res["old"]) * 1e3
            nw = statistics.median(x[key] for x in res["new"]) * 1e3
            lines.append(f"| {key} | {o:.3f} | {nw:.3f} | {nw / o:.3f} |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
