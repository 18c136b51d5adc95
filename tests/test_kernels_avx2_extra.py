"""Extra edge cases for the SIMD levels: every usable level must give results
bit-identical to the scalar table (special floats, long codes that overflow
the byte counters, extreme integer values, odd sizes)."""
import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import quantlib
from helpers import use_isa
from quantlib import _core

ISAS = [i for i in quantlib.available_isas() if i != "scalar"]
pytestmark = pytest.mark.skipif(not ISAS, reason="no SIMD level on this CPU")


def _both(isa, fn):
    with use_isa("scalar"):
        want = fn()
    with use_isa(isa):
        got = fn()
    return got, want


def _specials(rng, n, d, dtype):
    x = rng.standard_normal((n, d)).astype(dtype) * 3
    pool = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 1e30, -1e30,
                     np.finfo(dtype).tiny, -np.finfo(dtype).tiny], dtype)
    mask = rng.random((n, d)) < 0.2
    x[mask] = rng.choice(pool, mask.sum())
    return x


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 3, 4, 5, 8, 12, 16, 31, 32, 33, 63, 64, 65, 127, 200, 1029])
def test_float_kernels_specials(isa, rng, dtype, d):
    n = 23
    x = _specials(rng, n, d, dtype)
    start = (rng.standard_normal(d) * 0.5).astype(dtype)
    step = np.abs(rng.standard_normal(d)).astype(dtype) * dtype(0.02)
    step[:: 5] = 0  # division by zero -> inf / nan, clipped like the scalar code
    step[1:: 7] = -step[1:: 7]
    f = "f32" if dtype == np.float32 else "f64"
    for mask in (0, 0x80):
        def pack():
            o = np.empty((n, (d + 7) // 8), np.uint8)
            getattr(_core, "pack_sign_" + f)(x, o, mask)
            return o
        g, w = _both(isa, pack)
        np.testing.assert_array_equal(g, w)

        def quant():
            o = np.empty((n, d), np.uint8)
            c = getattr(_core, "quantize_" + f)(x, start, step, o, mask)
            return o, c
        (g, gc), (w, wc) = _both(isa, quant)
        np.testing.assert_array_equal(g, w)
        assert gc == wc == np.isnan(x).sum()

    def mm():
        mn = np.full(d, np.inf, dtype)
        mx = np.full(d, -np.inf, dtype)
        mn[::3] = np.nan  # a NaN running value is never replaced (scalar semantics)
        mx[1::4] = 0.0
        c = getattr(_core, "minmax_" + f)(x, mn, mx)
        return mn, mx, c
    (gn, gx, gc), (wn, wx, wc) = _both(isa, mm)
    np.testing.assert_array_equal(gn.view(np.uint8), wn.view(np.uint8))  # also the sign of zero
    np.testing.assert_array_equal(gx.view(np.uint8), wx.view(np.uint8))
    assert gc == wc


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("nbytes", [31, 32, 33, 991, 992, 993, 1000, 1023, 2048, 4100])
def test_hamming_long_codes(isa, rng, nbytes):
    a = rng.integers(0, 256, (5, nbytes), dtype=np.uint8)
    b = rng.integers(0, 256, (11, nbytes), dtype=np.uint8)
    b[0] = ~a[0]  # every bit differs: byte counters at their maximum
    b[1] = a[1]

    def run():
        o = np.empty((5, 11), np.int32)
        _core.hamming_matrix(a, b, o)
        d = np.empty((5, 4), np.int32)
        i = np.empty((5, 4), np.int64)
        _core.hamming_topk(a, b, 4, 7, d, i)
        return o, d, i
    (go, gd, gi), (wo, wd, wi) = _both(isa, run)
    np.testing.assert_array_equal(go, wo)
    np.testing.assert_array_equal(gd, wd)
    np.testing.assert_array_equal(gi, wi)
    assert go[0, 0] == 8 * nbytes and go[1, 1] == 0


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("d", [15, 16, 17, 30, 47, 48, 49, 4095, 33025])
def test_dot_extremes(isa, rng, signed, d):
    lo, hi = (-128, 127) if signed else (0, 255)
    a = rng.integers(lo, hi + 1, (5, d)).astype(np.int8 if signed else np.uint8).view(np.uint8)
    b = rng.integers(lo, hi + 1, (9, d)).astype(np.int8 if signed else np.uint8).view(np.uint8)
    a[0] = np.uint8(lo & 0xFF)
    b[0] = np.uint8(lo & 0xFF)
    a[1] = np.uint8(hi & 0xFF)
    b[1] = np.uint8(hi & 0xFF)

    def run():
        o = np.empty((5, 9), np.int32)
        _core.dot_matrix(a, b, signed, o)
        s = np.empty((5, 3), np.int32)
        i = np.empty((5, 3), np.int64)
        _core.dot_topk(a, b, signed, 3, 0, s, i)
        return o, s, i
    (go, gs, gi), (wo, ws, wi) = _both(isa, run)
    np.testing.assert_array_equal(go, wo)
    np.testing.assert_array_equal(gs, ws)
    np.testing.assert_array_equal(gi, wi)
    at = a.view(np.int8) if signed else a
    bt = b.view(np.int8) if signed else b
    np.testing.assert_array_equal(go, at.astype(np.int64) @ bt.astype(np.int64).T)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("nq", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 9, 700])
def test_topk_odd_tiles(isa, rng, nq, n):
    for nbytes, d in ((3, 17), (16, 64), (48, 100), (130, 1030)):
        q = rng.integers(0, 4, (nq, nbytes), dtype=np.uint8)
        c = rng.integers(0, 4, (n, nbytes), dtype=np.uint8)
        qd = rng.integers(0, 3, (nq, d), dtype=np.uint8)
        cd = rng.integers(0, 3, (n, d), dtype=np.uint8)
        k = min(7, n)

        def run():
            dd = np.empty((nq, k), np.int32)
            ii = np.empty((nq, k), np.int64)
            _core.hamming_topk(q, c, k, 3, dd, ii)
            ss = np.empty((nq, k), np.int32)
            jj = np.empty((nq, k), np.int64)
            _core.dot_topk(qd, cd, True, k, 0, ss, jj)
            return dd, ii, ss, jj
        got, want = _both(isa, run)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 7, 8, 9, 16, 17, 63, 64, 65, 1031])
def test_rescore_specials(isa, rng, d):
    n, nq, m = 20, 3, 13
    w = rng.standard_normal((nq, d)) * 1e3
    w[0, :: 3] = np.nan
    w[1, 1:: 5] = np.inf
    w[2, :: 4] = -0.0
    codes = rng.integers(0, 256, (n, max(d, (d + 7) // 8) + 3), dtype=np.uint8)
    codes[:, :2] = 0  # 0 * inf -> nan on every level alike
    ids = rng.integers(-2, n, (nq, m)).astype(np.int64)
    for signed in (True, False):
        def run():
            o = np.empty((nq, m))
            _core.rescore_codes(w, codes, signed, ids, o)  # ld = d + 3
            return o
        g, wnt = _both(isa, run)
        np.testing.assert_array_equal(g.view(np.uint64), wnt.view(np.uint64))
    for mask in (0, 0x80):
        cb = codes  # ld > (d + 7) // 8

        def runb():
            o = np.empty((nq, m))
            _core.rescore_bits(w, cb, mask, ids, o)
            return o
        g, wnt = _both(isa, runb)
        np.testing.assert_array_equal(g.view(np.uint64), wnt.view(np.uint64))


# ---- the C-level self-test (csrc/tests/neon_selftest.c) -------------------
ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
_BASE = ["-std=c11", "-O2", "-ffp-contract=off", f"-I{CSRC}"]
_FAMILIES = ("quantize", "hamming", "dot8", "rescore", "f32")
_COMMON = [str(CSRC / f / "scalar.c") for f in _FAMILIES] + [str(CSRC / f) for f in ("dispatch.c", "topk.c")]


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, f"{cmd[0]} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.mark.skipif(not (CSRC / "tests").is_dir(), reason="needs the source tree (csrc/)")
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or "avx2" not in ISAS
                    or shutil.which("gcc") is None, reason="needs gcc and an AVX2 CPU")
def test_c_selftest_avx2(tmp_path):
    objs = [str(tmp_path / f"{f}_avx2.o") for f in _FAMILIES]
    for f, obj in zip(_FAMILIES, objs):
        _run(["gcc", *_BASE, "-mavx2", "-mfma", "-mbmi2", "-mpopcnt", "-mavx", "-c",
              str(CSRC / f / "avx2.c"), "-o", obj])
    exe = tmp_path / "selftest"
    _run(["gcc", *_BASE, "-DQL_HAVE_AVX2=1", str(CSRC / "tests" / "neon_selftest.c"), *objs,
          *_COMMON, "-lm", "-o", str(exe)])
    assert "ALL OK" in _run([str(exe)])


@pytest.mark.skipif(not (CSRC / "tests").is_dir(), reason="needs the source tree (csrc/)")
@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None
                    or not os.path.isdir("/usr/aarch64-linux-gnu"),
                    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64")
def test_c_selftest_neon_under_qemu(tmp_path):
    exe = tmp_path / "neon_selftest"
    _run(["aarch64-linux-gnu-gcc", *_BASE, "-DQL_HAVE_NEON=1", "-static",
          str(CSRC / "tests" / "neon_selftest.c"), *[str(CSRC / f / "neon.c") for f in _FAMILIES],
          *_COMMON, "-lm",
          "-o", str(exe)])
    assert "ALL OK" in _run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(exe)])
