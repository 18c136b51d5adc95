"""Sharded exact search on a Dask cluster, with results identical to one index.

A corpus too large for one machine is split into contiguous shards, each an
ordinary quantlib file (an :class:`~quantlib.Index` or a
:class:`~quantlib.RescorePipeline`), plus a JSON manifest naming them in order.
Each shard is served by a Dask actor; ``search`` merges the shards' answers
with the single-index tie rule. Install with
``pip install "quantlib-embed[dask]"``; ``import quantlib`` never imports Dask.

Usage::

    from distributed import Client
    from quantlib.distributed import build_sharded, open_sharded

    client = Client(..., direct_to_workers=True)          # any dask.distributed cluster
    sharded = build_sharded(embeddings, "corpus/", n_shards=8, rescore=True, client=client)
    scores, ids = sharded.search(queries, 10)             # == RescorePipeline.search(queries, 10)
    sharded = open_sharded("corpus/", client)             # later, from the manifest

The design (actors, the search rounds, ties, failure behaviour, the build's
retries and deadline) is described in ``docs/distributed.md``.

Layout: the pure parts import no Dask and need no cluster -- ``_errors``,
``_files`` and ``_manifest`` (manifest I/O and validation), ``_plan`` (build
plan, shard boundaries, placement), ``_merge`` (merge and candidate routing),
``_sources`` and ``_tasks`` (row sources and the build's worker tasks); the
cluster parts are ``_actors`` (the shard actor and the pool that owns the
actors' lifecycle), ``_build`` (build_sharded's steps) and ``_index``
(ShardedIndex's query planning, open_sharded). Testing seams live where they
are read: ``_actors._SHARD_CALL_HOOK``, ``_tasks._BUILD_TASK_HOOK``,
``_build._NO_WORKER_GRACE``.
"""
from __future__ import annotations

try:
    import distributed as _dd  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'quantlib.distributed needs Dask (dask.distributed): pip install "quantlib-embed[dask]"'
    ) from _exc

from ..search import _FLOAT_BLOCK  # noqa: F401  (the tests cut float32 shards with it)
from ._build import build_sharded
from ._errors import ManifestError, ShardError
from ._files import _shard_identity, _within  # noqa: F401  (used by fuzz/fuzz_manifest.py)
from ._index import ShardedIndex, open_sharded
from ._manifest import MANIFEST_NAME, Manifest, ShardInfo, _checked_manifest, read_manifest, write_manifest  # noqa: F401
from ._sources import _memmap_source  # noqa: F401  (tested directly)

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "ManifestError",
    "ShardError",
    "ShardInfo",
    "ShardedIndex",
    "build_sharded",
    "open_sharded",
    "read_manifest",
    "write_manifest",
]

# The errors keep the name they always had in tracebacks and pickles (the other public objects
# keep their defining module, so inspect.getsource still finds them).
ShardError.__module__ = ManifestError.__module__ = __name__
