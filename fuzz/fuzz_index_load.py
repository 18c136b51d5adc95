"""Coverage-guided fuzz target for loading quantlib index files (atheris).

Input layout: byte 0 selects the mode, the remaining bytes are the file.

    bit 0   re-seal the header checksum after mutation (models a hostile or
            buggy writer that computes CRCs: reaches the validation behind it)
    bit 1   re-seal every section checksum the table declares
    bit 2   mmap=False (read into RAM) instead of mmap=True
    bit 3   verify=True
    bit 4   open with RescorePipeline.load instead of quantlib.load_index

The seed corpus (``fuzz/corpus_index_load/``, made by ``--make-seeds DIR``)
holds valid saved files of every kind: Index in all five precisions (empty, one
row, tens of rows, with ids, with ranges) and RescorePipeline (int8 and uint8
rescore codes, with and without ids), each under several mode bytes.

A finding is

* any exception other than FormatError / ValueError / TypeError while
  loading (OSError included: a file that opens must never fail on read);
* a crash, hang or sanitizer report;
* a loaded object whose search differs from a brute-force numpy search over
  the arrays it exposes (a corrupted file may load when its checksums are not
  verified or were re-sealed, but it must then behave like an index holding
  exactly those bytes -- never read out of bounds, never answer garbage);
* a file accepted with every checksum verified (``mmap=False`` or
  ``verify=True``) that is not canonical: saving the loaded object again must
  give the same bytes (up to the minor version and reserved fields), so no
  unvalidated slack (padding, trailing data, inconsistent sizes) exists.

Run:  python fuzz/fuzz_index_load.py fuzz/corpus_index_load -max_total_time=60
Replay one input:  python fuzz/fuzz_index_load.py crash-<sha>
Coverage-blind (e.g. under ASan):  python fuzz/fuzz_index_load.py --random SECONDS CORPUS_DIR
"""
from __future__ import annotations

import os
import struct
import sys
import tempfile
import warnings
import zlib

import atheris
from _harness import save_finding  # fuzz/_harness.py, beside this file

sys.path.insert(0, os.environ.get("QUANTLIB_ROOT")
                or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

with atheris.instrument_imports(include=["quantlib"]):
    import quantlib
    from quantlib import _format as F
    from quantlib import FormatError, RescorePipeline

warnings.simplefilter("ignore")

_DIR = tempfile.mkdtemp(prefix="quantlib-fuzz-index-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
_PATH = os.path.join(_DIR, "f.qlx")
_SAVE = os.path.join(_DIR, "resave.qlx")
_FIXED = struct.Struct("<8sHHIIIQQII")
_ENTRY = struct.Struct("<IIQQQQI4x")

M_SEAL_HEADER, M_SEAL_SECTIONS, M_RAM, M_VERIFY, M_PIPELINE = 1, 2, 4, 8, 16


class Bug(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Bug(msg)


# ------------------------------------------------------------ re-sealing
def _table(buf: bytearray):
    """(header_size, n_sections) if the fixed header parses plausibly."""
    if len(buf) < _FIXED.size:
        return None
    nsec = struct.unpack_from("<I", buf, 44)[0]
    if not 1 <= nsec <= F.MAX_SECTIONS:
        return None
    hsize = F.header_size(nsec)
    if len(buf) < hsize:
        return None
    return hsize, nsec


def seal(buf: bytearray, sections: bool, header: bool) -> None:
    t = _table(buf)
    if t is None:
        return
    hsize, nsec = t
    if sections:
        for i in range(nsec):
            at = _FIXED.size + i * _ENTRY.size
            kind, dcode, rows, cols, off, nbytes, _ = _ENTRY.unpack_from(buf, at)
            if off + nbytes <= len(buf):
                struct.pack_into("<I", buf, at + 40, zlib.crc32(bytes(buf[off:off + nbytes])) & 0xFFFFFFFF)
    if header:
        struct.pack_into("<I", buf, hsize - 4, zlib.crc32(bytes(buf[: hsize - 4])) & 0xFFFFFFFF)


# ------------------------------------------------------------ oracles
def _unpack(codes: np.ndarray) -> np.ndarray:
    return np.unpackbits(np.ascontiguousarray(codes).view(np.uint8), axis=1).astype(np.int64)


def _topk(keys: np.ndarray, k: int, descending: bool):
    k = min(k, keys.shape[1])
    rows = np.arange(keys.shape[1])
    order = np.stack([np.lexsort((rows, -r if descending else r))[:k] for r in keys]) if len(keys) \
        else np.zeros((0, k), np.int64)
    return np.take_along_axis(keys, order, axis=1), order


def check_index(idx: "quantlib.Index") -> None:
    n, prec = len(idx), idx.precision
    codes = np.asarray(idx.codes)
    check(codes.shape == (n, idx.width), f"codes shape {codes.shape} for n={n}, width={idx.width}")
    ids = np.asarray(idx.ids).reshape(-1)
    check(ids.shape == (n,), f"ids shape {ids.shape}")
    q = codes[: min(n, 3)]
    if len(q) == 0:
        q = np.zeros((1, idx.width), codes.dtype)
    k = 5
    try:
        vals, got = idx.search(q, k)
    except ValueError as exc:  # defined refusals for stored content the search cannot rank
        # documented refusals for float32 content: non-finite values, or finite
        # ones whose inner products overflow float32
        check(prec == "float32" and (not np.isfinite(codes).all() or "overflowed" in str(exc)),
              f"search of a loaded index raised {exc!r}")
        return
    kk = min(k, n)
    check(vals.shape == got.shape == (len(q), kk), f"result shape {vals.shape}/{got.shape}, want {(len(q), kk)}")
    if n == 0:
        return
    if prec in ("binary", "ubinary"):
        keys = np.abs(_unpack(q)[:, None, :] - _unpack(codes)[None, :, :]).sum(-1)
        want_v, pos = _topk(keys, k, descending=False)
    elif prec in ("int8", "uint8"):
        keys = q.astype(np.int64) @ codes.astype(np.int64).T
        want_v, pos = _topk(keys, k, descending=True)
    else:
        with np.errstate(all="ignore"):
            keys = q.astype(np.float64) @ codes.astype(np.float64).T
        if not np.isfinite(keys).all() or np.abs(codes).max(initial=0) > 1e15:
            return  # float32 rounding / overflow: ordering checked by the API fuzzer
        # float32 sums: compare the chosen rows' exact scores with the k-th best
        check(np.all(np.diff(vals.astype(np.float64), axis=1) <= 0), "float32 scores not descending")
        return
    check(np.array_equal(vals.astype(np.int64), want_v), f"{prec} values differ: {vals} vs {want_v}")
    check(np.array_equal(got, ids[pos]), f"{prec} ids differ: {got} vs {ids[pos]}")


def check_pipeline(p: RescorePipeline, seed: int) -> None:
    n, d = len(p), p.dim
    b = np.asarray(p.binary_codes)
    r = np.asarray(p.rescore_codes)
    check(b.shape == (n, (d + 7) // 8) and b.dtype == np.uint8, f"binary codes {b.shape} {b.dtype}")
    check(r.shape == (n, d), f"rescore codes {r.shape}")
    rng = np.random.default_rng(seed)
    q = rng.integers(-3, 4, (2, d)).astype(np.float32)
    top_k, mult = 3, 2
    scores, got = p.search(q, top_k, mult)
    kk = min(top_k, n)
    check(scores.shape == got.shape == (2, kk), f"pipeline result shape {scores.shape}")
    if n == 0:
        return
    qb = _unpack(quantlib.quantize_embeddings(q, "ubinary"))
    ham = np.abs(qb[:, None, :] - _unpack(b)[None, :, :]).sum(-1)
    _, cand = _topk(ham, top_k * mult, descending=False)
    start = p.ranges[0].astype(np.float32)
    step = ((p.ranges[1] - p.ranges[0]) / np.float32(255)).astype(np.float32)
    step = np.where(step == 0, np.float32(1), step).astype(np.float32)
    scaled = (r.astype(np.float64) + (128 if p.rescore_precision == "int8" else 0)) * step.astype(np.float64)
    dense = scaled + start.astype(np.float64)
    absdense = np.abs(scaled) + np.abs(start.astype(np.float64))  # rounding-error scale, no cancellation
    ids = np.arange(n) if p.ids is None else np.asarray(p.ids).reshape(-1)
    for i in range(2):
        s = dense[cand[i]] @ q[i].astype(np.float64)
        tol = 1e-12 * (absdense[cand[i]] @ np.abs(q[i]).astype(np.float64)).max(initial=0.0) + 1e-9
        order = np.lexsort((cand[i], -s))[:kk]
        if not np.isfinite(s).all():
            return
        check(np.all(np.abs(scores[i] - s[order]) <= tol), f"pipeline scores {scores[i]} vs {s[order]} (tol {tol})")
        # ties within rounding may swap; ids must be among the candidates with the same score
        check(set(got[i].tolist()) <= set(ids[cand[i]].tolist()), "pipeline returned a non-candidate id")


def check_canonical(obj, data: bytes) -> None:
    """An input accepted with every checksum verified re-saves to itself."""
    obj.save(_SAVE)
    with open(_SAVE, "rb") as f:
        again = f.read()
    if again == data:
        return
    check(len(again) == len(data), f"accepted file is not canonical: {len(data)} bytes, re-saved {len(again)}")
    t = _table(bytearray(data))
    ignore = set(range(10, 12))  # version_minor
    if t is not None:
        hsize, nsec = t
        ignore |= set(range(hsize - 4, hsize))  # header crc (follows the two fields above)
        for i in range(nsec):
            at = _FIXED.size + i * _ENTRY.size
            ignore |= set(range(at + 44, at + 48))  # reserved
    diff = [i for i in range(len(data)) if data[i] != again[i] and i not in ignore]
    check(not diff, f"accepted file is not canonical: bytes {diff[:8]} differ after load + save")


# ------------------------------------------------------------ the target
def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode, buf = data[0], bytearray(data[1:])
    seal(buf, sections=bool(mode & M_SEAL_SECTIONS), header=bool(mode & M_SEAL_HEADER))
    tmp = _PATH + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf)
    os.replace(tmp, _PATH)  # a new inode: mappings of earlier inputs stay valid
    mmap, verify = not (mode & M_RAM), bool(mode & M_VERIFY)
    try:
        if mode & M_PIPELINE:
            obj = RescorePipeline.load(_PATH, mmap=mmap, verify=verify)
        else:
            obj = quantlib.load_index(_PATH, mmap=mmap, verify=verify)
    except (FormatError, ValueError, TypeError):
        return
    except BaseException as exc:
        save_finding(data, exc)
        raise
    try:
        if isinstance(obj, RescorePipeline):
            check_pipeline(obj, len(buf))
        else:
            check_index(obj)
        if not mmap or verify:
            check_canonical(obj, bytes(buf))
    except BaseException as exc:
        save_finding(data, exc)
        raise




# ------------------------------------------------------------ seeds
def make_seeds(out: str) -> None:
    """Write valid saved files (with mode bytes) into ``out``."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(2026)
    files = {}
    for prec in ("float32", "int8", "uint8", "binary", "ubinary"):
        for n, d in ((0, 8), (1, 3), (7, 20), (33, 64)):
            x = rng.standard_normal((max(n, 2), d)).astype(np.float32)
            ranges = None
            if prec in ("int8", "uint8") and n % 2:
                ranges = np.stack([x.min(0), x.max(0)])
            idx = quantlib.Index(d, prec, ranges)
            if n:
                x = x[:n]
                if prec == "float32":
                    x = rng.integers(-3, 4, (n, d)).astype(np.float32)
                if prec in ("int8", "uint8") and ranges is None:
                    x = quantlib.quantize_embeddings(x, prec, ranges=np.stack([x.min(0) - 1, x.max(0) + 1]))
                idx.add(x, ids=rng.integers(-5, 1000, n) if n == 7 else None)
            p = os.path.join(_DIR, "seed.qlx")
            idx.save(p)
            files[f"index_{prec}_n{n}_d{d}"] = open(p, "rb").read()
    for rp in ("int8", "uint8"):
        for n, d, with_ids in ((0, 8, False), (5, 12, True), (40, 33, False)):
            x = rng.standard_normal((max(n, 2), d)).astype(np.float32)
            p = os.path.join(_DIR, "seed.qlx")
            RescorePipeline.build(x[:n], p, ranges=np.stack([x.min(0), x.max(0)]), rescore_precision=rp,
                                  ids=np.arange(n) * 3 + 1 if with_ids else None)
            files[f"pipeline_{rp}_n{n}_d{d}"] = open(p, "rb").read()
    for name, body in files.items():
        modes = [0, M_RAM, M_VERIFY, M_SEAL_HEADER | M_SEAL_SECTIONS | M_RAM]
        if name.startswith("pipeline"):
            modes = [m | M_PIPELINE for m in modes[:2]] + modes[2:3]
        for m in modes:
            with open(os.path.join(out, f"{name}_m{m}"), "wb") as f:
                f.write(bytes([m]) + body)
    print(f"wrote {len(os.listdir(out))} seeds to {out}")


def random_mode(seconds: float, corpus: str) -> int:
    """Coverage-blind mutation of the corpus (for the ASan build)."""
    import random
    import time

    seeds = [open(os.path.join(corpus, n), "rb").read() for n in sorted(os.listdir(corpus))] \
        if corpus and os.path.isdir(corpus) else [b"\0"]
    rnd = random.Random(int(os.environ.get("QL_FUZZ_SEED", "0")) or None)
    end = time.monotonic() + seconds
    runs = 0
    for data in seeds:
        TestOneInput(data)
        runs += 1
    while time.monotonic() < end:
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 6)):
            op = rnd.randint(0, 4)
            if op == 0 and len(data) > 1:
                data[rnd.randrange(len(data))] = rnd.randrange(256)
            elif op == 1 and len(data) > 1:
                del data[rnd.randrange(1, len(data)):]  # truncate
            elif op == 2:
                data.insert(rnd.randint(1, len(data)), rnd.randrange(256))
            elif op == 3 and len(data) > 9:
                at = rnd.randrange(1, len(data) - 8)
                data[at:at + 8] = struct.pack("<Q", rnd.choice([0, 1, 2**31, 2**32, 2**63, 2**64 - 1,
                                                                 rnd.randrange(2**64)]))
            else:
                data[0] = rnd.randrange(32)
        TestOneInput(bytes(data))
        runs += 1
    print(f"random mode: Done {runs} runs in {seconds:.0f} second(s)", flush=True)
    return 0


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--make-seeds":
        make_seeds(sys.argv[2])
        return
    if len(sys.argv) >= 3 and sys.argv[1] == "--random":
        sys.exit(random_mode(float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
