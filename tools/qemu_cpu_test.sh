#!/usr/bin/env bash
# Run the installed manylinux wheel under emulated older x86-64 CPUs (Debian's qemu-user, TCG) and prove:
#   - the dispatcher picks the right level:   core2duo -> scalar, qemu64 -> scalar (no POPCNT, no SSE4),
#                                             Nehalem  -> scalar (SSE4.2+POPCNT, no AVX), Haswell -> avx2
#   - forcing a level the CPU lacks (QUANTLIB_ISA=avx512, and avx2 where there is none) is a clean
#     ImportError (exit 1), never SIGILL (exit 132)
#   - kernel outputs are bit-identical to the native run (tools/isa_fingerprint.py hashes)
#   - a fast test subset passes under emulation (each test compares to the numpy oracle exactly)
# First it probes what this qemu actually enforces (tiny asm program: popcnt, SSE4.1, AVX2, AVX-512,
# VNNI under each model), so the log states which instructions WOULD have trapped.
#
#   tools/qemu_cpu_test.sh                 (builds the wheel first if dist/ has none)
#   QL_QEMU_K="hamming or dot"  tools/qemu_cpu_test.sh      narrower pytest -k selection
#   QL_QEMU_MODELS="Nehalem Haswell" tools/qemu_cpu_test.sh  subset of models
#
# numpy's own baseline: numpy 2.4 wheels need x86-64-v2 (SSE4.2+POPCNT), so the two pre-Nehalem models
# run in a numpy 1.26 venv (baseline SSE3) -- which is also the oldest numpy quantlib declares.
# numpy's bundled OpenBLAS mis-detects qemu's Nehalem model as Haswell and dies of SIGILL in numpy's
# import-time sanity check (not our code: see tools/README.md), so OPENBLAS_CORETYPE is pinned per model.
set -euo pipefail
# shellcheck source=tools/_common.sh
source "$(dirname "$0")/_common.sh"
T0=$SECONDS

K="${QL_QEMU_K:-hamming or dot or pack or quantize}"
MODELS="${QL_QEMU_MODELS:-core2duo qemu64 Nehalem Haswell}"
# model -> expected level, numpy venv, OpenBLAS core type
declare -A EXPECT=([core2duo]=scalar [qemu64]=scalar [Nehalem]=scalar [Haswell]=avx2)
declare -A NPENV=([core2duo]=np1 [qemu64]=np1 [Nehalem]=np2 [Haswell]=np2)
declare -A OBLAS=([core2duo]=Core2 [qemu64]=Prescott [Nehalem]=Nehalem [Haswell]=Haswell)

[ "$(uname -m)" = x86_64 ] || { echo "qemu_cpu_test: x86-64 host only"; exit 0; }
if ! command -v qemu-x86_64 >/dev/null; then
    say "installing qemu-user (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null
fi
say "$(qemu-x86_64 --version | head -n1)"

compgen -G "$REPO/dist/quantlib_embed-*manylinux*.whl" >/dev/null || "$REPO/tools/build_wheel.sh"
WHEEL="$(find_wheel)"
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file" >&2); }

# venvs: created once, the wheel force-reinstalled every run (idempotent, fast)
mkvenv() {  # mkvenv DIR NUMPY_SPEC
    if [ ! -x "$1/bin/python" ] || ! "$1/bin/python" -c "import pytest, hypothesis, numpy" 2>/dev/null; then
        rm -rf "$1"; "$PY" -m venv "$1"
        quiet "$1/bin/pip" install -q --disable-pip-version-check "$2" pytest hypothesis
    fi
    quiet "$1/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
}
say "venvs with $(basename "$WHEEL")"
mkvenv /tmp/ql-qemu-np1 "numpy==1.26.*"
mkvenv /tmp/ql-qemu-np2 "numpy>=2"
for e in np1 np2; do
    ok "/tmp/ql-qemu-$e: numpy $(/tmp/ql-qemu-$e/bin/python -c 'import numpy; print(numpy.__version__)')"
done

WORK=/tmp/ql-qemu-work
copy_tests "$WORK"
cp "$REPO/tools/isa_fingerprint.py" "$WORK/"
cd "$WORK"
mapfile -t IGN < <(st_ignores "$WORK")

say "what this qemu enforces (asm probe; SIGILL = the model traps it)"
cat > probe.c <<'EOF'
#include <string.h>
int main(int argc, char **argv) {
    const char *w = argc > 1 ? argv[1] : "";
    unsigned long r = 0, x = 0xF0F0;
    if (!strcmp(w, "popcnt")) __asm__ volatile("popcntq %1, %0" : "=r"(r) : "r"(x));
    if (!strcmp(w, "sse4.1")) __asm__ volatile("pminsd %%xmm1, %%xmm0" ::: "xmm0");
    if (!strcmp(w, "avx"))    __asm__ volatile("vaddps %%ymm1, %%ymm2, %%ymm0" ::: "xmm0");
    if (!strcmp(w, "avx2"))   __asm__ volatile("vpaddd %%ymm1, %%ymm2, %%ymm0" ::: "xmm0");
    if (!strcmp(w, "avx512")) __asm__ volatile("vpopcntq %%zmm1, %%zmm0" ::: "xmm0");
    if (!strcmp(w, "vnni"))   __asm__ volatile("vpdpbusd %%zmm1, %%zmm2, %%zmm0" ::: "xmm0");
    return (int)(r & 0);
}
EOF
gcc -O1 -o probe probe.c
for m in $MODELS; do
    line=""
    for i in popcnt sse4.1 avx avx2 avx512 vnni; do
        if (qemu-x86_64 -cpu "$m" ./probe "$i"; exit $?) >/dev/null 2>&1; then line+=" $i:runs"; else line+=" $i:SIGILL"; fi
    done
    printf '  %-9s%s\n' "$m" "$line"
done

say "native reference (this CPU: $(/tmp/ql-qemu-np2/bin/python -c 'import quantlib; print(quantlib.get_isa())'))"
/tmp/ql-qemu-np2/bin/python isa_fingerprint.py --all > native_all.json \
    || { cat native_all.json; die "ISA levels disagree natively"; }
NATIVE="$(/tmp/ql-qemu-np2/bin/python -c 'import json; d=json.load(open("native_all.json")); print(json.dumps(d["scalar"], sort_keys=True))')"
ok "scalar/avx2/avx512 fingerprints identical natively: $NATIVE"
for e in np1 np2; do
    n="$(/tmp/ql-qemu-$e/bin/python -m pytest -q -p no:cacheprovider ${IGN[@]+"${IGN[@]}"} tests -k "$K" 2>&1 | tail -n1)"
    ok "native pytest -k \"$K\" ($e): $n"
done

SUMMARY=()
for m in $MODELS; do
    exp="${EXPECT[$m]}"
    py="/tmp/ql-qemu-${NPENV[$m]}/bin/python"
    q=(env OPENBLAS_CORETYPE="${OBLAS[$m]}" qemu-x86_64 -cpu "$m")
    t=$SECONDS
    say "qemu-x86_64 -cpu $m  (expect $exp; numpy $("$py" -c 'import numpy; print(numpy.__version__)'))"
    info="$("${q[@]}" "$py" -c 'import quantlib as q; c=q.show_config(False); print(c["active_isa"], "|", " ".join(c["usable_isas"]), "|", " ".join(c["cpu_features"]) or "-")' 2>&1 | grep -v "TCG doesn't support")"
    got="${info%% |*}"
    printf '  active | usable | cpu features: %s\n' "$info"
    [ "$got" = "$exp" ] || die "$m: dispatcher chose '$got', expected '$exp'"
    ok "$m: dispatcher chose $got"
    if [ "$m" = core2duo ] || [ "$m" = qemu64 ]; then
        case " $info " in *" popcnt "*) die "$m: model reports POPCNT";; esac
        ok "$m: model has no POPCNT (and qemu traps popcnt there: see probe)"
    fi

    forced=(avx512)
    [ "$exp" = scalar ] && forced+=(avx2)
    for f in "${forced[@]}"; do
        set +e
        out="$(QUANTLIB_ISA=$f "${q[@]}" "$py" -c 'import quantlib' 2>&1)"; rc=$?
        set -e
        msg="$(printf '%s\n' "$out" | grep -E '^ImportError' | head -n1)"
        [ "$rc" = 1 ] && [ -n "$msg" ] || { printf '%s\n' "$out" | tail -n 5; die "$m: QUANTLIB_ISA=$f gave rc=$rc, not a clean ImportError"; }
        ok "$m: QUANTLIB_ISA=$f -> rc=1, $msg"
    done
    if [ "$exp" = avx2 ]; then
        got2="$(QUANTLIB_ISA=scalar "${q[@]}" "$py" -c 'import quantlib; print(quantlib.get_isa())' 2>/dev/null)"
        [ "$got2" = scalar ] || die "$m: QUANTLIB_ISA=scalar gave $got2"
        ok "$m: QUANTLIB_ISA=scalar honoured"
    fi

    "${q[@]}" "$py" isa_fingerprint.py --all > "emul_$m.json" 2> >(grep -v "TCG doesn't support" >&2) \
        || die "$m: ISA levels disagree under emulation"
    for lvl in $("$py" -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))))' "emul_$m.json"); do
        fp="$("$py" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))[sys.argv[2]], sort_keys=True))' "emul_$m.json" "$lvl")"
        [ "$fp" = "$NATIVE" ] || die "$m/$lvl: kernel outputs differ from the native run: $fp"
        ok "$m/$lvl: kernel output hashes == native"
    done

    res="$("${q[@]}" "$py" -m pytest -q -p no:cacheprovider ${IGN[@]+"${IGN[@]}"} tests -k "$K" 2>&1 | grep -v "TCG doesn't support" | tail -n1)"
    case "$res" in *failed*|*error*|"") die "$m: pytest: $res";; *passed*) ;; *) die "$m: pytest: $res";; esac
    ok "$m: pytest -k \"$K\" under emulation: $res"
    SUMMARY+=("$(printf '%-9s -> %-6s (usable: %s) tests: %s [%ss]' "$m" "$got" "$(echo "$info" | cut -d'|' -f2 | xargs)" "$res" $((SECONDS - t)))")
done

say "qemu_cpu_test: all models passed in $((SECONDS - T0))s"
printf '  %s\n' "${SUMMARY[@]}"
