#!/usr/bin/env python3
"""Print a JSON fingerprint (SHA-256 of every kernel's output on fixed data) for the active ISA.

Run once natively per ISA and once under each emulated CPU: the hashes must be identical everywhere,
because the kernels are exact (integer results, deterministic top-k, ties to the lower index) and
quantization is bit-for-bit. Used by tools/qemu_cpu_test.sh.

    python tools/isa_fingerprint.py            # active (best or QUANTLIB_ISA) level
    python tools/isa_fingerprint.py --all      # every usable level; exits 1 if they differ

Only the public API (quantize_embeddings, calibration_ranges) is guaranteed; the quantlib._core
kernels are fingerprinted when they keep the signatures of the foundation commit. A part whose
call fails is recorded as "unavailable: <error>" (identically on every CPU), so a signature change
elsewhere shows up as a visible entry, never as a silent pass.
"""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np

import quantlib
from quantlib import _core


def _h(*arrays) -> str:
    m = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        m.update(str(a.dtype).encode() + str(a.shape).encode())
        m.update(a.tobytes())
    return m.hexdigest()[:16]


def parts() -> dict:
    rng = np.random.default_rng(20261125)
    emb = rng.standard_normal((257, 385)).astype(np.float32)
    emb[3, :7] = 0.0
    emb64 = emb.astype(np.float64)
    bits = rng.integers(0, 256, (67, 97), dtype=np.uint8)
    qbits = rng.integers(0, 256, (11, 97), dtype=np.uint8)
    bits[5] = qbits[1]
    codes = rng.integers(0, 256, (131, 1031), dtype=np.uint8)
    qcodes = rng.integers(0, 256, (9, 1031), dtype=np.uint8)

    def p_quant():
        ranges = quantlib.calibration_ranges(emb)
        out = [quantlib.quantize_embeddings(emb, prec, ranges=ranges)
               if prec in ("int8", "uint8") else quantlib.quantize_embeddings(emb, prec)
               for prec in ("int8", "uint8", "binary", "ubinary")]
        out.append(quantlib.quantize_embeddings(emb64, "ubinary"))
        return _h(ranges, *out)

    def p_hamming_matrix():
        out = np.empty((11, 67), np.int32)
        _core.hamming_matrix(qbits, bits, out)
        return _h(out)

    def p_hamming_topk():
        d = np.empty((11, 10), np.int32)
        i = np.empty((11, 10), np.int64)
        _core.hamming_topk(qbits, bits, 10, 0, d, i)
        return _h(d, i)

    def p_dot(signed):
        def f():
            out = np.empty((9, 131), np.int32)
            _core.dot_matrix(qcodes, codes, signed, out)
            return _h(out)
        return f

    def p_dot_topk(signed):
        def f():
            d = np.empty((9, 10), np.int32)
            i = np.empty((9, 10), np.int64)
            _core.dot_topk(qcodes, codes, signed, 10, 0, d, i)
            return _h(d, i)
        return f

    res = {}
    for name, fn in [("quantize_embeddings", p_quant), ("hamming_matrix", p_hamming_matrix),
                     ("hamming_topk", p_hamming_topk), ("dot_matrix_s8", p_dot(True)),
                     ("dot_matrix_u8", p_dot(False)), ("dot_topk_s8", p_dot_topk(True)),
                     ("dot_topk_u8", p_dot_topk(False))]:
        try:
            res[name] = fn()
        except Exception as exc:  # noqa: BLE001  (recorded, compared like any other value)
            res[name] = f"unavailable: {type(exc).__name__}"
    return res


def main() -> int:
    if "--all" in sys.argv:
        prev = quantlib.get_isa()
        by_isa = {}
        for isa in quantlib.available_isas():
            quantlib.set_isa(isa)
            by_isa[isa] = parts()
        quantlib.set_isa(prev)
        print(json.dumps(by_isa, indent=1, sort_keys=True))
        ref = next(iter(by_isa.values()))
        bad = [k for k, v in by_isa.items() if v != ref]
        if bad:
            print(f"ISA levels disagree: {bad}", file=sys.stderr)
            return 1
        return 0
    print(json.dumps({"isa": quantlib.get_isa(), "parts": parts()}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
