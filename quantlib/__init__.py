"""quantlib: embedding quantization and exact quantized search.

Quantize float embeddings to int8 (4x smaller) or one bit per dimension (32x
smaller) exactly like sentence-transformers does, and search them with
runtime-dispatched SIMD kernels (scalar, AVX2, AVX-512, NEON).
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import _core  # noqa: F401  (loads the kernels, detects the CPU)
from ._config import _apply_env

_apply_env()

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
    "hamming_distance",
    "int8_dot",
    "merge_topk",
    "rescore",
    "search",
    "quantize_embeddings",
    "set_isa",
    "show_config",
    "FormatError",
    "Index",
    "load_index",
    "RescorePipeline",
    "semantic_search",
    "semantic_search_faiss",
    "semantic_search_usearch",
]
