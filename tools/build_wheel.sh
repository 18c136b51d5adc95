#!/usr/bin/env bash
# Build the sdist and a manylinux wheel in one command:
#   tools/build_wheel.sh            -> dist/quantlib-X.tar.gz, dist/quantlib-X-cp311-...-manylinux_*.whl
#
# 1. `python -m build` (isolated build env: setuptools + Cython from PyPI) makes the sdist,
#    then builds the wheel FROM that sdist (so a missing file in MANIFEST.in breaks here).
# 2. The sdist is checked to contain everything needed to build.
# 3. `auditwheel repair` retags the linux_x86_64 wheel as manylinux. No docker engine runs on
#    this machine, so the wheel is built on the host (Debian 12, glibc 2.36, gcc 12); auditwheel
#    reads the highest glibc symbol version the extension needs and picks the oldest manylinux
#    policy that allows it (the extension needs only libc, so no library is grafted in).
set -euo pipefail
# shellcheck source=tools/_common.sh
source "$(dirname "$0")/_common.sh"
cd "$REPO"

tools_venv
rm -rf dist build/wheelhouse
mkdir -p dist

say "python -m build (sdist, then wheel from the sdist)"
"$TOOLS_VENV/bin/python" -m build --outdir dist/raw . >/tmp/ql-build.log 2>&1 \
    || { tail -n 40 /tmp/ql-build.log; die "python -m build failed (log: /tmp/ql-build.log)"; }
ok "build log: /tmp/ql-build.log"

SDIST="$(ls dist/raw/quantlib_embed-*.tar.gz)"
RAW_WHEEL="$(ls dist/raw/quantlib_embed-*.whl)"

say "sdist contents: $(basename "$SDIST")"
listing="$(tar -tzf "$SDIST")"
top="$(printf '%s\n' "$listing" | head -n1 | cut -d/ -f1)"
need=(setup.py pyproject.toml README.md LICENSE CHANGELOG.md MANIFEST.in quantlib/_core.pyx quantlib/__init__.py
      quantlib/py.typed csrc/quantlib.h csrc/ql_internal.h)
for f in csrc/*.c csrc/*.h csrc/*/*.c csrc/*/*.h csrc/*/*.inc build_levels.py; do need+=("$f"); done
for f in "${need[@]}"; do
    printf '%s\n' "$listing" | grep -qx "$top/$f" || die "sdist lacks $f"
done
ok "sdist has setup.py, pyproject.toml, README.md, quantlib/_core.pyx and all $(ls csrc/*.c csrc/*.h csrc/*/*.c csrc/*/*.h csrc/*/*.inc | wc -l) csrc/ sources"
# the generated C file must not be shipped stale: the sdist rebuilds it with Cython
if printf '%s\n' "$listing" | grep -qx "$top/quantlib/_core.c"; then
    printf '  note: sdist ships quantlib/_core.c (generated)\n'
fi

say "tidy the extension: drop debug info (Python's CFLAGS carry -g) and the build Python's RUNPATH"
"$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check wheel 2> >(grep -v "is ignored: it is neither a file" >&2)
work="$(mktemp -d /tmp/ql-wheel-tidy.XXXXXX)"
"$TOOLS_VENV/bin/python" -m wheel unpack --dest "$work" "$RAW_WHEEL" >/dev/null
for so in "$work"/*/quantlib/_core*.so; do
    before=$(stat -c %s "$so")
    strip --strip-debug "$so"
    patchelf --remove-rpath "$so"
    ok "$(basename "$so"): $before -> $(stat -c %s "$so") bytes, RUNPATH: $(readelf -d "$so" | grep -c RUNPATH || true)"
done
if compgen -G "$work/*/quantlib/_core.c" >/dev/null; then die "wheel ships the generated quantlib/_core.c"; fi
rm -f "$RAW_WHEEL"
"$TOOLS_VENV/bin/python" -m wheel pack --dest-dir dist/raw "$work"/quantlib_embed-* >/dev/null
rm -rf "$work"
RAW_WHEEL="$(ls dist/raw/quantlib_embed-*.whl)"

say "auditwheel repair $(basename "$RAW_WHEEL")"
"$TOOLS_VENV/bin/auditwheel" show "$RAW_WHEEL" | sed 's/^/  | /'
"$TOOLS_VENV/bin/auditwheel" repair --wheel-dir dist "$RAW_WHEEL" 2>&1 | sed 's/^/  | /'
mv "$SDIST" dist/
rm -rf dist/raw
WHEEL="$(find_wheel)"

say "result"
ls -l dist | sed 's/^/  /'
"$TOOLS_VENV/bin/auditwheel" show "$WHEEL" | sed 's/^/  | /'
printf '  wheel : %s (%s bytes)\n' "$(basename "$WHEEL")" "$(stat -c %s "$WHEEL")"
printf '  sdist : %s (%s bytes)\n' "$(basename "$(find_sdist)")" "$(stat -c %s "$(find_sdist)")"
printf '  host  : %s, %s\n' "$(. /etc/os-release; echo "$PRETTY_NAME")" "$(ldd --version | head -n1)"
