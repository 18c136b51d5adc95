"""``quantlib build``, ``quantlib search`` and ``quantlib inspect``: the library's
file workflow from the shell, on ``.npy`` embeddings and ``.qlx`` files."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional, Tuple

import numpy as np

from .errors import CLIError

KINDS = ("index", "pipeline")


# ------------------------------------------------------------------ helpers
def _load_npy(path: str, what: str, *, mmap: bool = True) -> np.ndarray:
    """A .npy array (memory-mapped: a corpus larger than RAM streams)."""
    if not os.path.exists(path):
        raise CLIError(f"{what} file not found: {path}")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise CLIError(f"{what} file {path} is not a numeric .npy array: {exc}") from None
    except OSError as exc:
        raise CLIError(f"{what} file {path} cannot be read: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise CLIError(f"{what} file {path} holds an .npz archive, not one .npy array")
    return arr


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: no bar
        return None
    return tqdm(total=total, unit="vec", desc=desc, file=sys.stderr)


# ------------------------------------------------------------------ build
def add_build_arguments(p: argparse.ArgumentParser) -> None:
    from .. import _precision as P

    p.add_argument("embeddings", help="float embeddings, a 2-D .npy file (read memory-mapped, in chunks)")
    p.add_argument("output", help="the .qlx file to write (atomically)")
    p.add_argument("--kind", choices=KINDS, default="index",
                   help="index: one Index of --precision; pipeline: binary codes in RAM + int8 codes on disk "
                        "for rescoring (RescorePipeline). Default: index")
    p.add_argument("--precision", choices=P.NAMES, default="ubinary",
                   help="index precision (default ubinary; int8/uint8 are calibrated on the embeddings "
                        "unless --ranges is given)")
    p.add_argument("--rescore-precision", choices=P.where(family="scalar"), default="int8",
                   help="pipeline only: precision of the rescoring codes (default int8)")
    p.add_argument("--ranges", metavar="NPY", help="(2, dim) calibration ranges (row 0 min, row 1 max)")
    p.add_argument("--calibration", metavar="NPY", help="embeddings to compute the ranges from")
    p.add_argument("--ids", metavar="NPY", help="int64 ids, one per row (default: row numbers)")
    p.add_argument("--chunk-size", type=int, default=65536, help="rows read per chunk (default 65536)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all usable cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _ranges_arg(args: argparse.Namespace, emb: np.ndarray, scalar: bool) -> Optional[np.ndarray]:
    import quantlib as ql

    if args.ranges and args.calibration:
        raise CLIError("pass --ranges or --calibration, not both")
    if args.ranges:
        return _load_npy(args.ranges, "ranges", mmap=False)
    if args.calibration:
        return ql.calibration_ranges(_load_npy(args.calibration, "calibration"), chunk_size=args.chunk_size)
    if scalar:
        if emb.shape[0] < 2:
            raise CLIError("int8/uint8 codes need calibration ranges: pass --ranges or --calibration "
                           f"(the embeddings have {emb.shape[0]} row)")
        return ql.calibration_ranges(emb, chunk_size=args.chunk_size, threads=args.threads)
    return None


def cmd_build(args: argparse.Namespace) -> int:
    import quantlib as ql
    from .. import _precision as P

    emb = _load_npy(args.embeddings, "embeddings")
    if emb.ndim != 2 or emb.dtype.kind != "f":
        raise CLIError(f"embeddings must be a 2-D float array, got {emb.dtype} of shape {emb.shape}")
    if args.chunk_size < 1:
        raise CLIError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    ids = _load_npy(args.ids, "ids", mmap=False) if args.ids else None
    n, d = emb.shape
    t0 = time.perf_counter()
    if args.kind == "pipeline":
        ranges = _ranges_arg(args, emb, scalar=False)
        obj: Any = ql.RescorePipeline.build(
            emb, args.output, ranges=ranges, calibration_embeddings=None if ranges is not None else emb,
            chunk_size=args.chunk_size, progress=not args.quiet, ids=ids, rescore_precision=args.rescore_precision,
            threads=args.threads)
        what = f"RescorePipeline (binary + {args.rescore_precision})"
    else:
        rec = P.PRECISIONS[args.precision]
        ranges = _ranges_arg(args, emb, scalar=rec.needs_ranges)
        if ranges is not None and not rec.needs_ranges:
            raise CLIError(f"--ranges/--calibration apply to int8/uint8 indexes, not {rec.name}")
        obj = ql.Index(d, rec.name, ranges)
        bar = _progress(not args.quiet, n, "quantlib build")
        for s in range(0, n, args.chunk_size):
            block = np.asarray(emb[s: s + args.chunk_size])
            obj.add(block, ids=None if ids is None else ids[s: s + len(block)], threads=args.threads)
            if bar is not None:
                bar.update(len(block))
        if bar is not None:
            bar.close()
        obj.save(args.output)
        what = f"Index ({rec.name})"
    size = os.path.getsize(args.output)
    print(f"wrote {args.output}: {what}, {n} x {d}, {size:,} bytes in {time.perf_counter() - t0:.2f} s")
    return 0


# ------------------------------------------------------------------ search
def add_search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="a .qlx file written by quantlib build / Index.save / RescorePipeline.build")
    p.add_argument("queries", help="float queries (or codes of the index's precision), a .npy file")
    p.add_argument("-k", "--k", type=int, default=10, help="hits per query (default 10)")
    p.add_argument("--rescore-multiplier", type=int, default=4,
                   help="pipeline files: binary candidates per hit to rescore (default 4)")
    p.add_argument("--out", "-o", metavar="FILE",
                   help="write the results to FILE: .npz (arrays ids, scores), .json (a list per query of "
                        "{id, score}) or .tsv (query, rank, id, score); default: TSV on stdout")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all usable cores)")
    p.add_argument("--no-mmap", action="store_true", help="read the codes into RAM instead of mapping them")


def _run_search(args: argparse.Namespace) -> Tuple[np.ndarray, np.ndarray]:
    import quantlib as ql

    try:
        obj = ql.load_index(args.index, mmap=not args.no_mmap)
    except FileNotFoundError:
        raise CLIError(f"index file not found: {args.index}") from None
    q = _load_npy(args.queries, "queries", mmap=False)
    if q.ndim == 1:
        q = q[None, :]
    if isinstance(obj, ql.RescorePipeline):
        scores, ids = obj.search(q, args.k, args.rescore_multiplier, threads=args.threads)
    else:
        scores, ids = obj.search(q, args.k, threads=args.threads)
    return np.asarray(scores), np.asarray(ids)


def _write_results(scores: np.ndarray, ids: np.ndarray, out: Optional[str]) -> None:
    if out is None or out.endswith(".tsv"):
        lines = ["query\trank\tid\tscore"]
        for qi in range(ids.shape[0]):
            lines += [f"{qi}\t{r}\t{int(i)}\t{s}" for r, (i, s) in enumerate(zip(ids[qi], scores[qi].tolist()))]
        text = "\n".join(lines) + "\n"
        if out is None:
            sys.stdout.write(text)
        else:
            with open(out, "w", encoding="utf-8") as f:
                f.write(text)
    elif out.endswith(".json"):
        doc = [[{"id": int(i), "score": s} for i, s in zip(ids[qi], scores[qi].tolist())]
               for qi in range(ids.shape[0])]
        with open(out, "w", encoding="utf-8") as f:
            json.dump(doc, f)
    elif out.endswith(".npz"):
        np.savez(out, ids=ids, scores=scores)
    else:
        raise CLIError(f"--out must end in .npz, .json or .tsv, got {out}")


def cmd_search(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise CLIError(f"-k must be >= 1, got {args.k}")
    if args.out and not args.out.endswith((".npz", ".json", ".tsv")):
        raise CLIError(f"--out must end in .npz, .json or .tsv, got {args.out}")
    t0 = time.perf_counter()
    scores, ids = _run_search(args)
    dt = time.perf_counter() - t0
    _write_results(scores, ids, args.out)
    if args.out:
        print(f"{ids.shape[0]} queries x {ids.shape[1]} hits -> {args.out} ({dt:.3f} s with loading)")
    return 0


# ------------------------------------------------------------------ inspect
def add_inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .qlx file")
    p.add_argument("--verify", action="store_true", help="also verify every section's checksum (reads the file)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def inspect_file(path: str, verify: bool = False) -> dict:
    """What a .qlx file holds, from its validated header (and checksums)."""
    from .. import _format as F

    if not os.path.exists(path):
        raise CLIError(f"file not found: {path}")
    with F.open_read(path) as f:
        h = F.read_header(f, path)
        sections = []
        for s in h.sections.values():
            row = {"section": s.name, "dtype": str(s.dtype), "rows": s.rows, "cols": s.cols, "offset": s.offset,
                   "bytes": s.nbytes, "crc32": f"{s.crc32:08x}"}
            if verify:
                F.read_section(f, s, mmap=True, verify=True, path=path)  # raises FormatError on a mismatch
                row["checksum"] = "ok"
            sections.append(row)
    return {"file": os.path.abspath(path), "kind": F.FILE_KINDS[h.file_kind],
            "format": f"{h.version[0]}.{h.version[1]}",
            "precision": h.precision, "dim": h.dim, "count": h.count,
            "ids": bool(h.flags & F.FLAG_IDS), "ranges": bool(h.flags & F.FLAG_RANGES),
            "file_bytes": h.file_size, "header_crc32": f"{h.header_crc:08x}", "verified": verify,
            "sections": sections}


def cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_file(args.file, args.verify)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['file']}")
    print(f"  {info['kind']}, format {info['format']}, precision {info['precision']}, dim {info['dim']}, "
          f"{info['count']:,} vectors, {info['file_bytes']:,} bytes")
    print(f"  ids: {'stored' if info['ids'] else 'row numbers'}; ranges: {'stored' if info['ranges'] else 'none'}; "
          f"header crc32 {info['header_crc32']}" + ("; every section checksum verified" if args.verify else ""))
    print(f"  {'section':<14}{'dtype':<9}{'rows':>12}{'cols':>8}{'offset':>14}{'bytes':>16}  crc32")
    for s in info["sections"]:
        print(f"  {s['section']:<14}{s['dtype']:<9}{s['rows']:>12,}{s['cols']:>8,}{s['offset']:>14,}"
              f"{s['bytes']:>16,}  {s['crc32']}")
    return 0
