"""Crash safety of Index.save / RescorePipeline.save: SIGKILL at random points.

A child process saves over one path again and again (alternating two
versions); the parent kills it with SIGKILL after a random delay. After every
kill, the file at the path must be one complete version (the original or one
the child finished) -- loadable with every checksum verified, byte-identical
to a known version -- and every leftover temporary file must either be
rejected by the loader (``FormatError``) or be a complete version too (killed
between fsync and rename).

A negative control runs the same harness with a deliberately non-atomic
writer (``open(path, "wb")`` and chunked writes in place): it must leave torn
files, and the loader must reject every one of them -- so the harness can see
tearing, and a partial file is never taken for a valid index.

SIGKILL stops the process, not the machine: the page cache survives, so this
proves atomicity against process crashes. Power loss is what the fsync of the
file and of the directory in ``quantlib._format.write_file`` are for; it is
not testable here.

QL_CRASH_KILLS sets the number of kills per scenario (default 24).
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import quantlib
from quantlib import FormatError

ROOT = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("QL_CRASH_KILLS", "24"))

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

# The child: build two versions, report how long one save takes, then save
# them alternately forever (until killed). Versions are reproducible from the
# seed, so the parent computes their bytes itself.
CHILD = textwrap.dedent(r"""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import quantlib
    from tests.test_crash_safety import make_version
    kind, path, mode = sys.argv[2], sys.argv[3], sys.argv[4]
    objs = [make_version(kind, v, os.path.dirname(path)) for v in (1, 2)]
    blobs = []
    for v, obj in enumerate(objs):  # the bytes the negative control writes in place
        obj.save(f"{path}.blob{v}")
        blobs.append(open(f"{path}.blob{v}", "rb").read())
        os.unlink(f"{path}.blob{v}")
    def save(obj, dst):
        if mode == "atomic":
            obj.save(dst)
        else:  # negative control: torn writes in place
            data = blobs[objs.index(obj)]
            with open(dst, "wb") as f:
                for s in range(0, len(data), 1 << 16):
                    f.write(data[s: s + (1 << 16)])
                    f.flush()
    t = time.perf_counter()
    save(objs[0], path + ".probe")
    os.unlink(path + ".probe")
    print(f"ready {time.perf_counter() - t:.6f}", flush=True)
    i = 0
    while True:
        save(objs[i % 2], path)
        i += 1
""")


def make_version(kind: str, version: int, directory: str):
    """Version 0 is the file on disk before the child starts; 1 and 2 are the
    child's. Sizes make one save take tens of milliseconds."""
    rng = np.random.default_rng(1000 + version)
    n = 40_000 + 1_000 * version
    if kind == "index":
        idx = quantlib.Index(1024, "ubinary")
        idx.add(rng.integers(0, 256, (n, 128), dtype=np.uint8), ids=np.arange(n, dtype=np.int64) * 7 + version)
        return idx
    x = rng.standard_normal((n // 8, 384)).astype(np.float32)
    src = os.path.join(directory, f"src-v{version}-{os.getpid()}.qlx")
    ranges = np.stack([np.full(384, -4, np.float32), np.full(384, 4, np.float32)])
    return quantlib.RescorePipeline.build(x, src, ranges=ranges)


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _saved_bytes_digest(obj, path) -> str:
    obj.save(path)
    return _digest(path)


def _run(tmp_path: Path, kind: str, mode: str, kills: int):
    path = tmp_path / f"{kind}.qlx"
    known = {}
    for v in (0, 1, 2):
        d = tmp_path / f"ref{v}"
        d.mkdir()
        known[_saved_bytes_digest(make_version(kind, v, str(d)), d / "f.qlx")] = v
    make_version(kind, 0, str(tmp_path / "ref0")).save(path)
    rng = np.random.default_rng(7)
    seen_versions, torn_rejected, mid_write = set(), 0, 0
    for _ in range(kills):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), kind, str(path), mode],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
        try:
            line = child.stdout.readline()
            if not line.startswith("ready"):
                raise AssertionError(f"child failed: {line!r} {child.stderr.read()}")
            one_save = float(line.split()[1])
            time.sleep(rng.uniform(0, 3.0 * one_save))  # anywhere in the first ~3 saves
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL
        # the file at the path
        try:
            quantlib.load_index(path, mmap=False, verify=True)
            digest = _digest(path)
            assert digest in known, "a file that loads is not one of the complete versions"
            seen_versions.add(known[digest])
        except FormatError:
            if mode == "atomic":
                raise
            torn_rejected += 1
        # leftovers of the atomic writer: never a valid index unless complete
        for tmp in tmp_path.glob(f".{path.name}.*.tmp"):
            mid_write += 1
            try:
                quantlib.load_index(tmp, mmap=False, verify=True)
            except FormatError:
                pass
            else:
                assert _digest(tmp) in known, f"a partial temporary file {tmp.name} loaded as an index"
            tmp.unlink()
    return seen_versions, torn_rejected, mid_write


@pytest.mark.parametrize("kind", ["index", "pipeline"])
def test_sigkill_during_save_leaves_a_complete_file(tmp_path, kind):
    seen, torn, mid_write = _run(tmp_path, kind, "atomic", KILLS)
    assert torn == 0
    # the harness must actually have landed kills inside saves ...
    assert mid_write >= KILLS // 4, f"only {mid_write} of {KILLS} kills interrupted a save"
    # ... and (almost always) after some finished ones
    assert seen & {1, 2} or KILLS < 8, f"no save ever completed before the kill: {seen}"


def test_negative_control_torn_writes_are_detected_and_rejected(tmp_path):
    """Writing in place instead of atomically leaves torn files: the harness
    sees them and the loader rejects every one (FormatError, never garbage)."""
    seen, torn, _ = _run(tmp_path, "index", "inplace", max(8, KILLS // 2))
    assert torn >= 1, "in-place writes never left a torn file: the harness cannot detect tearing"
