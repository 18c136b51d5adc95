"""Kernel-level selection and build/CPU introspection."""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict

from . import _core
from ._threads import usable_cores

__all__ = ["show_config", "set_isa", "get_isa", "available_isas"]

ENV_VAR = "QUANTLIB_ISA"


def _apply_env() -> None:
    """Honour QUANTLIB_ISA at import: an unusable level is an error, never SIGILL."""
    want = os.environ.get(ENV_VAR, "").strip().lower()
    if want and want != "best":
        try:
            _core.set_isa(want)
        except ValueError as exc:
            raise ImportError(f"{ENV_VAR}={want!r}: {exc}") from None


class _Levels(list):
    """A list of canonical level names whose ``in`` also accepts the aliases
    the dispatcher does (``"avx512" in available_isas()`` is True where
    ``"avx512_icl"`` is usable).  Iteration yields each level once."""

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            canon = _core.resolve_isa(name.strip().lower())
            if canon is not None:
                name = canon
        return list.__contains__(self, name)


def set_isa(name: str = "best") -> str:
    """Force a kernel level for this process ("scalar", "avx2", "avx512_icl"
    -- also accepted as "avx512" --, "neon" or "best"); returns the active level.

    Meant for tests and benchmarks. Raises ``ValueError`` if the level is
    unknown, not compiled in, or not supported by this CPU and OS. Do not
    switch levels while other threads are running kernels.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    return _core.set_isa(name.strip().lower())


def get_isa() -> str:
    """The active kernel level."""
    return _core.active_isa()


def available_isas() -> list:
    """Levels compiled in and usable on this CPU and OS, baseline first."""
    return _Levels(_core.usable_isas())


def kernel_levels() -> Dict[str, str]:
    """Per kernel family, the level whose code serves it in the active table
    (a level that leaves a family out is served by its fallback level);
    "a+b" if the family's kernels come from several levels."""
    fam: Dict[str, list] = {}
    for family, level in _core.kernel_levels().values():
        lv = fam.setdefault(family, [])
        if level not in lv:
            lv.append(level)
    return {f: "+".join(lv) for f, lv in fam.items()}


def show_config(print_out: bool = True) -> Dict[str, Any]:
    """Report the build, the CPU features and the active kernel level.

    Parameters
    ----------
    print_out : bool
        Print a human-readable summary (default) as well as returning it.

    Returns
    -------
    dict
        ``version``, ``python``, ``platform``, ``cpu_features``,
        ``compiled_isas``, ``usable_isas``, ``active_isa``, ``kernel_levels``
        (per kernel family, the level that actually serves it), ``env_isa``,
        ``threads`` (usable cores) and ``numpy``.
    """
    import numpy as np

    from . import __version__

    cfg = {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "numpy": np.__version__,
        "cpu_features": _core.cpu_features(),
        "compiled_isas": _core.compiled_isas(),
        "usable_isas": _core.usable_isas(),
        "active_isa": _core.active_isa(),
        "kernel_levels": kernel_levels(),
        "env_isa": os.environ.get(ENV_VAR) or None,
        "threads": usable_cores(),
    }
    if print_out:
        w = max(len(k) for k in cfg)
        for k, v in cfg.items():
            if isinstance(v, list):
                v = " ".join(v) if v else "-"
            elif isinstance(v, dict):
                v = " ".join(f"{a}={b}" for a, b in v.items()) if v else "-"
            print(f"{k:<{w}} : {v}")
    return cfg
