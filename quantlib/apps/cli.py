"""quantlib: embedding quantization and exact quantized search from the command line.

  quantlib demo     quantize real sentence embeddings (offline) and compare the
                    memory, speed and quality of float32, int8, binary and
                    binary + int8 rescoring
  quantlib build    embeddings (.npy) -> an index or rescoring pipeline (.qlx)
  quantlib search   a .qlx file + queries (.npy) -> ids and scores (TSV, JSON, .npz)
  quantlib inspect  header, precision, sizes and checksums of a .qlx file
  quantlib bench    quick speed report on synthetic data vs numpy,
                    sentence-transformers, faiss and usearch
  quantlib info     version, CPU features, compiled and active kernel levels
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cmd_info(args: argparse.Namespace) -> int:
    from .. import show_config

    show_config(print_out=True)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.run(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.run(args)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from . import tools

    p = _Parser(prog="quantlib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"quantlib {__version__} (distribution quantlib-embed)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, add, run, help_ in (
            ("build", tools.add_build_arguments, tools.cmd_build,
             "embeddings (.npy) -> an Index or RescorePipeline file (.qlx)"),
            ("search", tools.add_search_arguments, tools.cmd_search,
             "search a .qlx file with queries (.npy); results as TSV, JSON or .npz"),
            ("inspect", tools.add_inspect_arguments, tools.cmd_inspect,
             "header, precision, sizes and checksums of a .qlx file")):
        sp = sub.add_parser(name, help=help_, description=help_)
        add(sp)
        sp.set_defaults(func=run)
    pi = sub.add_parser("info", help="version, CPU features, compiled and active kernel level")
    pi.set_defaults(func=_cmd_info)

    pd = sub.add_parser("demo", help="memory / speed / quality of each precision on real text (offline)",
                        description="Embed a real corpus (default: the Python documentation shipped with CPython) "
                                    "with all-MiniLM-L6-v2, quantize it to int8 and binary, and compare exact search "
                                    "in every precision against float32.")
    from .demo import add_arguments as demo_args

    demo_args(pd)
    pd.set_defaults(func=_cmd_demo)

    pb = sub.add_parser("bench",
                        help="speed report on synthetic data vs numpy / sentence-transformers / faiss / usearch",
                        description="Time quantization, Hamming top-k, int8 top-k and binary + int8 rescoring on "
                                    "random data; medians of several runs, ratios to quantlib.")
    from .bench import add_arguments as bench_args

    bench_args(pb)
    pb.set_defaults(func=_cmd_bench)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from .errors import CLIError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .. import FormatError

    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"quantlib {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (FormatError, ValueError, TypeError, OSError) as e:
        if args.command not in ("build", "search", "inspect"):
            raise
        # the library's own clear errors (bad file, bad shapes, wrong precision): one line, not a traceback
        print(f"quantlib {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"quantlib {args.command}: error: out of memory; try smaller sizes", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `quantlib demo | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:  # pragma: no cover
            pass
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
