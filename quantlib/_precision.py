"""The precision registry: one frozen record per precision.

A *precision* says what a row's code is and how it is scored; it is
independent of the ISA level that runs the kernel. Every module asks the
record (``PRECISIONS[name]`` or :func:`get`) instead of comparing strings, so
a new precision is one entry here plus its kernels, and the test batteries
that parametrise over :data:`PRECISIONS` pick it up.

Fields
------
name
    The public name (``precision=`` argument).
code_dtype
    dtype of a stored code array.
family
    ``"float"`` (raw floats), ``"scalar"`` (one byte per dimension) or
    ``"bits"`` (one bit per dimension, packed big-endian into bytes).
kernel
    The C kernel family that scores it: ``"blas"`` (numpy matmul),
    ``"dot8"`` (exact integer dot products) or ``"hamming"`` (popcount).
signed
    The codes are the unsigned twin's bytes XOR 0x80 (int8 = uint8 - 128,
    binary = ubinary - 128): kernels see ``xor_mask`` = 0x80.
twin
    The precision with the other signedness and the same family, if any.
file_code
    The ``precision`` field of the ``.qlx`` header.
metric, descending, value_dtype
    What ``search`` returns: inner products / code dot products (descending)
    or Hamming distances (ascending), and their dtype.
encoding
    How float embeddings become codes: ``"cast"`` (to float32), ``"ranges"``
    (per-dimension min/max into 256 buckets; needs calibration ranges) or
    ``"sign"`` (``x > 0``).
max_dim
    Largest dimension whose scores are exact (int32 dot products), or None.
sentence_transformers
    One of the five precisions of sentence-transformers'
    ``quantize_embeddings`` (reproduced bit for bit).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

__all__ = ["Precision", "PRECISIONS", "NAMES", "get", "by_file_code"]

# exact int32 accumulation limits of the dot8 kernels (csrc/quantlib.h)
_DOT_MAX_DIM_SIGNED = 131071
_DOT_MAX_DIM_UNSIGNED = 33025


@dataclass(frozen=True)
class Precision:
    name: str
    code_dtype: np.dtype
    family: str
    kernel: str
    signed: bool
    twin: Optional[str]
    file_code: int
    metric: str
    descending: bool
    value_dtype: np.dtype
    encoding: str
    max_dim: Optional[int]
    sentence_transformers: bool = True

    # ------------------------------------------------------------ derived
    @property
    def is_float(self) -> bool:
        return self.family == "float"

    @property
    def is_scalar(self) -> bool:
        return self.family == "scalar"

    @property
    def is_bits(self) -> bool:
        return self.family == "bits"

    @property
    def needs_ranges(self) -> bool:
        """Float input can only be encoded with calibration ranges."""
        return self.encoding == "ranges"

    @property
    def xor_mask(self) -> int:
        """Byte XOR between these codes and the unsigned twin's (0 or 0x80)."""
        return 0x80 if self.signed else 0

    @property
    def itemsize(self) -> int:
        return self.code_dtype.itemsize

    def width(self, dim: int) -> int:
        """Code elements per row for embeddings of ``dim`` dimensions (bytes
        for packed bits, components otherwise)."""
        return (dim + 7) // 8 if self.is_bits else dim

    def row_bytes(self, dim: int) -> int:
        """Bytes one stored row takes."""
        return self.width(dim) * self.itemsize

    def width_desc(self, width: int) -> str:
        """How a width of this precision reads in an error message."""
        return f"{width} bytes per code ({width * 8} bits)" if self.is_bits else f"{width} dims"

    def __repr__(self) -> str:  # short: records appear in error messages and test ids
        return f"Precision({self.name!r})"


def _p(name, dtype, family, kernel, signed, twin, code, metric, descending, vdtype, encoding, max_dim) -> Precision:
    return Precision(name, np.dtype(dtype), family, kernel, signed, twin, code, metric, descending,
                     np.dtype(vdtype), encoding, max_dim)


#: name -> record, in the order the public docs list them (sentence-transformers' order)
PRECISIONS: Dict[str, Precision] = {p.name: p for p in (
    _p("float32", np.float32, "float", "blas", False, None, 0, "inner product", True, np.float32, "cast", None),
    _p("int8", np.int8, "scalar", "dot8", True, "uint8", 1, "code dot product", True, np.int32, "ranges",
       _DOT_MAX_DIM_SIGNED),
    _p("uint8", np.uint8, "scalar", "dot8", False, "int8", 2, "code dot product", True, np.int32, "ranges",
       _DOT_MAX_DIM_UNSIGNED),
    _p("binary", np.int8, "bits", "hamming", True, "ubinary", 3, "Hamming distance", False, np.int32, "sign", None),
    _p("ubinary", np.uint8, "bits", "hamming", False, "binary", 4, "Hamming distance", False, np.int32, "sign", None),
)}

#: every precision name, registry order
NAMES: Tuple[str, ...] = tuple(PRECISIONS)

_BY_FILE_CODE = {p.file_code: p for p in PRECISIONS.values()}


def get(precision, allowed: Optional[Iterable[str]] = None, name: str = "precision") -> Precision:
    """The record of ``precision`` (a name or a record); ``ValueError``
    naming the argument and the accepted names otherwise."""
    names = NAMES if allowed is None else tuple(allowed)
    if isinstance(precision, Precision):
        precision = precision.name
    if not isinstance(precision, str) or precision not in names or precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {', '.join(repr(p) for p in names)}, got {precision!r}")
    return PRECISIONS[precision]


def by_file_code(code: int) -> Optional[Precision]:
    """The record stored under header code ``code``, or None."""
    return _BY_FILE_CODE.get(code)


def where(**fields) -> Tuple[str, ...]:
    """Names of the precisions whose fields equal ``fields`` (e.g.
    ``where(family="scalar")`` -> ``("int8", "uint8")``)."""
    return tuple(p.name for p in PRECISIONS.values()
                 if all(getattr(p, k) == v for k, v in fields.items()))
