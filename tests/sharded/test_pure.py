"""quantlib.distributed's pure parts, without a cluster: the public API
(names and ``inspect.signature`` of every public function, class and method,
compared with a snapshot taken from the single-module version before the
package split), the modules that must import no Dask, the build plan (shard
boundaries, ranges policy, argument checks), placement, and the merge and
candidate routing against one search over the whole corpus.

The manifest round trip and its validation are tested in
tests/test_distributed.py (they need shard files, not a cluster)."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("distributed")

import quantlib  # noqa: E402
import quantlib.distributed as qd  # noqa: E402
from quantlib.distributed import ShardInfo, _merge, _plan  # noqa: E402
from quantlib.search import _FLOAT_BLOCK, merge_topk  # noqa: E402

PURE = ("_errors", "_files", "_manifest", "_plan", "_merge", "_sources", "_tasks")

# taken with public_api() from quantlib/distributed.py at 2dfe804 (before the package split)
SIGNATURES = {
    'MANIFEST_NAME': "'manifest.json'",
    'Manifest': "class(kind: 'str', precision: 'str', dim: 'int', count: 'int', has_ids: 'bool', shards: 'Tuple[ShardInfo, ...]', ranges: 'Optional[np.ndarray]' = None, rescore_precision: 'Optional[str]' = None, path: 'Optional[str]' = None) -> None",
    'Manifest.__bases__': ['object'],
    'Manifest.__init__': "(self, kind: 'str', precision: 'str', dim: 'int', count: 'int', has_ids: 'bool', shards: 'Tuple[ShardInfo, ...]', ranges: 'Optional[np.ndarray]' = None, rescore_precision: 'Optional[str]' = None, path: 'Optional[str]' = None) -> None",
    'Manifest.__repr__': '(self)',
    'Manifest.to_json': "(self, base: 'Optional[str]' = None) -> 'str'",
    'ManifestError': 'class(builtin init)',
    'ManifestError.__bases__': ['FormatError', 'ValueError', 'Exception', 'BaseException', 'object'],
    'ShardError': "class(shard: 'int', path: 'str', cause: 'BaseException', attempts: 'int' = 1, what: 'str' = 'search')",
    'ShardError.__bases__': ['RuntimeError', 'Exception', 'BaseException', 'object'],
    'ShardError.__init__': "(self, shard: 'int', path: 'str', cause: 'BaseException', attempts: 'int' = 1, what: 'str' = 'search')",
    'ShardError.__reduce__': '(self)',
    'ShardInfo': "class(path: 'str', count: 'int', offset: 'int', nbytes: 'int', crc32: 'Optional[int]' = None) -> None",
    'ShardInfo.__bases__': ['object'],
    'ShardInfo.__init__': "(self, path: 'str', count: 'int', offset: 'int', nbytes: 'int', crc32: 'Optional[int]' = None) -> None",
    'ShardInfo.__repr__': '(self)',
    'ShardedIndex': "class(manifest: 'Manifest', client: 'Client', *, timeout: 'Optional[float]' = None)",
    'ShardedIndex.__bases__': ['object'],
    'ShardedIndex.__enter__': '(self) -> "\'ShardedIndex\'"',
    'ShardedIndex.__exit__': "(self, *exc) -> 'None'",
    'ShardedIndex.__init__': "(self, manifest: 'Manifest', client: 'Client', *, timeout: 'Optional[float]' = None)",
    'ShardedIndex.__len__': "(self) -> 'int'",
    'ShardedIndex.__repr__': "(self) -> 'str'",
    'ShardedIndex.close': "(self) -> 'None'",
    'ShardedIndex.dim': 'property',
    'ShardedIndex.kind': 'property',
    'ShardedIndex.locations': "(self) -> 'List[Dict[str, Any]]'",
    'ShardedIndex.n_shards': 'property',
    'ShardedIndex.precision': 'property',
    'ShardedIndex.ranges': 'property',
    'ShardedIndex.search': "(self, queries: 'Any', k: 'int' = 10, *, rescore_multiplier: 'Optional[int]' = None, rescore_mode: 'str' = 'exact', allow_partial: 'bool' = False, retries: 'int' = 1, timeout: 'Optional[float]' = None, threads: 'int' = 1, stats: 'Optional[Dict[str, Any]]' = None)",
    'ShardedIndex.shards': 'property',
    'build_sharded': '(data: \'Any\', directory: \'Union[str, os.PathLike]\', *, n_shards: \'Optional[int]\' = None, shard_sizes: \'Optional[Sequence[int]]\' = None, precision: \'str\' = \'ubinary\', rescore: \'bool\' = False, rescore_precision: \'str\' = \'int8\', ranges: \'Optional[Any]\' = None, ids: \'Optional[Any]\' = None, dim: \'Optional[int]\' = None, client: \'Optional[Client]\' = None, progress: \'Progress\' = False, chunk_size: \'int\' = 65536, threads: \'int\' = 1, overwrite: \'bool\' = False, timeout: \'Optional[float]\' = 3600.0, retries: \'int\' = 2) -> "\'ShardedIndex\'"',
    'open_sharded': '(path: \'Union[str, os.PathLike]\', client: \'Optional[Client]\' = None, *, check_files: \'bool\' = True, timeout: \'Optional[float]\' = None) -> "\'ShardedIndex\'"',
    'read_manifest': "(path: 'Union[str, os.PathLike]') -> 'Manifest'",
    'write_manifest': "(shard_paths: 'Sequence[Union[str, os.PathLike]]', path: 'Union[str, os.PathLike]') -> 'Manifest'",
}


def public_api(mod) -> dict:
    """Every public name of ``mod``: functions and classes by signature, methods
    (and a few dunders) of the classes, properties, base classes, constants by repr."""
    out = {}
    dunders = ("__init__", "__enter__", "__exit__", "__len__", "__repr__", "__reduce__")
    for name in sorted(mod.__all__):
        obj = getattr(mod, name)
        if not inspect.isclass(obj):
            out[name] = str(inspect.signature(obj)) if callable(obj) else repr(obj)
            continue
        try:
            out[name] = "class" + str(inspect.signature(obj))
        except ValueError:
            out[name] = "class(builtin init)"
        out[name + ".__bases__"] = [b.__name__ for b in obj.__mro__[1:]]
        for a, v in sorted(vars(obj).items()):
            if a.startswith("_") and a not in dunders:
                continue
            if isinstance(v, property):
                out[f"{name}.{a}"] = "property"
            elif callable(v):
                out[f"{name}.{a}"] = str(inspect.signature(v))
    return out


def test_public_names_and_signatures_unchanged():
    assert public_api(qd) == SIGNATURES
    assert qd.ShardError.__module__ == qd.ManifestError.__module__ == "quantlib.distributed"


def test_pure_modules_import_no_dask():
    """The pure modules load with Dask blocked (the package __init__, which
    guards the Dask import, is replaced by a bare namespace for this)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(quantlib.__file__)))
    code = ("import importlib, os, sys, types\n"
            "sys.modules['distributed'] = None; sys.modules['dask'] = None\n"
            "import quantlib\n"
            "pkg = types.ModuleType('quantlib.distributed')\n"
            "pkg.__path__ = [os.path.join(os.path.dirname(quantlib.__file__), 'distributed')]\n"
            "sys.modules['quantlib.distributed'] = pkg\n"
            f"for m in {PURE!r}:\n"
            "    importlib.import_module('quantlib.distributed.' + m)\n"
            "print(sorted(m for m in sys.modules if m.startswith('quantlib.distributed.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sorted("quantlib.distributed." + m for m in PURE))


# --------------------------------------------------------------------------- the build plan
def plan(data, n_workers=2, **kw):
    args = dict(n_shards=None, shard_sizes=None, precision="ubinary", rescore=False, rescore_precision="int8",
                ranges=None, ids=None, dim=None, chunk_size=65536, threads=1)
    args.update(kw)
    return _plan._plan_build(data, n_workers=lambda: n_workers, **args)


X = np.random.default_rng(0).standard_normal((103, 16)).astype(np.float32)


@pytest.mark.parametrize("n,S", [(103, 1), (103, 4), (3, 5), (0, 2)])
def test_plan_near_equal_shards(n, S):
    p = plan(X[:n], n_shards=S)
    base, extra = divmod(n, S)
    assert p.sizes == [base + (j < extra) for j in range(S)]
    assert p.starts.tolist() == [0] + np.cumsum(p.sizes).tolist()
    assert [p.rows(j) for j in range(S)] == [(int(p.starts[j]), int(p.starts[j + 1])) for j in range(S)]
    assert (p.kind, p.precision, p.dim, p.n, p.width, p.n_shards) == ("index", "ubinary", 16, n, 16, S)
    assert not p.needs_ranges and p.ranges is None and p.ids is None


def test_plan_default_is_one_shard_per_worker():
    assert plan(X, n_workers=3).sizes == [35, 34, 34]
    assert plan(X, n_workers=0).sizes == [103]  # no worker known yet: one shard


def test_plan_float32_is_cut_like_every_precision():
    n = 2 * _FLOAT_BLOCK + 5
    x = np.zeros((n, 4), np.float32)
    p = plan(x, precision="float32", n_shards=4)
    assert p.sizes == [n // 4 + (1 if j < n % 4 else 0) for j in range(4)]  # near-equal, no block rounding
    assert plan(x, precision="float32", shard_sizes=[5, n - 5]).sizes == [5, n - 5]  # no warning (errors here)


def test_plan_shard_sizes_are_checked():
    assert plan(X, shard_sizes=[0, 100, 0, 3]).sizes == [0, 100, 0, 3]
    with pytest.raises(ValueError, match="not both"):
        plan(X, n_shards=2, shard_sizes=[103])
    with pytest.raises(ValueError, match="must sum to the 103 rows"):
        plan(X, shard_sizes=[100])
    with pytest.raises(ValueError, match=r"shard_sizes\[1\] must be an int >= 0"):
        plan(X, shard_sizes=[104, -1])
    with pytest.raises(TypeError, match="sequence of ints"):
        plan(X, shard_sizes="103")


def test_plan_ranges_policy():
    assert plan(X, precision="int8").needs_ranges  # float data -> global min/max pass
    assert plan(X, rescore=True).needs_ranges and plan(X, rescore=True).kind == "pipeline"
    codes = np.zeros((10, 16), np.int8)
    assert not plan(codes, precision="int8").needs_ranges  # codes: ranges only if given
    r = np.stack([X.min(0), X.max(0)])
    assert np.array_equal(plan(X, precision="int8", ranges=r).ranges, r)
    with pytest.raises(ValueError, match="ranges only apply to int8/uint8"):
        plan(X, ranges=r)
    with pytest.raises(ValueError, match="cannot compute ranges from 0 rows"):
        plan(X[:0], precision="int8")


def test_plan_dim_ids_and_kinds():
    packed = np.zeros((5, 3), np.uint8)
    assert plan(packed).dim == 24 and plan(packed, dim=20).dim == 20
    with pytest.raises(ValueError, match="pack to 4 bytes but the codes have 3"):
        plan(packed, dim=25)
    with pytest.raises(ValueError, match="dim is only for packed binary codes"):
        plan(X, dim=8)
    assert plan(X, ids=np.arange(103, dtype=np.uint32)).ids.dtype == np.int64
    with pytest.raises(ValueError, match="fit in int64"):
        plan(X[:1], ids=np.array([2 ** 63], np.uint64))
    with pytest.raises(ValueError, match="1-D integer array of 103 ids"):
        plan(X, ids=np.arange(5))
    with pytest.raises(ValueError, match="retrieval precision is 'ubinary'"):
        plan(X, rescore=True, precision="int8")
    with pytest.raises(TypeError, match="float embeddings for rescore=True"):
        plan(packed, rescore=True)
    with pytest.raises(TypeError, match="rescore must be a bool"):
        plan(X, rescore=1)
    with pytest.raises(ValueError, match="must be 2-D"):
        plan(X[0])


def test_combine_ranges_is_the_global_min_max():
    parts = [quantlib.calibration_ranges(X[s:e]) if e > s else None for s, e in ((0, 40), (40, 40), (40, 103))]
    assert np.array_equal(_plan._combine_ranges(parts), quantlib.calibration_ranges(X))
    with pytest.raises(ValueError, match="infinite values"):
        _plan._combine_ranges([np.array([[-np.inf], [1.0]], np.float32)])


def test_place_is_greedy_by_rows():
    assert _plan._place([10, 10, 10, 10], ["a", "b"]) == ["a", "b", "a", "b"]
    # 100 -> a, 50 -> b, 50 -> b; then a tie on rows (100 each) goes to the worker with fewer shards
    assert _plan._place([1, 100, 50, 50], ["a", "b"]) == ["a", "a", "b", "b"]
    with pytest.raises(RuntimeError, match="no workers"):
        _plan._place([1], [])


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (float("nan"), ValueError), (True, TypeError),
                                     ("1", TypeError)])
def test_timeout_and_retries_checks(bad, exc):
    with pytest.raises(exc, match="timeout must be"):
        _plan._check_timeout(bad)
    assert _plan._check_timeout(None) is None and _plan._check_retries(np.int64(2)) == 2
    with pytest.raises((TypeError, ValueError), match="retries must be an int >= 0"):
        _plan._check_retries(-1 if exc is ValueError else 1.5)


# --------------------------------------------------------------------------- merge and routing
def shards_of(sizes):
    offs = np.concatenate([[0], np.cumsum(sizes)])
    return [ShardInfo(f"s{j}", int(c), int(offs[j]), 0, 0) for j, c in enumerate(sizes)]


CODES = np.random.default_rng(1).integers(0, 4, (90, 2), dtype=np.uint8)  # 16 bits, ties everywhere
Q = np.random.default_rng(2).integers(0, 256, (7, 2), dtype=np.uint8)
LAYOUTS = [[90], [0, 30, 0, 25, 35], [45, 45], [89, 1]]


@pytest.mark.parametrize("sizes", LAYOUTS)
@pytest.mark.parametrize("k", [1, 10, 200])
def test_merge_equals_one_search(sizes, k):
    """Per shard what the actor returns (local top k, global rows); merged == one search."""
    want_d, want_i = quantlib.search(Q, CODES, k, precision="ubinary")
    parts = []
    for s in shards_of(sizes):
        if s.count:
            d, pos = quantlib.search(Q, CODES[s.offset:s.offset + s.count], k, precision="ubinary")
            parts.append((d, pos + s.offset, None))
    descending, vdtype, fill = _merge._index_order("ubinary")
    width = min(k, len(CODES))
    d, i = _merge._merge_parts(parts, len(Q), k, descending, vdtype, width, fill, False, len(CODES))
    assert np.array_equal(d, want_d) and np.array_equal(i, want_i)
    cand = _merge._merge_candidates([p[:2] for p in parts], len(Q), k)
    assert np.array_equal(cand, want_i)


def test_merge_maps_user_ids_after_the_merge_and_pads():
    uid = np.arange(90, dtype=np.int64)[::-1] * 7  # decreasing: ties must still go to the lower global row
    want_d, want_i = quantlib.search(Q, CODES, 5, precision="ubinary")
    parts = []
    for s in shards_of([40, 50]):
        d, pos = quantlib.search(Q, CODES[s.offset:s.offset + s.count], 5, precision="ubinary")
        parts.append((d, pos + s.offset, uid[pos + s.offset]))
    d, ids = _merge._merge_parts(parts, len(Q), 5, False, np.int32, 5, 0, True, 90)
    assert np.array_equal(d, want_d) and np.array_equal(ids, uid[want_i])
    # no shard answered: padded with the worst value for the order and id -1
    d, ids = _merge._merge_parts([], 3, 4, True, np.float64, 4, -np.inf, False, 90)
    assert d.shape == (3, 4) and np.all(d == -np.inf) and np.all(ids == -1)


def test_merge_sorts_empty_rescoring_slots_last():
    v = np.array([[-np.inf, 1.0, 1.0]])
    g = np.array([[-1, 9, 4]])
    d, ids = _merge._merge_parts([(v, g, None)], 1, 3, True, np.float64, 3, -np.inf, False, 10)
    assert ids.tolist() == [[4, 9, -1]] and d.tolist() == [[1.0, 1.0, -np.inf]]
    assert np.array_equal(merge_topk(v[:, 1:], g[:, 1:], 2, descending=True)[1], [[4, 9]])


@pytest.mark.parametrize("sizes", LAYOUTS)
def test_route_candidates_to_their_owners(sizes):
    rng = np.random.default_rng(3)
    cand = np.stack([rng.permutation(90)[:12] for _ in range(5)])
    cand[1, 6:] = -1  # fewer candidates than asked for
    shards = shards_of(sizes)
    routed = _merge._route_candidates(cand, shards)
    for j, s in enumerate(shards):
        owned = [[int(c) - s.offset for c in row if s.offset <= c < s.offset + s.count] for row in cand]
        if not any(owned):
            assert j not in routed
            continue
        loc = routed[j]
        assert loc.dtype == np.int32 and loc.shape == (5, max(map(len, owned)))
        assert [[int(v) for v in row if v >= 0] for row in loc] == owned  # in the candidates' order
    assert set(_merge._route_candidates(cand, shards, skip=set(routed))) == set()
