#!/usr/bin/env bash
# CI entry point for the portability proofs (issue 7). Call from .ci/run as:  bash tools/ci_extra.sh
#   0. prereq                   apt: qemu-user, gcc-aarch64-linux-gnu, libc6-arm64-cross (+ arm64 lists)
#   1. tools/build_wheel.sh     sdist + manylinux wheel (one command)
#   2. tools/audit_isa.py       objdump audit: baseline objects free of AVX/AVX2/AVX-512/POPCNT/SSE3+,
#                               ISA objects use what they should
#   3. tools/verify_dist.sh     sdist built by pip into a fresh venv, full test suite; no numpy C API
#                               (QL_VERIFY_WHEEL=0: the wheel itself is tested by step 5, twice)
#   4. tools/qemu_cpu_test.sh   core2duo / qemu64 / Nehalem -> scalar, Haswell -> avx2, under qemu-x86_64
#   5. tools/numpy_matrix.sh    wheel + full test suite under numpy 1.26.* and the newest 2.x
#   6. tools/aarch64_test.sh    sdist built + NEON level tested under qemu-aarch64; runs in the background
#                               beside 3-5 (qemu is single-threaded; QL_CI_PARALLEL=0 runs it after them)
# QL_CI_SKIP="aarch64 numpy" skips steps by name (build audit verify qemu numpy aarch64).
# Needs root for apt-get, PyPI and Debian's mirrors.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
SKIP=" ${QL_CI_SKIP:-} "
passed=0
skipped() { [[ "$SKIP" == *" $1 "* ]]; }
step() {  # step NAME CMD...
    local name="$1"; shift
    if skipped "$name"; then printf '\n##### %s: skipped (QL_CI_SKIP)\n' "$name"; return; fi
    local t=$SECONDS
    printf '\n##### %s: %s\n' "$name" "$*"
    "$@"
    printf '##### %s: ok in %ss\n' "$name" $((SECONDS - t))
    passed=$((passed + 1))
}

prereq() {  # one apt transaction up front, so the parallel steps never contend for the dpkg lock
    local need=()
    command -v qemu-x86_64 >/dev/null && command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
    if ! skipped aarch64; then
        command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
        [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || need+=(libc6-arm64-cross)
        dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    fi
    apt-get update -qq
    if [ ${#need[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    echo "  apt: installed ${need[*]:-nothing (all present)}"
}

step prereq  prereq
step build   bash tools/build_wheel.sh
# audit_isa builds with setup.py: run it with the tools venv (Cython + setuptools), not the CI venv
step audit   "${QL_TOOLS_VENV:-/tmp/ql-tools-venv}/bin/python" tools/audit_isa.py

ARM_PID=""
trap '[ -z "$ARM_PID" ] || kill "$ARM_PID" 2>/dev/null || true' EXIT
ARM_LOG=/tmp/ql-ci-aarch64.log
if ! skipped aarch64 && [ "${QL_CI_PARALLEL:-1}" = 1 ]; then
    printf '\n##### aarch64: started in the background (log %s)\n' "$ARM_LOG"
    ARM_T=$SECONDS
    bash tools/aarch64_test.sh > "$ARM_LOG" 2>&1 &
    ARM_PID=$!
fi
step verify  env QL_VERIFY_WHEEL=0 bash tools/verify_dist.sh
step qemu    bash tools/qemu_cpu_test.sh
step numpy   bash tools/numpy_matrix.sh
if [ -n "$ARM_PID" ]; then
    arm_rc=0
    wait "$ARM_PID" || arm_rc=$?
    ARM_PID=""
    printf '\n##### aarch64: bash tools/aarch64_test.sh (background)\n'
    cat "$ARM_LOG"
    [ "$arm_rc" = 0 ] || { echo "##### aarch64: FAILED (rc=$arm_rc)"; exit "$arm_rc"; }
    printf '##### aarch64: ok in %ss\n' $((SECONDS - ARM_T))
    passed=$((passed + 1))
else
    step aarch64 bash tools/aarch64_test.sh
fi
crosscheck() {  # every ISA level on every CPU (native, qemu x86 models, qemu aarch64) gave the same hashes
    python3 - <<'PY'
import glob, json, sys
runs = {}
for f in ["/tmp/ql-qemu-work/native_all.json"] + sorted(glob.glob("/tmp/ql-qemu-work/emul_*.json")) \
        + sorted(glob.glob("/tmp/ql-arm64/work/fp_*.json")):
    cpu = f.rsplit("/", 1)[1].removesuffix(".json").replace("emul_", "x86 ").replace("fp_", "aarch64 ").replace("native_all", "native")
    for lvl, parts in json.load(open(f)).items():
        runs[f"{cpu}/{lvl}"] = parts
if not runs:
    sys.exit("no fingerprints found")
ref = runs.get("native/scalar") or next(iter(runs.values()))
bad = [k for k, v in runs.items() if v != ref]
print(f"  {len(runs)} (CPU, level) runs compared: " + ", ".join(runs))
if bad:
    sys.exit(f"  outputs differ: {bad}")
print(f"  all identical: {len(ref)} kernel outputs hashed per run")
PY
}
skipped qemu || step crosscheck crosscheck

printf '\n##### ci_extra: wall time %ss\n' $((SECONDS - T0))
echo "ci_extra: $passed passed, 0 failed"
