#!/usr/bin/env bash
# Run the kernel tests of the ONE built wheel under the oldest numpy quantlib declares (1.26.*) and the
# newest numpy 2.x on PyPI, each in its own venv (/tmp/ql-np-1, /tmp/ql-np-2).
# The extension uses no numpy C API (typed memoryviews / buffer protocol; tools/verify_dist.sh checks
# nm/readelf), so the same wheel -- built in an isolated env with no numpy at all -- serves both.
# Tests that need sentence-transformers are excluded / skip: only numpy, pytest, hypothesis are installed.
#   QL_NP_TESTS="tests/test_kernels.py"  (default: every tests/test_*.py, with -m "not slow" off)
set -euo pipefail
# shellcheck source=tools/_common.sh
source "$(dirname "$0")/_common.sh"
T0=$SECONDS
compgen -G "$REPO/dist/quantlib_embed-*manylinux*.whl" >/dev/null || "$REPO/tools/build_wheel.sh"
WHEEL="$(find_wheel)"
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file" >&2); }
WORK=/tmp/ql-np-work
copy_tests "$WORK"
cd "$WORK"
TESTS="${QL_NP_TESTS:-tests}"

RESULTS=()
for spec in "numpy==1.26.*" "numpy>=2"; do
    v="/tmp/ql-np-$( [ "$spec" = "numpy>=2" ] && echo 2 || echo 1 )"
    say "venv $v: $spec + $(basename "$WHEEL")"
    if [ ! -x "$v/bin/python" ] || ! "$v/bin/python" -c "import pytest, hypothesis" 2>/dev/null; then
        rm -rf "$v"; "$PY" -m venv "$v"
    fi
    # --upgrade so "newest 2.x" is re-resolved on every run
    quiet "$v/bin/pip" install -q --disable-pip-version-check --upgrade "$spec" pytest hypothesis
    quiet "$v/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
    npv="$("$v/bin/python" -c 'import numpy; print(numpy.__version__)')"
    ok "numpy $npv, quantlib active ISA $("$v/bin/python" -c 'import quantlib; print(quantlib.get_isa())')"
    # a module that imports sentence_transformers/torch at top level is not collected here
    mapfile -t ignore < <(st_ignores "$WORK")
    [ ${#ignore[@]} -eq 0 ] || printf '  not collected (import sentence-transformers/torch): %s\n' "${ignore[*]}"
    res="$("$v/bin/python" -m pytest -q -p no:cacheprovider ${ignore[@]+"${ignore[@]}"} $TESTS 2>&1 | tail -n1)"
    case "$res" in *failed*|*error*) die "numpy $npv: $res";; *passed*) ;; *) die "numpy $npv: $res";; esac
    ok "numpy $npv: $res"
    RESULTS+=("numpy $npv: $res")
done
say "numpy_matrix: passed in $((SECONDS - T0))s"
printf '  %s\n' "${RESULTS[@]}"
