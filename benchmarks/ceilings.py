"""Hardware ceilings measured where the benchmark runs (issue 16.1).

Compiles ``ceilings.c`` with the system C compiler (``$CC`` or ``cc``; its own
flags, ``-O2 -pthread``: every ISA kernel in it carries a target attribute and
runs only when the CPU reports the feature) into a temporary directory and runs
it once per thread count. Nothing here is part of the wheel.

    python benchmarks/ceilings.py --threads 1,2      # prints the JSON

Keys per thread count (best of 5 runs): fma512_flops, fma256_flops (FP32 FLOP/s,
2 per FMA lane), vnni_macs (u8 x s8 MAC/s), vpopcntq_bits, avx2_popcnt_bits
(bits counted per s), read_bw (bytes/s, 2 GiB buffer split over the threads);
each also as ``<key>_oncpu``: per second of the threads' own CPU time, i.e. what
the cores deliver while the probe is on them, whatever else runs on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "ceilings.c")


def build(outdir: str) -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"
    exe = os.path.join(outdir, "ceilings")
    subprocess.run([cc, "-O2", "-pthread", "-o", exe, SRC], check=True, capture_output=True, text=True)
    return exe


def measure(threads=(1, 2), seconds: float = 0.2) -> dict:
    """{threads: {key: value}} for each thread count."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="ql_ceilings_") as tmp:
        exe = build(tmp)
        for t in threads:
            r = subprocess.run([exe, str(t), str(seconds)], check=True, capture_output=True, text=True)
            out[t] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", default="1,2")
    p.add_argument("--seconds", type=float, default=0.2)
    a = p.parse_args()
    print(json.dumps(measure([int(x) for x in a.threads.split(",")], a.seconds), indent=1))


if __name__ == "__main__":
    main()
