#!/usr/bin/env bash
# Install what tools/build_wheel.sh put in dist/ into fresh venvs and run the test suite:
#   1. the manylinux wheel          (venv /tmp/ql-venv-wheel)
#   2. the sdist, built by pip      (venv /tmp/ql-venv-sdist)
# and show the extension does not depend on the numpy C API (so one wheel serves numpy 1.x and 2.x;
# tools/numpy_matrix.sh then runs the tests under both).
#
# Tests run from a copy of tests/ under /tmp, so `import quantlib` is the installed package.
# Test deps: pytest + hypothesis. With QL_FULL_TESTS=1 the wheel venv also gets the [test] extras
# (torch==2.13.0 first, sentence-transformers, faiss, usearch) so the parity tests run instead of skipping.
# QL_VERIFY_WHEEL=0 skips the wheel venv (ci_extra.sh does: numpy_matrix.sh tests the wheel twice already).
set -euo pipefail
# shellcheck source=tools/_common.sh
source "$(dirname "$0")/_common.sh"

WHEEL="$(find_wheel)"
SDIST="$(find_sdist)"
TESTDIR=/tmp/ql-verify-tests
copy_tests "$TESTDIR"
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file" >&2); }

run_suite() {  # run_suite VENV LABEL
    local venv="$1" label="$2"
    (cd "$TESTDIR" && "$venv/bin/python" -c \
        "import quantlib, os; print('  quantlib from', os.path.dirname(quantlib.__file__)); quantlib.show_config()" \
        | sed 's/^/  /')
    (cd "$TESTDIR" && "$venv/bin/python" -c "import quantlib, sys; sys.exit('site-packages' not in quantlib.__file__)") \
        || die "$label: quantlib was not imported from site-packages"
    (cd "$TESTDIR" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests) | tail -n 1 | sed 's/^/  /'
    ok "$label: test suite passed"
}

say "numpy C API check on the extension in $(basename "$WHEEL")"
x="$(mktemp -d /tmp/ql-verify-whl.XXXXXX)"
"$PY" -m zipfile -e "$WHEEL" "$x"
so="$(ls "$x"/quantlib/_core*.so)"
needed="$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
[ "$needed" = "libc.so.6 " ] || die "unexpected NEEDED libraries: $needed"
ok "ldd/readelf: NEEDED = $needed(no libpython, no numpy library)"
if nm -D "$so" | grep -Eiq 'PyArray|_import_array|numpy'; then die "extension references numpy symbols"; fi
if strings "$so" | grep -Eiq 'numpy\.core\.multiarray|_ARRAY_API|numpy\._core'; then die "extension imports the numpy C API"; fi
ok "nm/strings: no PyArray_*, _ARRAY_API or numpy.core.multiarray: typed memoryviews only (buffer protocol)"
rm -rf "$x"

if [ "${QL_VERIFY_WHEEL:-1}" = 1 ]; then
    say "wheel -> fresh venv /tmp/ql-venv-wheel"
    fresh_venv /tmp/ql-venv-wheel
    if [ "${QL_FULL_TESTS:-0}" = 1 ]; then
        quiet /tmp/ql-venv-wheel/bin/pip install -q torch==2.13.0
        quiet /tmp/ql-venv-wheel/bin/pip install -q "${WHEEL}[test]"
    else
        quiet /tmp/ql-venv-wheel/bin/pip install -q "$WHEEL" pytest hypothesis
    fi
    run_suite /tmp/ql-venv-wheel wheel
fi

say "sdist -> fresh venv /tmp/ql-venv-sdist (pip builds it: isolated env, Cython from PyPI)"
fresh_venv /tmp/ql-venv-sdist
quiet /tmp/ql-venv-sdist/bin/pip install -q --no-binary quantlib-embed "$SDIST" pytest hypothesis
run_suite /tmp/ql-venv-sdist sdist
