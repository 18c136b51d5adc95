"""Coverage-guided fuzz target for sharded-index manifests (atheris).

The input is the bytes of ``manifest.json``. They are written into a fixed
directory that holds real shard files and hostile neighbours, then

* ``quantlib.distributed.read_manifest`` parses them, and
* ``quantlib.distributed._checked_manifest(dir, check_files=True)`` -- every
  check ``open_sharded`` makes before it starts the shard actors (content
  checksums, confinement to the directory, regular files, each file once,
  header fields vs the manifest) -- runs on what was accepted. No cluster.

The directory (made once per process, deterministic bytes so the seeds' CRCs
match) holds: int8 Index shards ``shard-00000.qlx`` (5 rows), ``shard-00001.qlx``
(7 rows), an empty one ``empty.qlx``, ``sub/shard.qlx`` (3 rows), two
RescorePipeline shards ``p0.qlx`` / ``p1.qlx``, and hostile entries: a FIFO
``fifo`` (opening it for reading would block forever), a directory ``dir``,
symlinks ``inside`` (-> shard-00000.qlx), ``escape`` (-> a valid shard
outside the directory), ``devzero`` (-> /dev/zero), a hard link ``hard.qlx``
(-> shard-00001.qlx), ``garbage.qlx`` (random bytes), ``trunc.qlx`` (a
truncated shard). ``../outside.qlx`` exists next to the directory.

A finding is

* any exception other than ManifestError / FormatError / ValueError /
  TypeError (``FileNotFoundError`` included: the manifest always exists);
* a crash or a hang (``-timeout=30``: e.g. a FIFO opened for reading);
* an accepted manifest that breaks its promises: a shard path outside the
  directory (lexically or after resolving symlinks), a path listed twice, a
  file listed under two names, offsets that are not the running sum, a
  shard accepted by the file checks whose header CRC, size, count, precision,
  dim, kind, ids or ranges differ from the manifest's, or one that is not a
  regular file.

Run:  python fuzz/fuzz_manifest.py fuzz/corpus_manifest -max_total_time=60
Seeds: python fuzz/fuzz_manifest.py --make-seeds fuzz/corpus_manifest

Mutation: half of the inputs are mutated structurally (parsed, then a key,
a value or a shard entry is replaced by a hostile one -- paths to the
hostile entries, ``..``, absolute paths, NUL, lone surrogates, huge and
negative ints, NaN/inf, wrong types -- or entries are duplicated, dropped,
reordered, their CRCs swapped, their offsets re-summed so the file checks are
reached), the rest by libFuzzer's byte mutations.
Coverage-blind (e.g. under ASan):  python fuzz/fuzz_manifest.py --random SECONDS CORPUS_DIR
"""
from __future__ import annotations

import atexit
import json
import os
import stat
import sys
import tempfile
import warnings

import atheris
from _harness import save_finding  # fuzz/_harness.py, beside this file

sys.path.insert(0, os.environ.get("QUANTLIB_ROOT")
                or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

with atheris.instrument_imports(include=["quantlib"]):
    import quantlib
    import quantlib.distributed as qd
    from quantlib import FormatError, RescorePipeline
    from quantlib import _format as F
    from quantlib.distributed import ManifestError

warnings.simplefilter("ignore")

# a fixed place (absolute paths in the seeds must stay valid), shared by parallel jobs: every file
# in it is written with the same bytes by whoever comes first; each process has its own manifest
_ROOT = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
                     f"quantlib-fuzz-manifest-{os.getuid()}")
D = os.path.join(_ROOT, "d")
DIM = 12


class Bug(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Bug(msg)


def _make_dir() -> dict:
    """The shard directory (deterministic contents). Returns name -> manifest entry info."""
    os.makedirs(os.path.join(D, "sub"), exist_ok=True)
    rng = np.random.default_rng(20261203)
    x = rng.standard_normal((40, DIM)).astype(np.float32)
    r = np.stack([x.min(0), x.max(0)]).astype(np.float32)
    files = {}

    def index(name, rows):
        idx = quantlib.Index(DIM, "int8", ranges=r)
        if rows:
            idx.add(x[:rows])
        idx.save(os.path.join(D, name) if not name.startswith("..") else os.path.join(_ROOT, name[3:]))
        files[name] = rows

    index("shard-00000.qlx", 5)
    index("shard-00001.qlx", 7)
    index("empty.qlx", 0)
    index("sub/shard.qlx", 3)
    index("../outside.qlx", 4)
    for name, rows in (("p0.qlx", 6), ("p1.qlx", 2)):
        RescorePipeline.build(x[:rows], os.path.join(D, name), ranges=r)
        files[name] = rows
    def make(name, fn):
        try:
            fn(os.path.join(D, name))
        except FileExistsError:
            pass

    make("fifo", os.mkfifo)
    make("dir", os.mkdir)
    make("inside", lambda p: os.symlink("shard-00000.qlx", p))
    make("escape", lambda p: os.symlink(os.path.join(_ROOT, "outside.qlx"), p))
    make("devzero", lambda p: os.symlink("/dev/zero", p))
    if os.path.exists(os.path.join(D, "hard.qlx")):
        os.remove(os.path.join(D, "hard.qlx"))  # shard-00001.qlx was just replaced (a new inode)
    make("hard.qlx", lambda p: os.link(os.path.join(D, "shard-00001.qlx"), p))
    garbage = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    with open(os.path.join(D, "shard-00000.qlx"), "rb") as f:
        body = f.read()
    for name, content in (("garbage.qlx", garbage), ("trunc.qlx", body[: len(body) // 2])):
        with open(os.path.join(D, name + f".{os.getpid()}"), "wb") as f:
            f.write(content)
        os.replace(os.path.join(D, name + f".{os.getpid()}"), os.path.join(D, name))
    return {"ranges": r, "rows": files}


_INFO = _make_dir()
_MPATH = os.path.join(D, f"manifest-{os.getpid()}.json")
atexit.register(lambda: [os.remove(p) for p in (_MPATH, _MPATH + ".tmp") if os.path.exists(p)])
_REAL_D = os.path.realpath(D)


def _entry(name: str, offset: int) -> dict:
    p = os.path.join(D, name)
    h = F.read_header(p)
    _, _, crc = qd._shard_identity(p, p)
    return {"path": name, "count": h.count, "offset": offset, "bytes": os.path.getsize(p), "crc32": crc}


def _check_accepted(m: "qd.Manifest", files_checked: bool) -> None:
    base = os.path.dirname(m.path)
    check(base == D, f"manifest base {base!r}")
    pos, seen = 0, set()
    for i, s in enumerate(m.shards):
        check(os.path.isabs(s.path) and qd._within(os.path.normpath(s.path), D),
              f"shard {i} path {s.path!r} escapes {D}")
        check(s.path not in seen, f"shard {i} path {s.path!r} listed twice")
        seen.add(s.path)
        check(s.offset == pos and s.count >= 0, f"shard {i} offset {s.offset} != {pos}")
        pos += s.count
    check(pos == m.count, f"counts sum {pos} != {m.count}")
    if m.ranges is not None:
        check(m.ranges.shape == (2, m.dim) and np.isfinite(m.ranges).all(), "bad ranges accepted")
    if not files_checked:
        return
    idents = set()
    for i, s in enumerate(m.shards):
        real = os.path.realpath(s.path)
        check(qd._within(real, _REAL_D), f"shard {i} resolves outside: {real}")
        st = os.stat(s.path)
        check(stat.S_ISREG(st.st_mode), f"shard {i} is not a regular file")
        check((st.st_dev, st.st_ino) not in idents, f"shard {i} is a file listed twice")
        idents.add((st.st_dev, st.st_ino))
        check(st.st_size == s.nbytes, f"shard {i} size {st.st_size} != {s.nbytes}")
        _, _, crc = qd._shard_identity(s.path, s.path)
        check(crc == s.crc32, f"shard {i} crc {crc} != {s.crc32}")
        obj = quantlib.load_index(s.path, mmap=True, verify=True)
        kind = "pipeline" if isinstance(obj, RescorePipeline) else "index"
        check(kind == m.kind and len(obj) == s.count and obj.dim == m.dim, f"shard {i} header mismatch accepted")
        h = F.read_header(s.path)
        check(h.precision == m.precision and bool(h.flags & F.FLAG_IDS) == m.has_ids,
              f"shard {i} precision / ids mismatch accepted")
        r = obj.ranges
        check((r is None) == (m.ranges is None) and (r is None or np.array_equal(r, m.ranges)),
              f"shard {i} ranges mismatch accepted")


ALLOWED = (ManifestError, FormatError, ValueError, TypeError)


def TestOneInput(data: bytes) -> None:
    tmp = _MPATH + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, _MPATH)
    try:
        try:
            m = qd.read_manifest(_MPATH)
        except ALLOWED:
            return
        _check_accepted(m, False)
        try:
            m2 = qd._checked_manifest(_MPATH, True)
        except ALLOWED:
            return
        _check_accepted(m2, True)
    except BaseException as exc:
        save_finding(data, exc)
        raise




# ------------------------------------------------------------ seeds
def _doc(kind: str, names, **over) -> dict:
    shards, pos = [], 0
    for n in names:
        e = _entry(n, pos)
        shards.append(e)
        pos += e["count"]
    r = _INFO["ranges"]
    doc = {"format": "quantlib-sharded", "version": [1, 1], "kind": kind,
           "precision": "ubinary" if kind == "pipeline" else "int8",
           "rescore_precision": "int8" if kind == "pipeline" else None, "dim": DIM, "count": pos,
           "has_ids": False, "ranges": r.astype(np.float64).tolist(), "shards": shards}
    doc.update(over)
    return doc


def make_seeds(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    seeds = {
        "index2": _doc("index", ["shard-00000.qlx", "shard-00001.qlx"]),
        "index_empty_sub": _doc("index", ["empty.qlx", "shard-00000.qlx", "sub/shard.qlx", "shard-00001.qlx"]),
        "index1": _doc("index", ["shard-00001.qlx"]),
        "pipeline2": _doc("pipeline", ["p0.qlx", "p1.qlx"]),
        "symlink_inside": _doc("index", ["inside", "shard-00001.qlx"]),
        "hardlink_dup": _doc("index", ["shard-00001.qlx", "hard.qlx"]),
    }
    v10 = _doc("index", ["shard-00000.qlx", "shard-00001.qlx"], version=[1, 0])
    for e in v10["shards"]:
        del e["crc32"]
    seeds["v1_0_no_crc"] = v10
    swapped = _doc("index", ["shard-00000.qlx", "shard-00001.qlx"])
    swapped["shards"][0]["crc32"], swapped["shards"][1]["crc32"] = \
        swapped["shards"][1]["crc32"], swapped["shards"][0]["crc32"]
    seeds["crc_swapped"] = swapped
    for name, target in (("fifo", "fifo"), ("dir", "dir"), ("escape", "escape"), ("devzero", "devzero"),
                         ("garbage", "garbage.qlx"), ("trunc", "trunc.qlx"), ("dotdot", "../outside.qlx"),
                         ("absolute_outside", os.path.join(_ROOT, "outside.qlx")),
                         ("absolute_inside", os.path.join(D, "shard-00001.qlx")), ("dup", "shard-00000.qlx")):
        doc = _doc("index", ["shard-00000.qlx", "shard-00001.qlx"])
        doc["shards"][1]["path"] = target
        seeds[f"hostile_{name}"] = doc
    for name, doc in seeds.items():
        with open(os.path.join(out, name + ".json"), "w") as f:
            f.write(json.dumps(doc, indent=1))
    with open(os.path.join(out, "deep.json"), "w") as f:
        f.write("[" * 5000 + "]" * 5000)
    print(f"wrote {len(os.listdir(out))} seeds to {out}")


def random_mode(seconds: float, corpus: str) -> int:
    """Coverage-blind mutation of the corpus (JSON-aware token swaps + bytes)."""
    import random
    import time

    seeds = [open(os.path.join(corpus, n), "rb").read() for n in sorted(os.listdir(corpus))] \
        if corpus and os.path.isdir(corpus) else [b"{}"]
    rnd = random.Random(int(os.environ.get("QL_FUZZ_SEED", "0")) or None)
    tokens = [b"null", b"true", b"0", b"-1", b"1e400", b"NaN", b"Infinity", b"4294967296", b'"../x"', b'"/"',
              b'""', b"[]", b"{}", b'"fifo"', b'"escape"', b'"\\u0000"', b'"\\ud800"', b"9" * 60, b"[1, 1]"]
    end = time.monotonic() + seconds
    runs = 0
    for data in seeds:
        TestOneInput(data)
        runs += 1
    while time.monotonic() < end:
        if rnd.random() < 0.5:
            try:
                doc = json.loads(rnd.choice(seeds))
            except (ValueError, RecursionError):
                doc = None
            if isinstance(doc, dict):
                for _ in range(rnd.randint(1, 4)):
                    _mutate_doc(doc, rnd)
                TestOneInput(json.dumps(doc).encode("utf-8", "surrogatepass"))
                runs += 1
                continue
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 4)):
            op = rnd.randint(0, 3)
            if op == 0 and data:
                data[rnd.randrange(len(data))] = rnd.randrange(256)
            elif op == 1 and data:
                del data[rnd.randrange(len(data)):]
            else:  # replace a JSON value (after a ':' or inside a list) by a hostile token
                colons = [i for i, c in enumerate(data) if c in b":[,"]
                if colons:
                    at = rnd.choice(colons) + 1
                    stop = at
                    while stop < len(data) and data[stop] not in b",}]":
                        stop += 1
                    data[at:stop] = b" " + rnd.choice(tokens)
        TestOneInput(bytes(data))
        runs += 1
    print(f"random mode: Done {runs} runs in {seconds:.0f} second(s)", flush=True)
    return 0


_NAMES = ["shard-00000.qlx", "shard-00001.qlx", "empty.qlx", "sub/shard.qlx", "p0.qlx", "p1.qlx", "fifo", "dir",
          "inside", "escape", "devzero", "hard.qlx", "garbage.qlx", "trunc.qlx", "../outside.qlx", "sub/../fifo",
          "./shard-00000.qlx", "sub", "", ".", "..", "/", "/dev/zero", "/etc/passwd", "a\0b", "\ud800",
          "x" * 300, "/".join(["d"] * 200), D + "/shard-00001.qlx", _ROOT + "/outside.qlx", "manifest.json"]
_VALUES = [None, True, False, 0, 1, -1, 7, 12, 13, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 48, 2 ** 64, -2 ** 63, 1.5,
           float("nan"), float("inf"), 1e308, "", "int8", "uint8", "ubinary", "binary", "float32", "index", "pipeline",
           "quantlib-sharded", [], {}, [1, 1], [1, 0], [2, 0], [1], [[0.0] * 12] * 2, [[1e39] * 12] * 2]


def _mutate_doc(doc: dict, rnd) -> None:
    """One structural mutation of a parsed manifest (keys, values, shard entries)."""
    shards = doc.get("shards") if isinstance(doc.get("shards"), list) else None
    op = rnd.randrange(8)
    if shards and op < 3:  # a shard entry's field
        e = rnd.choice(shards)
        if isinstance(e, dict):
            key = rnd.choice(["path", "count", "offset", "bytes", "crc32", "extra"])
            if rnd.random() < 0.15:
                e.pop(key, None)
            else:
                e[key] = rnd.choice(_NAMES) if key == "path" and rnd.random() < 0.7 else rnd.choice(_VALUES + _NAMES)
        return
    if shards and op == 3:  # reorder, duplicate, drop, swap crcs
        k = rnd.randrange(4)
        if k == 0:
            rnd.shuffle(shards)
        elif k == 1:
            e = rnd.choice(shards)
            shards.append(dict(e) if isinstance(e, dict) else e)
        elif k == 2 and len(shards) > 1:
            del shards[rnd.randrange(len(shards))]
        elif len(shards) > 1 and all(isinstance(e, dict) for e in shards[:2]):
            shards[0]["crc32"], shards[1]["crc32"] = shards[1].get("crc32"), shards[0].get("crc32")
        return
    if op == 4:  # re-sum offsets / count after edits (reach the file checks)
        pos = 0
        for e in shards or []:
            if isinstance(e, dict) and isinstance(e.get("count"), int):
                e["offset"] = pos
                pos += e["count"]
        doc["count"] = pos
        return
    key = rnd.choice(["format", "version", "kind", "precision", "rescore_precision", "dim", "count", "has_ids",
                      "ranges", "shards"])
    if rnd.random() < 0.15:
        doc.pop(key, None)
    else:
        doc[key] = rnd.choice(_VALUES)


def CustomMutator(data: bytes, max_size: int, seed: int) -> bytes:
    import random

    rnd = random.Random(seed)
    if rnd.random() < 0.6:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            for _ in range(rnd.randint(1, 3)):
                _mutate_doc(doc, rnd)
            out = json.dumps(doc, indent=rnd.choice([None, 1])).encode("utf-8", "surrogatepass")
            if len(out) <= max_size:
                return out
    return atheris.Mutate(data, max_size)


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--make-seeds":
        make_seeds(sys.argv[2])
        return
    if len(sys.argv) >= 3 and sys.argv[1] == "--random":
        sys.exit(random_mode(float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
    atheris.Setup(sys.argv, TestOneInput, custom_mutator=CustomMutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
