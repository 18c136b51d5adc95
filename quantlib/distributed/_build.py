"""build_sharded: a plan (:func:`._plan._plan_build`, pure) and its steps:
prepare the directory, describe the row sources, run the ranges pass and the
shard tasks (:class:`_TaskRun`: resubmission, deadline, a cluster without
workers), write the manifest, open the result."""
from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import CancelledError as _CancelledError
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import distributed as _dd
import numpy as np
from distributed import Client

from ..pipeline import Progress, _progress_callback
from ._actors import _get_client, _live_workers
from ._errors import ShardError, _deterministic
from ._index import ShardedIndex, open_sharded
from ._manifest import MANIFEST_NAME, Manifest, ShardInfo
from ._files import _write_json_atomic
from ._plan import _BuildPlan, _check_retries, _check_timeout, _combine_ranges, _place, _plan_build
from ._sources import _DaskRows, _MemmapRows, _memmap_source
from ._tasks import _build_shard_task, _minmax_task

# A build fails (ShardError naming the cause) when the cluster has had no worker at all for
# this many seconds: nothing can run, and a dead cluster must not hang the build until the timeout.
_NO_WORKER_GRACE = 60.0


def build_sharded(
    data: Any, directory: Union[str, os.PathLike], *, n_shards: Optional[int] = None,
    shard_sizes: Optional[Sequence[int]] = None, precision: str = "ubinary", rescore: bool = False,
    rescore_precision: str = "int8", ranges: Optional[Any] = None, ids: Optional[Any] = None,
    dim: Optional[int] = None, client: Optional[Client] = None, progress: Progress = False,
    chunk_size: int = 65536, threads: int = 1, overwrite: bool = False, timeout: Optional[float] = 3600.0,
    retries: int = 2,
) -> "ShardedIndex":
    """Quantize a large matrix into shard files in parallel on a Dask cluster.

    Parameters
    ----------
    data : numpy.ndarray, numpy.memmap or dask.array.Array, shape (N, d)
        Float embeddings, or codes of ``precision`` for an index. A C-contiguous
        ``np.memmap`` is reopened by path on the workers; a dask array is
        computed block by block there; other arrays are scattered to them.
    directory : path
        Where the shard files (``shard-00000.qlx``, ...) and ``manifest.json``
        go; created if needed, on a filesystem the workers share.
    n_shards, shard_sizes : int or sequence of int, optional
        Contiguous shards of near-equal size (the first ``N % S`` get one
        extra row; default: one per worker), or explicit rows per shard (sum
        ``N``; zeros allowed).
    precision, rescore, rescore_precision : str, bool, str
        Index shards of ``precision``; or, with ``rescore=True``,
        :class:`~quantlib.RescorePipeline` shards (``precision="ubinary"``,
        ``rescore_precision`` ``"int8"`` or ``"uint8"``) from float data.
    ranges : array_like, shape (2, d), optional
        Calibration ranges for int8/uint8 codes. Default (float data): the
        global per-dimension min/max over **all** rows (one parallel pass), so
        every shard quantizes exactly like one index of the whole matrix.
    ids : array_like of int, shape (N,), optional
        User ids reported by ``search`` (ties still go to the lower global row).
    dim : int, optional
        Bits of packed binary codes given as ``data`` (default ``8 * width``).
    client : distributed.Client, optional
        Default: the current client (``distributed.get_client()``).
    progress : bool or callable
        True: a tqdm bar over rows; a callable gets ``(rows_done, rows_total)``
        after each shard.
    chunk_size, threads : int
        Rows read, quantized and written at a time on a worker; quantlib
        threads per build task (default 1).
    overwrite : bool
        Replace an existing manifest (removed first, so a failed rebuild never
        leaves a manifest pointing at half-rebuilt shards).
    timeout : float or None
        Seconds the whole build may take (default 3600; ``None``: no limit).
    retries : int
        Times a shard's task is resubmitted after a failure a new attempt may
        fix (default 2). Worker deaths and Dask's own reruns: see
        ``docs/distributed.md`` ("Failure behaviour").

    Returns
    -------
    ShardedIndex
        Opened on ``client`` from the written manifest.

    Raises
    ------
    TypeError, ValueError
        Bad arguments (naming them), NaN in the data while computing ranges.
    FileExistsError
        ``directory`` already holds a manifest and ``overwrite`` is False.
    ShardError
        A shard's build failed for another reason, naming the shard and the
        cause (``KilledWorker``, rows lost more than ``retries`` times, no
        workers for 60 s, ``timeout`` expired); no manifest is written.
    """
    timeout = _check_timeout(timeout)
    retries = _check_retries(retries)
    deadline = None if timeout is None else time.monotonic() + timeout
    client = _get_client(client)
    plan = _plan_build(data, n_shards=n_shards, shard_sizes=shard_sizes, precision=precision, rescore=rescore,
                       rescore_precision=rescore_precision, ranges=ranges, ids=ids, dim=dim, chunk_size=chunk_size,
                       threads=threads, n_workers=lambda: len(_live_workers(client)))
    directory, mpath = _prepare_directory(directory, overwrite)
    ctx = _BuildContext(client, plan, directory, deadline, timeout, retries)
    r = _calibration_ranges(ctx)
    results = _write_shards(ctx, r, progress)
    return _write_manifest_and_open(ctx, results, r, mpath)


def _write_manifest_and_open(ctx: "_BuildContext", results: List[Dict[str, int]], r: Optional[np.ndarray],
                             mpath: str) -> "ShardedIndex":
    """Write the manifest of the built shards, then open them (in the time the deadline leaves)."""
    plan = ctx.plan
    shards = tuple(ShardInfo(ctx.paths[j], int(res["count"]), int(plan.starts[j]), int(res["bytes"]),
                             int(res["crc32"])) for j, res in enumerate(results))
    m = Manifest(plan.kind, plan.precision, plan.dim, plan.n, plan.ids is not None, shards, r,
                 plan.rescore_precision if plan.kind == "pipeline" else None, mpath)
    _write_json_atomic(mpath, m.to_json(os.path.dirname(mpath)))
    rem = ctx.left()
    if rem is not None and rem <= 0:
        raise ShardError(0, ctx.paths[0], TimeoutError(
            f"build_sharded wrote every shard and the manifest ({mpath}) but timeout={ctx.timeout:g} s expired "
            "before the result could be opened: open it with open_sharded"), what="open")
    return open_sharded(mpath, ctx.client, timeout=rem)


def _prepare_directory(directory: Union[str, os.PathLike], overwrite: bool) -> Tuple[str, str]:
    """Create the directory; remove an old manifest when ``overwrite`` (else refuse). -> (directory, manifest)"""
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    mpath = os.path.join(directory, MANIFEST_NAME)
    if os.path.exists(mpath):
        if not overwrite:
            raise FileExistsError(f"{mpath} exists; pass overwrite=True to rebuild the sharded index there")
        os.remove(mpath)
    return directory, mpath


def _calibration_ranges(ctx: "_BuildContext") -> Optional[np.ndarray]:
    """The ranges every shard is quantized with: given, or the global min/max from one pass over the shards."""
    plan = ctx.plan
    r = plan.ranges
    if r is None and plan.needs_ranges:
        r = _combine_ranges(ctx.run(_minmax_task, "ranges", lambda j: (
            j, ctx.sources[j], int(plan.starts[j]), plan.chunk_size, plan.threads)))
    return None if r is None else np.ascontiguousarray(r, np.float32)


def _write_shards(ctx: "_BuildContext", r: Optional[np.ndarray], progress: Progress) -> List[Dict[str, int]]:
    """Run one build task per shard (progress advanced as shards finish); their count, bytes and crc32."""
    plan = ctx.plan
    cb, bar = _progress_callback(progress, plan.n)
    done = [0]

    def advance(j: int) -> None:
        if cb is not None:
            done[0] += plan.sizes[j]
            cb(done[0], plan.n)

    def args_of(j: int) -> tuple:
        s, e = plan.rows(j)
        return (j, ctx.sources[j], ctx.paths[j], plan.kind, plan.precision, plan.dim, r,
                None if plan.ids is None else plan.ids[s:e], plan.chunk_size, plan.threads, plan.rescore_precision)

    try:
        return ctx.run(_build_shard_task, "build", args_of, on_done=advance)
    finally:
        if bar is not None:
            bar.close()


class _BuildContext:
    """What the build's task passes share: the client, the plan, shard paths,
    the preferred worker per shard, the row sources (in-memory rows are
    scattered lazily and re-scattered when lost) and the deadline."""

    def __init__(self, client: Client, plan: _BuildPlan, directory: str, deadline: Optional[float],
                 timeout: Optional[float], retries: int):
        self.client, self.plan = client, plan
        self.deadline, self.timeout, self.retries = deadline, timeout, retries
        workers = _live_workers(client)
        S = plan.n_shards
        self.place: List[Optional[str]] = list(_place(plan.sizes, workers)) if workers else [None] * S
        mm = _memmap_source(plan.x) if not plan.is_dask else None
        self.in_memory = not plan.is_dask and mm is None
        self.sources: List[Any] = [self._source(j, mm) for j in range(S)]
        self.token = uuid.uuid4().hex[:12]
        self.paths = [os.path.join(directory, f"shard-{j:05d}.qlx") for j in range(S)]

    def _source(self, j: int, mm: Optional[Tuple[str, int]]) -> Any:
        plan = self.plan
        s, e = plan.rows(j)
        if plan.is_dask:
            import dask

            (part,) = dask.optimize(plan.x[s:e])
            return _DaskRows(part)
        if mm is not None:
            dt = np.dtype(plan.x.dtype)
            return _MemmapRows(mm[0], mm[1] + s * plan.width * dt.itemsize, dt, (e - s, plan.width))
        return None  # scattered by _TaskRun (spread over the workers); the tasks then run where their rows are

    def left(self) -> Optional[float]:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def rows_held(self, j: int) -> bool:
        """In-memory rows of shard ``j`` are on a worker (scattered, not lost)."""
        return self.sources[j] is not None and self.sources[j].status == "finished"

    def run(self, fn: Callable, what: str, args_of: Callable[[int], tuple],
            on_done: Optional[Callable[[int], None]] = None) -> List[Any]:
        """``fn(*args_of(j))`` for every shard ``j``, as :class:`_TaskRun` does it."""
        return _TaskRun(self, fn, what, args_of, on_done).run()


class _TaskRun:
    """One task per shard; resubmit what a new attempt can fix; bounded by the deadline.

    Tasks are not pinned to workers: Dask never wakes a ``no-worker`` task restricted to a
    dead worker when another worker joins, even with ``allow_other_workers`` (a 1-worker
    cluster whose worker restarted hung forever). In-memory rows are scattered, and a task
    runs where its rows are."""

    def __init__(self, ctx: _BuildContext, fn: Callable, what: str, args_of: Callable[[int], tuple],
                 on_done: Optional[Callable[[int], None]]):
        self.ctx, self.fn, self.what, self.args_of, self.on_done = ctx, fn, what, args_of, on_done
        S = ctx.plan.n_shards
        self.futs: Dict[int, Any] = {}
        self.attempts = [0] * S
        self.resubmit: List[int] = list(range(S))
        self.out: List[Any] = [None] * S
        self.no_worker_since: Optional[float] = None
        self.unpinned: set = set()
        self.scatter_errors: Dict[int, BaseException] = {}

    def run(self) -> List[Any]:
        try:
            while self.resubmit or self.futs:
                rem = self.ctx.left()
                if rem is not None and rem <= 0:
                    raise self._timed_out()
                self._submit(rem)
                self._wait(rem)
                for j, f in sorted(self.futs.items()):
                    st = f.status
                    if st != "pending":
                        del self.futs[j]
                        self._settle(j, f, st)
                if not self.futs and not self.resubmit:
                    break
                self._check_workers()
        finally:
            pend = [f for f in self.futs.values() if not f.done()]
            if pend:
                self.ctx.client.cancel(pend)
        return self.out

    def _fail(self, j: int, cause: BaseException) -> ShardError:
        err = ShardError(j, self.ctx.paths[j], cause, max(self.attempts[j], 1), what=self.what)
        err.__cause__ = cause
        return err

    def _timed_out(self) -> ShardError:
        ctx = self.ctx
        pend = sorted(set(self.futs) | set(self.resubmit))
        states = _task_states(ctx.client, [self.futs[j] for j in pend if j in self.futs])
        lost = [j for j in pend if j in self.resubmit and j in self.scatter_errors]
        if lost:
            e = self.scatter_errors[lost[0]]
            states = ", ".join(filter(None, [states, f"shard(s) {lost[:8]} could not scatter their rows "
                                                     f"({type(e).__name__}: {e})"]))
        return self._fail(pend[0], TimeoutError(
            f"build_sharded did not finish within timeout={ctx.timeout:g} s: shard(s) {pend[:8]} of "
            f"{ctx.plan.n_shards} unfinished ({states or 'waiting to be resubmitted'}); pass a larger timeout= "
            "(or None) for a larger build"))

    def _submit(self, rem: Optional[float]) -> None:
        ctx = self.ctx
        for j in list(self.resubmit):
            if ctx.in_memory and not ctx.rows_held(j):
                # first time, or the rows were lost with their worker: the client still has them
                if not self._scatter(j, rem):
                    return  # try again on the next turn
            self.attempts[j] += 1
            self.futs[j] = ctx.client.submit(self.fn, *self.args_of(j),
                                             key=f"quantlib-{self.what}-{ctx.token}-{j}-{self.attempts[j]}",
                                             pure=False)
            self.resubmit.remove(j)

    def _scatter(self, j: int, rem: Optional[float]) -> bool:
        """Scatter shard j's rows (to its planned worker the first time); False: no worker can take them now."""
        ctx = self.ctx
        live = _live_workers(ctx.client)
        if not live:
            return False  # no worker to receive them yet
        to = [ctx.place[j]] if ctx.sources[j] is None and j not in self.unpinned and ctx.place[j] in live else None
        s, e = ctx.plan.rows(j)
        try:
            ctx.sources[j] = ctx.client.scatter(np.ascontiguousarray(ctx.plan.x[s:e]), workers=to, hash=False,
                                                timeout=max(0.1, min(2.0, rem if rem is not None else 2.0)))
        except (TimeoutError, OSError, KeyError) as exc:  # no worker yet (TimeoutError), or
            # the chosen worker died meanwhile (KeyError from the scheduler, CommClosedError):
            # try again on the next turn, unpinned; the deadline bounds the retries
            self.scatter_errors[j] = exc
            self.unpinned.add(j)
            return False
        return True

    def _wait(self, rem: Optional[float]) -> None:
        if self.futs:
            try:
                _dd.wait(list(self.futs.values()), timeout=max(0.05, min(1.0, rem if rem is not None else 1.0)),
                         return_when="FIRST_COMPLETED")
            except (TimeoutError, _CancelledError):  # cancelled/lost tasks are handled by _settle
                pass
        else:
            time.sleep(0.2)

    def _settle(self, j: int, f: Any, st: str) -> None:
        """A task that is no longer pending: keep its result, or raise, or queue it for resubmission."""
        if st == "finished":
            try:
                self.out[j] = f.result()
            except _CancelledError:  # its result was lost with its worker before we fetched it
                st = "lost"
            else:
                if self.on_done is not None:
                    self.on_done(j)
                return
        exc: Optional[BaseException] = None
        if st == "error":
            try:
                exc = f.exception()
            except BaseException as e:  # pragma: no cover
                exc = e
        if exc is not None and _deterministic(exc):
            raise exc
        if isinstance(exc, _dd.KilledWorker):
            deaths = getattr(exc, "allowed_failures", None)
            raise self._fail(j, RuntimeError(
                f"the task's worker died {'' if deaths is None else f'{deaths + 1} time(s) '}while "
                f"running it, so Dask gave up on it ({type(exc).__name__}; see Dask's "
                "distributed.scheduler.allowed-failures): the task probably kills its worker (out of "
                "memory? a crash in native code?)"))
        if exc is None:  # cancelled / lost: say why
            if self.ctx.in_memory and not self.ctx.rows_held(j):
                exc = RuntimeError(f"its in-memory rows, scattered to a worker, were lost when that "
                                   f"worker died (task {st})")
            else:
                exc = RuntimeError(f"the task was {st} by the cluster (its worker died, or the "
                                   "scheduler or another client cancelled it)")
        if self.attempts[j] > self.ctx.retries:
            raise self._fail(j, exc)
        self.resubmit.append(j)

    def _check_workers(self) -> None:
        """Fail when the cluster has had no worker at all for ``_NO_WORKER_GRACE`` seconds."""
        if _live_workers(self.ctx.client):
            self.no_worker_since = None
            return
        now = time.monotonic()
        self.no_worker_since = self.no_worker_since or now
        if now - self.no_worker_since > _NO_WORKER_GRACE:
            pend = sorted(set(self.futs) | set(self.resubmit))
            raise self._fail(pend[0], RuntimeError(
                f"the Dask cluster has had no workers for {_NO_WORKER_GRACE:g} s (all workers died and "
                f"none came back); shard(s) {pend[:8]} unfinished"))


def _task_states(client: Client, futs: Sequence[Any]) -> str:
    """'shard-key: state' of the given futures on the scheduler (best effort, for error messages)."""
    if not futs:
        return ""
    keys = [f.key for f in futs]
    try:
        st = client.run_on_scheduler(
            lambda dask_scheduler, keys=keys: {k: (dask_scheduler.tasks[k].state if k in dask_scheduler.tasks
                                                   else "forgotten") for k in keys})
    except Exception:  # pragma: no cover - the scheduler is gone too
        return "scheduler unreachable"
    by_state: Dict[str, int] = {}
    for v in st.values():
        by_state[v] = by_state.get(v, 0) + 1
    hint = {"no-worker": " (no worker can run them)", "processing": " (running)", "queued": " (queued)"}
    return ", ".join(f"{c} {k}{hint.get(k, '')}" for k, c in sorted(by_state.items()))
