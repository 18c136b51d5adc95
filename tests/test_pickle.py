"""Index and RescorePipeline pickle and deep-copy (multiprocessing, joblib, Ray,
caches): in-memory objects as their rows, memory-mapped ones as their path and
file identity, never their bytes."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import quantlib
from quantlib import FormatError, Index, RescorePipeline, load_index
from quantlib import _precision as REG

X = np.random.default_rng(11).standard_normal((300, 40)).astype(np.float32)
Q = X[:7] + 0.01


def _index(name: str, ids: bool) -> Index:
    rec = REG.PRECISIONS[name]
    idx = Index(40, name, quantlib.calibration_ranges(X) if rec.needs_ranges else None)
    idx.add(X, ids=np.arange(300) * 7 + 3 if ids else None)
    return idx


def _same(a, b):
    va, ia = a.search(Q, 12)
    vb, ib = b.search(Q, 12)
    np.testing.assert_array_equal(va, vb)
    np.testing.assert_array_equal(ia, ib)


@pytest.mark.parametrize("name", REG.NAMES)
@pytest.mark.parametrize("ids", [False, True])
def test_in_memory_index_pickles_and_deep_copies(name, ids):
    idx = _index(name, ids)
    for other in (pickle.loads(pickle.dumps(idx)), copy.deepcopy(idx), copy.copy(idx)):
        assert isinstance(other, Index) and len(other) == len(idx) and other.precision == name
        _same(idx, other)
    clone = pickle.loads(pickle.dumps(idx))
    clone.add(X[:2])  # the clone is independent and writable
    assert len(clone) == len(idx) + 2


@pytest.mark.parametrize("name", REG.NAMES)
def test_mapped_index_pickles_as_its_path(tmp_path, name):
    p = tmp_path / "i.qlx"
    _index(name, True).save(p)
    idx = load_index(p)
    blob = pickle.dumps(idx)
    assert str(p).encode() in blob and len(blob) < 600  # a path and a CRC, not the codes
    other = pickle.loads(blob)
    assert other.is_mmap and other._path == idx._path
    _same(idx, other)
    _same(idx, copy.deepcopy(idx))


def test_mapped_index_unpickled_after_the_file_changed_is_refused(tmp_path):
    p = tmp_path / "i.qlx"
    _index("ubinary", False).save(p)
    blob = pickle.dumps(load_index(p))
    _index("ubinary", True).save(p)  # another file at the same path
    with pytest.raises(FormatError, match="changed since"):
        pickle.loads(blob)


def test_pipeline_pickles_by_path_and_detects_a_change(tmp_path):
    p = tmp_path / "p.qlx"
    pipe = RescorePipeline.build(X, p)
    blob = pickle.dumps(pipe)
    assert len(blob) < 2000 < pipe.rescore_codes.nbytes
    other = pickle.loads(blob)
    a, b = pipe.search(Q, 5), other.search(Q, 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = copy.deepcopy(pipe)
    np.testing.assert_array_equal(c.search(Q, 5)[1], a[1])
    RescorePipeline.build(X[::-1].copy(), p)
    with pytest.raises(FormatError, match="changed since"):
        pickle.loads(blob)


def test_pipeline_in_ram_pickles_its_arrays(tmp_path):
    p = tmp_path / "p.qlx"
    RescorePipeline.build(X, p)
    pipe = RescorePipeline.load(p, mmap=False)
    other = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(other.search(Q, 5)[1], pipe.search(Q, 5)[1])
