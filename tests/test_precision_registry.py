"""The precision registry (quantlib/_precision.py) agrees with everything that
uses it: the C limits, the file format, the quantizer's output, and the
modules never compare precision names as strings."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import quantlib
from quantlib import _core
from quantlib import _format as F
from quantlib import _precision as P

PKG = Path(quantlib.__file__).resolve().parent


def test_names_and_records_are_consistent():
    assert P.NAMES == tuple(P.PRECISIONS)
    assert len({p.file_code for p in P.PRECISIONS.values()}) == len(P.NAMES)
    for p in P.PRECISIONS.values():
        assert P.get(p.name) is p and P.get(p) is p
        assert P.by_file_code(p.file_code) is p
        assert F.PRECISION_CODES[p.name] == p.file_code
        if p.twin is not None:
            t = P.PRECISIONS[p.twin]
            assert t.twin == p.name and t.family == p.family and t.signed != p.signed
            assert t.code_dtype.itemsize == p.code_dtype.itemsize
        assert p.family in ("float", "scalar", "bits")
        assert p.kernel in ("blas", "dot8", "hamming")
        assert p.encoding in ("cast", "ranges", "sign")


def test_dot_limits_are_the_c_cores():
    assert P.PRECISIONS["int8"].max_dim == _core.DOT_MAX_DIM_SIGNED
    assert P.PRECISIONS["uint8"].max_dim == _core.DOT_MAX_DIM_UNSIGNED


@pytest.mark.parametrize("name", P.where(sentence_transformers=True))
@pytest.mark.parametrize("dim", [1, 7, 8, 9, 77, 1024])
def test_width_and_dtype_match_the_quantizer(name, dim):
    p = P.PRECISIONS[name]
    x = np.random.default_rng(dim).standard_normal((5, dim)).astype(np.float32)
    kw = {"ranges": quantlib.calibration_ranges(x)} if p.needs_ranges else {}
    codes = quantlib.quantize_embeddings(x, name, **kw)
    assert codes.dtype == p.code_dtype
    assert codes.shape == (5, p.width(dim))
    assert p.row_bytes(dim) == codes[0].nbytes
    if p.twin is not None:  # the twin is the same bytes XOR 0x80
        twin = quantlib.quantize_embeddings(x, p.twin, **kw)
        np.testing.assert_array_equal(codes.view(np.uint8) ^ np.uint8(p.xor_mask ^ P.PRECISIONS[p.twin].xor_mask),
                                      twin.view(np.uint8))


@pytest.mark.parametrize("name", P.NAMES)
def test_search_value_dtype_and_order(name):
    p = P.PRECISIONS[name]
    x = np.random.default_rng(1).standard_normal((40, 16)).astype(np.float32)
    idx = quantlib.Index(16, name, quantlib.calibration_ranges(x) if p.needs_ranges else None)
    idx.add(x)
    v, _ = idx.search(x[:3], 10)
    assert v.dtype == p.value_dtype
    d = np.diff(v.astype(np.float64), axis=1)
    assert ((d <= 0) if p.descending else (d >= 0)).all()


def test_get_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"precision must be one of 'float32'.*got 'int4'"):
        P.get("int4")
    with pytest.raises(ValueError, match=r"rescore_precision must be one of 'int8', 'uint8', got 'binary'"):
        P.get("binary", P.where(family="scalar"), "rescore_precision")
    with pytest.raises(ValueError, match="got None"):
        P.get(None)


_NAMES_RE = re.compile(r"^(%s)$" % "|".join(map(re.escape, P.NAMES)))
# modules whose precision literals are a fixed external contract (sentence-transformers' per-backend
# precision lists and error messages), or the registry itself
_ALLOWED = {
    "_precision.py",
    "bench.py",  # matches benchmark task labels ("float32 exact search ..."), not a precision argument
}


def _string_comparisons(path: Path):
    """(line, source) of every ``x == "int8"`` / ``x in ("int8", ...)`` / ``.endswith("int8")``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for comp in [node.left] + node.comparators:
                elts = comp.elts if isinstance(comp, (ast.Tuple, ast.List, ast.Set)) else [comp]
                if any(isinstance(e, ast.Constant) and isinstance(e.value, str) and _NAMES_RE.match(e.value)
                       for e in elts):
                    yield node.lineno, ast.get_source_segment(path.read_text(), node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("endswith", "startswith") and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) and \
                any(n.endswith(node.args[0].value) or n.startswith(node.args[0].value) for n in P.NAMES):
            yield node.lineno, ast.get_source_segment(path.read_text(), node)


def test_no_module_compares_precision_names():
    """Modules ask the registry record; comparing names is how "int4" once
    would have been treated as binary (``precision.endswith("int8")``)."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        if path.name in _ALLOWED:
            continue
        found += [f"{path.relative_to(PKG)}:{ln}: {src}" for ln, src in _string_comparisons(path)]
    assert not found, "precision names compared as strings:\n" + "\n".join(found)
