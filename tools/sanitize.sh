#!/usr/bin/env bash
# tools/sanitize.sh -- build quantlib with AddressSanitizer + UBSan in a
# separate copy of the tree and run the test suite under it.
#
#   tools/sanitize.sh [--quick] [--keep] [-- PYTEST_ARGS...]
#
#   --quick   CI subset: skip @pytest.mark.slow tests and run test_kernels.py
#             on the baseline + best ISA only (see QUICK_ARGS below).
#   --keep    do not delete the copy afterwards (the copy is always kept; its build/ is
#             reused for incremental rebuilds; QL_ASAN_CLEAN=1 wipes it first).
#   QL_ASAN_DIR  where the copy lives (default /tmp/quantlib-asan).
#
# The normal build in the source tree is never touched: the sources are
# copied (without build/, *.so, the generated _core.c) to QL_ASAN_DIR and
# built there with QUANTLIB_SANITIZE=1 (setup.py adds
# -fsanitize=address,undefined -fno-sanitize-recover=undefined).
# Python itself is not instrumented, so gcc's libasan is LD_PRELOADed and
# leak detection is off (CPython keeps objects alive until exit by design).
# Any ASan/UBSan report aborts the process, so "0 findings" == exit status 0
# and no "runtime error:" / "ERROR: AddressSanitizer" line in the log.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DST="${QL_ASAN_DIR:-/tmp/quantlib-asan}"
QUICK=0
PYTEST_EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --keep) shift ;;
        --) shift; PYTEST_EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "sanitize.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

PY="${PYTHON:-python}"
CC_BIN="${CC:-gcc}"
LIBASAN="$("$CC_BIN" -print-file-name=libasan.so)"
# libstdc++ is preloaded too: otherwise ASan's __cxa_throw interceptor finds no
# real __cxa_throw (libstdc++ is loaded later, by torch) and the first C++
# exception thrown by torch aborts the process (CHECK failed in CheckUnwind).
LIBSTDCXX="$("$CC_BIN" -print-file-name=libstdc++.so)"
if [[ ! -e "$LIBASAN" ]]; then
    echo "sanitize.sh: $CC_BIN has no libasan.so ($LIBASAN); install libasan (gcc) first" >&2
    exit 2
fi

start=$(date +%s)
[[ "${QL_ASAN_CLEAN:-0}" == 1 ]] && rm -rf "$DST"
mkdir -p "$DST"
# copy the tree (no rsync dependency); keep DST/build for incremental rebuilds
# (the generated _core.c and the built .so are kept aside, so an unchanged
# tree is not recompiled: the copy keeps the sources' mtimes)
KEEP="$DST.keep"
rm -rf "$KEEP"; mkdir -p "$KEEP"
cp -p "$DST"/quantlib/_core.c "$DST"/quantlib/_core*.so "$KEEP"/ 2>/dev/null || true
find "$DST" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
tar -C "$SRC" -cf - \
    --exclude ./.git --exclude ./build --exclude '*.so' --exclude ./quantlib/_core.c \
    --exclude .pytest_cache --exclude .hypothesis --exclude __pycache__ \
    --exclude '*.egg-info' . | tar -C "$DST" -xf -
cp -p "$KEEP"/* "$DST"/quantlib/ 2>/dev/null || true
rm -rf "$KEEP"

echo "== sanitizer build in $DST"
(cd "$DST" && CC="$CC_BIN" QUANTLIB_SANITIZE=1 "$PY" setup.py build_ext --inplace -q) \
    > "$DST/build.log" 2>&1 || { cat "$DST/build.log"; exit 1; }
syms="$(nm -D "$DST"/quantlib/_core*.so)"
grep -q __asan_init <<<"$syms" || { echo "sanitize.sh: the extension is not instrumented" >&2; exit 1; }
# the tests must import the instrumented copy, not an installed quantlib
# (e.g. a `pip install -e .` of the source tree): check before running them
got="$(cd "$DST" && LD_PRELOAD="$LIBASAN $LIBSTDCXX" ASAN_OPTIONS=detect_leaks=0 \
      "$PY" -c 'import quantlib._core as c; print(c.__file__)')"
[[ "$got" == "$DST"/* ]] || { echo "sanitize.sh: tests would import $got, not the ASan build in $DST" >&2; exit 1; }
built=$(date +%s)

ARGS=(-q -p no:cacheprovider)
if [[ $QUICK == 1 ]]; then
    # CI subset: every test file, slow tests skipped
    ARGS+=(-m "not slow")
fi
ARGS+=("${PYTEST_EXTRA[@]}")

LOG="$DST/pytest.log"
echo "== pytest under ASan+UBSan (log: $LOG)"
set +e
(cd "$DST" && \
    LD_PRELOAD="$LIBASAN $LIBSTDCXX" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    PYTHONFAULTHANDLER=1 \
    QUANTLIB_SANITIZED=1 \
    "$PY" -m pytest "${ARGS[@]}" 2>&1) | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
end=$(date +%s)

findings=$(grep -cE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$LOG" || true)
echo "== sanitize.sh: pytest exit $rc, sanitizer findings: $findings," \
     "build $((built - start)) s, tests $((end - built)) s"
if [[ $rc -ne 0 || $findings -ne 0 ]]; then
    exit 1
fi
