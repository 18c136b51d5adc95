"""Build script for quantlib's compiled core.

The Cython module ``quantlib._core`` links the baseline C files (dispatch,
top-k, csrc/<family>/scalar.c) and, per SIMD level of build_levels.py, one
object per csrc/<family>/<level>.c that exists, each compiled with the flags
of its own target only.  The dispatcher picks a level at import time
from CPUID and XCR0, so one build runs on every CPU of the architecture.

Environment variables (build time):
  QUANTLIB_MARCH_NATIVE=1  add -march=native to every object (not portable;
                           for local experiments only)
  QUANTLIB_SANITIZE=1      build with AddressSanitizer + UBSan
  QUANTLIB_DEBUG=1         -O0 -g (and keep the debug info, which is stripped otherwise)
"""
from __future__ import annotations

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = "csrc"
machine = platform.machine().lower()
IS_X86_64 = machine in ("x86_64", "amd64")
IS_AARCH64 = machine in ("aarch64", "arm64")
IS_MSVC = sys.platform == "win32"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_levels import FAMILIES, LEVELS, macro  # noqa: E402  (the one flags table)

SCALAR_SOURCES = [f"{CSRC}/{fam}/scalar.c" for fam in FAMILIES]
HEADERS = [f"{CSRC}/{h}" for h in ("quantlib.h", "levels.h", "ql_internal.h", "drivers/scan.inc",
                                   "drivers/rescore.inc", "drivers/quantize.inc", "drivers/f32.inc",
                                   "drivers/avx512_icl.h")]

# (source, extra flags, macro telling levels.h the level is compiled in)
ISA_OBJECTS: list[tuple[str, list[str], str]] = []
if not IS_MSVC:
    for _level, _row in LEVELS.items():
        if machine not in _row["arch"]:
            continue
        for _fam in FAMILIES:
            _src = f"{CSRC}/{_fam}/{_level}.c"
            if os.path.exists(_src):
                ISA_OBJECTS.append((_src, list(_row["flags"]), macro(_level)))


def _common_flags() -> list[str]:
    if IS_MSVC:
        return ["/O2", "/fp:precise"]
    flags = ["-std=c11", "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden",
             "-Wall", "-Wno-unused-function"]
    if os.environ.get("QUANTLIB_DEBUG"):
        flags += ["-O0", "-g"]
    else:
        flags += ["-O3"]
    if os.environ.get("QUANTLIB_SANITIZE"):
        flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined", "-g"]
    if os.environ.get("QUANTLIB_MARCH_NATIVE"):
        flags += ["-march=native"]
    elif IS_X86_64:
        flags += ["-march=x86-64", "-mtune=generic"]  # baseline pinned: no POPCNT/AVX
    return flags


def _link_flags() -> list[str]:
    if os.environ.get("QUANTLIB_SANITIZE") and not IS_MSVC:
        return ["-fsanitize=address,undefined"]
    if os.environ.get("QUANTLIB_DEBUG") or IS_MSVC or sys.platform == "darwin":
        return []
    # Python's own CFLAGS carry -g: drop the debug info at link time (3.0 MB -> ~0.4 MB); symbols stay
    return ["-Wl,--strip-debug"]


class BuildExt(build_ext):
    """Compile each ISA file with its own target flags, then link them in."""

    def build_extension(self, ext: Extension) -> None:
        if ext.name == "quantlib._core" and ISA_OBJECTS:
            objects = []
            for src, flags, macro in ISA_OBJECTS:
                objects += self.compiler.compile(
                    [src],
                    output_dir=self.build_temp,
                    include_dirs=[CSRC],
                    extra_postargs=_common_flags() + flags,
                    depends=HEADERS,
                )
            ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


def _extensions() -> list[Extension]:
    from Cython.Build import cythonize

    macros = sorted({(m, "1") for _, _, m in ISA_OBJECTS})
    ext = Extension(
        "quantlib._core",
        sources=["quantlib/_core.pyx", f"{CSRC}/dispatch.c", f"{CSRC}/topk.c"] + SCALAR_SOURCES,
        include_dirs=[CSRC],
        define_macros=macros,
        extra_compile_args=_common_flags(),
        extra_link_args=_link_flags(),
        # the ISA objects are linked in as extra objects: list their sources so
        # a change to any of them relinks the extension
        depends=HEADERS + [src for src, _, _ in ISA_OBJECTS],
    )
    return cythonize([ext], language_level=3, compiler_directives={"embedsignature": True})


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
