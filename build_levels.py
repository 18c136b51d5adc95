"""The compiler flags of every ISA level: the ONE table setup.py builds from.

Each level of csrc/levels.h that needs its own target flags has a row here:
the architectures it is built on and the flags its objects (every
csrc/<family>/<level>.c that exists) are compiled with.  Every ``-m<feature>``
flag must name a feature the level's run-time check requires
(QL_LEVELS / QL_REQ_* in csrc/levels.h): tests/test_isa_registry.py checks
this against the compiled dispatcher.  The scalar level is the baseline
(setup.py's common flags) and has no row.
"""
from __future__ import annotations

X86_64 = ("x86_64", "amd64")
AARCH64 = ("aarch64", "arm64")

_AVX2 = ["-mavx2", "-mfma", "-mbmi2", "-mpopcnt", "-mavx"]

LEVELS: dict[str, dict] = {
    "avx2": {"arch": X86_64, "flags": _AVX2},
    "avx512_icl": {"arch": X86_64, "flags": _AVX2 + [
        "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
        "-mavx512vpopcntdq", "-mavx512vnni", "-mavx512bitalg",
    ]},
    "neon": {"arch": AARCH64, "flags": []},  # AdvSIMD is architectural on AArch64
}

FAMILIES = ("quantize", "hamming", "dot8", "rescore", "f32")


def macro(level: str) -> str:
    """The macro telling csrc/levels.h the level is compiled in."""
    return f"QL_HAVE_{level.upper()}"
