"""Shard residency: the Dask actor that serves one shard (:class:`_ShardServer`)
and the pool that creates, re-creates, calls and releases them
(:class:`_ShardPool`), which :class:`ShardedIndex` delegates to."""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import distributed as _dd
import numpy as np
from distributed import Client

from .._format import FormatError
from ..index import load_index
from ..search import rescore as _rescore
from ..search import search as _search
from ._errors import ManifestError, ShardError, _deterministic
from ._files import _shard_identity
from ._manifest import _FIRST_STAGE, Manifest, ShardInfo, _check_shard_file
from ._plan import _place

# Testing seam: when set in a worker process, called as hook(shard_index, method)
# before every shard call (the tests use it to kill a worker mid-query).
_SHARD_CALL_HOOK: Optional[Callable[[int, str], None]] = None


class _ShardServer:
    """Dask actor serving one shard: opens the file once and keeps it."""

    def __init__(self, shard: int, info: ShardInfo, manifest: Manifest):
        self.shard = shard
        self.path = info.path
        self.offset = info.offset
        where = f"shard {shard} ({info.path})"
        _check_shard_file(shard, info, manifest)  # the file this worker sees matches the manifest
        self.obj = load_index(info.path, mmap=True)
        # The file actually loaded must be the one checked (content identity): load_index reports the
        # header CRC of the descriptor it read when it can (``_file_crc``); otherwise re-read the header
        # after loading (the check above read it before).
        crc = getattr(self.obj, "_file_crc", None)
        if crc is None:
            crc = _shard_identity(info.path, where)[2]
        if crc != info.crc32 or len(self.obj) != info.count:
            raise ManifestError(f"{where}: the file changed while the shard was being opened (content checksum "
                                f"0x{crc or 0:08x}, the manifest records 0x{info.crc32:08x}); rebuild the sharded "
                                "index, or rewrite the manifest with write_manifest if these are the right files")
        self.kind = manifest.kind
        self.pid = os.getpid()
        try:
            self.worker = _dd.get_worker().address
        except ValueError:  # pragma: no cover - always created as an actor
            self.worker = None

    def _hook(self, method: str) -> None:
        if _SHARD_CALL_HOOK is not None:
            _SHARD_CALL_HOOK(self.shard, method)

    def where(self) -> Dict[str, Any]:
        return {"shard": self.shard, "path": self.path, "worker": self.worker, "host": socket.gethostname(),
                "pid": self.pid, "memory": self.obj.memory_usage()}

    def _global(self, pos: np.ndarray, valid: Optional[np.ndarray] = None):
        ids = getattr(self.obj, "_idbuf", None) if self.kind == "index" else self.obj.ids
        g = pos + self.offset if valid is None else np.where(valid, pos + self.offset, -1)
        if ids is None:
            return g, None
        flat = np.asarray(ids).reshape(-1)
        u = flat[pos] if valid is None else np.where(valid, flat[np.where(valid, pos, 0)], -1)
        return g, u

    def search(self, q: np.ndarray, k: int, threads: int):
        """Index shard: local top-k of prepared codes -> (values, global rows, user ids or None)."""
        self._hook("search")
        vals, pos, _ = self.obj._search_codes(q, k, threads)
        g, u = self._global(pos)
        return vals, g, u

    def binary_topk(self, qb: np.ndarray, kk: int, threads: int):
        """Pipeline shard, round 1: Hamming top-kk -> (distances, global rows)."""
        self._hook("binary_topk")
        p = self.obj
        if len(p) == 0:
            return np.empty((qb.shape[0], 0), np.int32), np.empty((qb.shape[0], 0), np.int64)
        d, pos = _search(qb, p.binary_codes, kk, precision=_FIRST_STAGE.name, threads=threads)
        return d, pos + self.offset

    def rescore(self, q: np.ndarray, local: np.ndarray, k: int, threads: int):
        """Pipeline shard, round 2: rescore the given local rows (-1 = empty
        slot) -> (float64 scores, global rows, user ids or None), best k."""
        self._hook("rescore")
        p = self.obj
        s, ids = _rescore(q, p.rescore_codes, local, precision=p.rescore_precision, ranges=p.ranges,
                          k=k, threads=threads)
        g, u = self._global(ids, ids >= 0)
        return s, g, u

    def local_search(self, q: np.ndarray, qb: np.ndarray, top_k: int, mult: int, threads: int):
        """Pipeline shard, one round: own Hamming top (top_k*mult), rescored, best top_k."""
        self._hook("local_search")
        p = self.obj
        if len(p) == 0:
            return np.empty((q.shape[0], 0), np.float64), np.empty((q.shape[0], 0), np.int64), \
                (np.empty((q.shape[0], 0), np.int64) if p.ids is not None else None)
        _, cand = _search(qb, p.binary_codes, top_k * mult, precision=_FIRST_STAGE.name, threads=threads)
        s, ids = _rescore(q, p.rescore_codes, cand, precision=p.rescore_precision, ranges=p.ranges,
                          k=top_k, threads=threads)
        g, u = self._global(ids)
        return s, g, u


def _get_client(client: Optional[Client]) -> Client:
    if client is None:
        try:
            return _dd.get_client()
        except ValueError:
            raise ValueError("no Dask client: pass client=distributed.Client(...) or create one first") from None
    if not isinstance(client, Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    return client


def _live_workers(client: Client) -> List[str]:
    """Addresses of the workers the scheduler knows now (a fresh query)."""
    return sorted(client.nthreads())


def _nbytes(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    if obj is None:
        return 0
    return 8


@dataclass
class _Server:
    future: Any  # the actor's creation future (keeps the actor alive)
    actor: Any
    worker: Optional[str]


class _ShardPool:
    """The actor lifecycle of a sharded index: one :class:`_ShardServer` per
    shard, created on open (placed greedily by rows), re-created on another
    live worker when a call fails (workers that looked lost are avoided from
    then on), called concurrently one round at a time with retries, released
    on :meth:`close`. Safe to use from several client threads."""

    def __init__(self, manifest: Manifest, client: Client, timeout: Optional[float] = None):
        self.manifest = manifest
        self.client = client
        self._token = uuid.uuid4().hex[:12]
        self._gen = 0
        self._lock = threading.Lock()
        self._dead: set = set()
        self._servers: List[Optional[_Server]] = [None] * len(manifest.shards)
        self.closed = False
        deadline = None if timeout is None else time.monotonic() + timeout  # for all the actors together
        place = _place([s.count for s in manifest.shards], _live_workers(client))
        futs = [self._submit(i, place[i]) for i in range(len(manifest.shards))]
        try:
            for i, f in enumerate(futs):
                rem = None if deadline is None else max(0.001, deadline - time.monotonic())
                self._servers[i] = self._finish(i, f, rem)
        except BaseException:
            self.close()
            try:
                client.cancel(futs)
            except Exception:  # pragma: no cover
                pass
            raise

    def _submit(self, i: int, worker: Optional[str]):
        self._gen += 1
        key = f"quantlib-shard-{self._token}-{i}-{self._gen}"
        return self.client.submit(_ShardServer, i, self.manifest.shards[i], self.manifest, actor=True,
                                  workers=[worker] if worker else None, allow_other_workers=True, key=key,
                                  pure=False)

    def _finish(self, i: int, fut, timeout: Optional[float]) -> _Server:
        try:
            actor = fut.result(timeout=timeout)
            worker = actor.where().result(timeout=timeout)["worker"]
        except Exception as exc:
            try:
                self.client.cancel([fut])
            except Exception:  # pragma: no cover
                pass
            if isinstance(exc, FormatError):
                raise
            raise ShardError(i, self.manifest.shards[i].path, exc, what="open") from exc
        return _Server(fut, actor, worker)

    def live(self, i: int) -> _Server:
        """Shard i's actor, re-created first when it is gone or on a worker that looked lost."""
        if self.closed:
            raise RuntimeError("this ShardedIndex is closed")
        srv = self._servers[i]
        if srv is None or srv.future.status != "finished" or srv.worker in self._dead:
            srv = self.respawn(i, None)
        return srv

    def respawn(self, i: int, failed: Optional[_Server], lost: bool = False,
                timeout: Optional[float] = None) -> _Server:
        """Re-create shard i's actor, preferably on another live worker.

        ``lost``: the failure looked like a lost worker (connection error or
        timeout), so the worker is avoided for every shard from now on (its
        other shards are moved on their next call)."""
        with self._lock:
            if self.closed:
                raise RuntimeError("this ShardedIndex is closed")
            if lost and failed is not None and failed.worker:
                self._dead.add(failed.worker)
            cur = self._servers[i]
            if cur is not None and cur is not failed and cur.future.status == "finished" \
                    and cur.worker not in self._dead:
                return cur  # another thread already replaced it
            everyone = _live_workers(self.client)
            live = [w for w in everyone if w not in self._dead]
            if failed is not None and len(live) > 1:
                live = [w for w in live if w != failed.worker] or live
            if not live:  # only "suspect" workers left: better them than nothing
                live = everyone
            if not live:
                raise RuntimeError("the Dask cluster has no live workers left")
            load = {w: 0 for w in live}
            for srv in self._servers:
                if srv is not None and srv.worker in load:
                    load[srv.worker] += 1
            worker = min(live, key=lambda w: (load[w], w))
            srv = self._finish(i, self._submit(i, worker), timeout)
            old, self._servers[i] = self._servers[i], srv
        if old is not None:
            try:
                self.client.cancel([old.future])
            except Exception:  # pragma: no cover
                pass
        return srv

    def run_round(self, method: str, args: Dict[int, tuple], retries: int, timeout: Optional[float],
                  allow_partial: bool, st: Dict[str, Any]) -> Tuple[Dict[int, Any], Dict[int, ShardError]]:
        """Call ``method`` on the given shards concurrently; retry failures.

        Returns the results and the failures (ShardError per shard); without
        ``allow_partial`` the first failure is raised."""
        t0 = time.perf_counter()
        calls: Dict[int, Any] = {}
        servers: Dict[int, Optional[_Server]] = {}
        early: Dict[int, BaseException] = {}
        for i, a in args.items():
            try:
                srv = self.live(i)
                servers[i] = srv
                calls[i] = getattr(srv.actor, method)(*a)
            except Exception as exc:  # the actor could not be (re)created
                servers[i] = None
                early[i] = exc
        results: Dict[int, Any] = {}
        failures: Dict[int, ShardError] = {}
        for i, a in args.items():
            attempt = 1
            errors: List[BaseException] = []
            exc: Optional[BaseException] = early.get(i)
            while True:
                if exc is None:
                    try:
                        results[i] = calls[i].result(timeout=timeout)
                        break
                    except Exception as e:
                        exc = e
                errors.append(exc)
                cause = exc.cause if isinstance(exc, ShardError) else exc
                if _deterministic(cause) or attempt > retries:
                    break
                attempt += 1
                st["retries"] += 1
                try:
                    srv = self.respawn(i, servers[i], lost=isinstance(cause, OSError), timeout=timeout)
                    servers[i] = srv
                    calls[i] = getattr(srv.actor, method)(*a)
                    exc = None
                except Exception as e:
                    exc = e
            if i in results:
                continue
            first = errors[0].cause if isinstance(errors[0], ShardError) else errors[0]
            last = errors[-1].cause if isinstance(errors[-1], ShardError) else errors[-1]
            err = ShardError(i, self.manifest.shards[i].path, last, attempt, what=method)
            if last is not first:
                err.args = (f"{err.args[0]} (first error: {type(first).__name__}: {first})",)
            err.__cause__ = last
            failures[i] = err
            if not allow_partial:
                raise err
        st["rounds"].append({"method": method, "shards": len(args),
                             "bytes_sent": sum(_nbytes(a) for a in args.values()),
                             "bytes_received": sum(_nbytes(r) for r in results.values()),
                             "seconds": time.perf_counter() - t0})
        return results, failures

    def close(self) -> None:
        """Release the actors (the workers drop their open files); idempotent."""
        self.closed = True
        futs = [s.future for s in self._servers if s is not None]
        self._servers = [None] * len(self._servers)
        if futs:
            try:
                self.client.cancel(futs)
            except Exception:  # pragma: no cover - client already closed
                pass

    def locations(self) -> List[Dict[str, Any]]:
        """Per shard: worker address, host, pid, and memory use of the opened shard."""
        return [self.live(i).actor.where().result() for i in range(len(self._servers))]
