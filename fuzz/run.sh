#!/usr/bin/env bash
# fuzz/run.sh SECONDS [--asan] -- run every fuzz target (fuzz/fuzz_*.py) for
# SECONDS each, starting from its seed corpus (fuzz/corpus_<name>/).
#
#   fuzz/run.sh 60          # CI: one minute per target
#   fuzz/run.sh 3600        # a longer local campaign
#   fuzz/run.sh 60 --asan   # against the ASan+UBSan build made by
#                           # tools/sanitize.sh (in $QL_ASAN_DIR, default
#                           # /tmp/quantlib-asan); run that script first.
#                           # Coverage-blind (see below): replays and mutates
#                           # $QL_FUZZ_CORPUS (default: the work corpus)
#
# The seed corpus in the repo is never modified: new inputs go to a work
# directory ($QL_FUZZ_WORK, default /tmp/quantlib-fuzz/<target>), crashes /
# timeouts to $QL_FUZZ_WORK/<target>/artifacts/.  Exit status: 0 when every
# target ran clean, 1 if any produced a finding.  Needs `pip install atheris`.
# Extra libFuzzer flags can be passed in QL_FUZZ_FLAGS (e.g. "-jobs=2").
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
SECONDS_PER_TARGET="${1:-60}"
ASAN=0
[[ "${2:-}" == "--asan" ]] && ASAN=1
WORK="${QL_FUZZ_WORK:-/tmp/quantlib-fuzz}"
PY="${PYTHON:-python}"

"$PY" -c "import atheris" 2>/dev/null || { echo "fuzz/run.sh: pip install atheris" >&2; exit 2; }

ENVV=()
if [[ $ASAN == 1 ]]; then
    ASAN_DIR="${QL_ASAN_DIR:-/tmp/quantlib-asan}"
    ls "$ASAN_DIR"/quantlib/_core*.so >/dev/null 2>&1 \
        || { echo "fuzz/run.sh: no ASan build in $ASAN_DIR; run tools/sanitize.sh first" >&2; exit 2; }
    ENVV=(QUANTLIB_ROOT="$ASAN_DIR" LD_PRELOAD="$(${CC:-gcc} -print-file-name=libasan.so) $(${CC:-gcc} -print-file-name=libstdc++.so)"
          ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
          UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
else
    ENVV=(QUANTLIB_ROOT="$ROOT")
fi

status=0
for target in "$HERE"/fuzz_*.py; do
    name="$(basename "$target" .py)"; name="${name#fuzz_}"
    seeds="$HERE/corpus_$name"
    wdir="$WORK/$name"
    mkdir -p "$wdir/corpus" "$wdir/artifacts"
    [[ -d "$seeds" ]] && cp -n "$seeds"/* "$wdir/corpus/" 2>/dev/null || true
    log="$wdir/fuzz.log"
    echo "== fuzzing $name for ${SECONDS_PER_TARGET}s (log $log)"
    set +e
    if [[ $ASAN == 1 ]]; then
        # gcc's libasan takes over libFuzzer's coverage hooks (atheris warns
        # "Coverage symbols are being provided by a library other than
        # libFuzzer"), so coverage guidance is gone: replay + mutate the corpus
        # grown by a normal run ($QL_FUZZ_CORPUS, default the seeds) instead.
        src="${QL_FUZZ_CORPUS:-$wdir/corpus}"
        env "${ENVV[@]}" QL_FUZZ_ARTIFACTS="$wdir/artifacts" timeout -s KILL $((SECONDS_PER_TARGET + 600)) \
            "$PY" "$target" --random "$SECONDS_PER_TARGET" "$src" > "$log" 2>&1
    else
        env "${ENVV[@]}" QL_FUZZ_ARTIFACTS="$wdir/artifacts" "$PY" "$target" "$wdir/corpus" \
            -max_total_time="$SECONDS_PER_TARGET" -timeout=30 -rss_limit_mb=6144 \
            -artifact_prefix="$wdir/artifacts/" -print_final_stats=1 ${QL_FUZZ_FLAGS:-} \
            > "$log" 2>&1
    fi
    rc=$?
    set -e
    runs="$(grep -Eo 'Done [0-9]+ runs' "$log" | tail -1 || true)"
    runs="${runs:-$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | tail -1)}"
    if [[ $rc -ne 0 ]]; then
        status=1
        echo "!! $name: FINDING (exit $rc), artifacts in $wdir/artifacts:"
        ls -l "$wdir/artifacts"
        grep -vE '^INFO: Instrumenting' "$log" | tail -40
    else
        echo "   $name: clean, ${runs:-?}"
    fi
done
exit $status
