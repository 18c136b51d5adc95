"""Thread policy: the C kernels are single-threaded and reentrant, Python
drives a shared pool of worker threads over GIL-free kernel calls."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["usable_cores", "resolve_threads", "split_range", "run_parallel", "set_num_threads", "get_num_threads"]

_POOL: Optional[ThreadPoolExecutor] = None
_POOL_LOCK = threading.Lock()
ENV_THREADS = "QUANTLIB_NUM_THREADS"
_DEFAULT_THREADS: Optional[int] = None  # set_num_threads(); None = every usable core


def usable_cores() -> int:
    """Number of cores this process may run on (CPU affinity aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _check_count(threads, name: str) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) and not hasattr(threads, "__index__"):
        raise TypeError(f"{name} must be an int or None, got {type(threads).__name__}")
    t = int(threads.__index__()) if not isinstance(threads, int) else threads
    if t < 1:
        raise ValueError(f"{name} must be >= 1 or None, got {t}")
    return t


def set_num_threads(threads: Optional[int]) -> None:
    """Set the process-wide default for every ``threads=None`` argument.

    ``None`` restores the default: every usable core (or ``QUANTLIB_NUM_THREADS``
    when that environment variable is set). Under a pre-forking server with N
    workers, ``set_num_threads(1)`` (or ``QUANTLIB_NUM_THREADS=1``) keeps each
    request on its worker's core. An explicit ``threads=`` argument still wins.
    Every kernel, the float32 search included, runs on quantlib's own threads.
    """
    global _DEFAULT_THREADS
    _DEFAULT_THREADS = None if threads is None else _check_count(threads, "threads")


def get_num_threads() -> int:
    """The thread count a ``threads=None`` argument means right now."""
    return resolve_threads(None)


def _env_threads() -> Optional[int]:
    raw = os.environ.get(ENV_THREADS, "").strip()
    if not raw:
        return None
    try:
        t = int(raw)
    except ValueError:
        t = 0
    if t < 1:
        raise ValueError(f"{ENV_THREADS} must be a positive integer, got {raw!r}")
    return t


def resolve_threads(threads: Optional[int], name: str = "threads") -> int:
    """Validate a ``threads`` argument: None means the process default
    (:func:`set_num_threads`, else ``QUANTLIB_NUM_THREADS``, else every usable core)."""
    if threads is None:
        if _DEFAULT_THREADS is not None:
            return _DEFAULT_THREADS
        env = _env_threads()
        return env if env is not None else usable_cores()
    return _check_count(threads, name)


def split_range(n: int, parts: int, align: int = 1) -> List[Tuple[int, int]]:
    """Split [0, n) into at most ``parts`` contiguous chunks (starts aligned)."""
    if n <= 0:
        return []
    parts = max(1, min(parts, (n + align - 1) // align))
    step = -(-n // parts)
    step = -(-step // align) * align
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def _reset_after_fork() -> None:
    """In a forked child the pool object survives but its threads do not:
    forget it (and the lock, which a parent thread may have held at fork
    time), so the child's first threaded call starts a fresh pool instead of
    waiting forever for workers that do not exist."""
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_reset_after_fork)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=max(8, usable_cores()),
                                           thread_name_prefix="quantlib")
    return _POOL


def run_parallel(fn: Callable[[int, int], object], chunks: Sequence[Tuple[int, int]]) -> list:
    """Run ``fn(start, stop)`` for every chunk; the first runs on the calling
    thread, the rest on the shared pool (leaf work only: ``fn`` must not call
    run_parallel itself).  Returns the results in chunk order."""
    if len(chunks) <= 1:
        return [fn(*c) for c in chunks]
    futures = [_pool().submit(fn, *c) for c in chunks[1:]]
    first_exc = None
    results = []
    try:
        results.append(fn(*chunks[0]))
    except BaseException as exc:  # wait for the others before re-raising
        first_exc = exc
    for f in futures:
        try:
            results.append(f.result())
        except BaseException as exc:
            if first_exc is None:
                first_exc = exc
    if first_exc is not None:
        raise first_exc
    return results
