"""Mirror of ``sentence_transformers.util.quantization``: change the import,
keep the code."""
from ..quantization import quantize_embeddings  # noqa: F401
from ..semantic import semantic_search_faiss, semantic_search_usearch  # noqa: F401

__all__ = ["quantize_embeddings", "semantic_search_faiss", "semantic_search_usearch"]
