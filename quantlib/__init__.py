"""quantlib: embedding quantization and exact quantized search.

Quantize float embeddings to int8 (4x smaller) or one bit per dimension (32x
smaller) exactly like sentence-transformers does, and search them with
runtime-dispatched SIMD kernels (scalar, AVX2, AVX-512, NEON).
"""
from __future__ import annotations

from ._version import __version__

try:
    from . import _core  # noqa: F401  (loads the kernels, detects the CPU)
except ImportError as _exc:  # pragma: no cover - depends on how the package was installed
    import os as _os

    _here = _os.path.dirname(_os.path.abspath(__file__))
    raise ImportError(
        f"quantlib's compiled core (quantlib._core) cannot be imported from {_here}: {_exc}. "
        "If that directory is a source checkout, Python is importing the unbuilt sources instead of the "
        "installed package: run Python from another directory, or build in place with "
        "`pip install -e .` (distribution name quantlib-embed).") from _exc
from ._config import _apply_env
from ._threads import _env_threads, get_num_threads, set_num_threads  # noqa: E402



def _check_environment() -> None:
    """QUANTLIB_ISA / QUANTLIB_NUM_THREADS: a bad value fails at import (an
    unusable level would otherwise SIGILL later). Under the ``quantlib``
    command it is a one-line error and exit status 2, not a traceback."""
    try:
        _apply_env()
        _env_threads()
    except (ImportError, ValueError) as exc:
        import os
        import sys

        orig = list(getattr(sys, "orig_argv", []))
        as_command = os.path.basename(sys.argv[0] if sys.argv else "") in ("quantlib", "quantlib.exe") or \
            any(a == "-m" and b == "quantlib" for a, b in zip(orig, orig[1:]))
        if as_command:
            sys.stderr.write(f"quantlib: error: {exc}\n")
            raise SystemExit(2) from None
        raise ImportError(str(exc)) from None


_check_environment()

from ._config import available_isas, get_isa, set_isa, show_config  # noqa: E402
from .quantization import (  # noqa: E402
    PRECISIONS,
    calibration_ranges,
    dequantize_embeddings,
    quantize_embeddings,
)
from .search import hamming_distance, int8_dot, merge_topk, rescore, search  # noqa: E402
from ._format import FormatError  # noqa: E402
from .index import Index, load_index  # noqa: E402
from .pipeline import RescorePipeline  # noqa: E402
from .semantic import semantic_search, semantic_search_faiss, semantic_search_usearch  # noqa: E402

__all__ = [
    "__version__",
    "PRECISIONS",
    "available_isas",
    "calibration_ranges",
    "dequantize_embeddings",
    "get_isa",
    "get_num_threads",
    "hamming_distance",
    "int8_dot",
    "merge_topk",
    "rescore",
    "search",
    "quantize_embeddings",
    "set_isa",
    "set_num_threads",
    "show_config",
    "FormatError",
    "Index",
    "load_index",
    "RescorePipeline",
    "semantic_search",
    "semantic_search_faiss",
    "semantic_search_usearch",
]
