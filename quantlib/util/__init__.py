"""Compatibility paths mirroring ``sentence_transformers.util``."""
