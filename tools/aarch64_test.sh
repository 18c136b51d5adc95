#!/usr/bin/env bash
# Build quantlib from the sdist for aarch64 and run it under qemu-aarch64, on this x86-64 Debian 12 host:
#   - a Debian arm64 CPython 3.11 is unpacked (apt-get download + dpkg -x) into a sysroot /tmp/ql-arm64/root;
#     NOT installed with apt: python3:arm64 would replace the host's Debian python3:amd64
#   - arm64 wheels of numpy/pytest/hypothesis/Cython/setuptools come from PyPI with
#     `pip install --target --platform manylinux2014_aarch64 --only-binary=:all:` (host pip, no emulation)
#   - `python3.11 setup.py build_ext --inplace` runs UNDER qemu-aarch64 (setup.py takes its aarch64 branch:
#     csrc/<family>/neon.c + QL_HAVE_NEON); the compiler it spawns is Debian's x86-64 cross gcc
#     aarch64-linux-gnu-gcc (qemu-user hands execve of a host binary to the host)
#   - then under qemu-aarch64 -cpu max (NEON + dotprod) and -cpu cortex-a53 (NEON, no dotprod): the dispatcher
#     must pick neon, QUANTLIB_ISA=avx2 must be an ImportError, the kernel output hashes of every level must
#     equal the x86-64 native ones (tools/isa_fingerprint.py), and the pytest subset must pass.
#   QL_ARM_K="..." narrows the pytest -k selection.
set -euo pipefail
# shellcheck source=tools/_common.sh
source "$(dirname "$0")/_common.sh"
T0=$SECONDS
K="${QL_ARM_K:-hamming or dot or pack or quantize or rescore}"
A=/tmp/ql-arm64
R=$A/root
SITE=$A/site
SRC=$A/src

[ "$(uname -m)" = x86_64 ] || { echo "aarch64_test: written for an x86-64 host"; exit 0; }
compgen -G "$REPO/dist/quantlib_embed-*.tar.gz" >/dev/null || "$REPO/tools/build_wheel.sh"
SDIST="$(find_sdist)"

say "toolchain: gcc-aarch64-linux-gnu, libc6-arm64-cross, qemu-user (Debian)"
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || need+=(libc6-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    APT_UPDATE=1
fi
if [ ${#need[@]} -gt 0 ] || [ -n "${APT_UPDATE:-}" ] || [ ! -x "$R/usr/bin/python3.11" ]; then
    apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
ok "$(aarch64-linux-gnu-gcc --version | head -n1); $(qemu-aarch64 --version | head -n1)"

if [ ! -x "$R/usr/bin/python3.11" ]; then
    say "arm64 CPython 3.11 from Debian into the sysroot $R (apt-get download + dpkg -x)"
    rm -rf "$A/debs" "$R"; mkdir -p "$A/debs" "$R"; chmod 777 "$A/debs"
    (cd "$A/debs" && apt-get download -qq python3.11-minimal:arm64 libpython3.11-minimal:arm64 \
        libpython3.11-stdlib:arm64 python3.11:arm64 libpython3.11:arm64 libpython3.11-dev:arm64 \
        libexpat1:arm64 zlib1g:arm64 libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 liblzma5:arm64 \
        libsqlite3-0:arm64 libncursesw6:arm64 libtinfo6:arm64 libreadline8:arm64 libuuid1:arm64 \
        libgcc-s1:arm64 2>&1 | grep -v "unsandboxed" || true)
    for d in "$A"/debs/*.deb; do dpkg -x "$d" "$R"; done
fi
QA=(qemu-aarch64 -L /usr/aarch64-linux-gnu
    -E "LD_LIBRARY_PATH=$R/usr/lib/aarch64-linux-gnu:$R/lib/aarch64-linux-gnu")
PYA="$R/usr/bin/python3.11"
ok "$("${QA[@]}" "$PYA" -c 'import sys, platform; print("python", sys.version.split()[0], platform.machine())')"

if [ ! -d "$SITE/numpy" ] || [ ! -d "$SITE/Cython" ]; then
    say "arm64 wheels from PyPI into $SITE (pip --platform manylinux2014_aarch64)"
    rm -rf "$SITE"
    "$PY" -m pip install -q --disable-pip-version-check --target "$SITE" \
        --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --python-version 3.11 \
        --implementation cp --abi cp311 --only-binary=:all: \
        "numpy>=1.26" pytest hypothesis "cython>=3" setuptools wheel \
        2> >(grep -v -e "is ignored: it is neither a file" -e "Running pip as the 'root'" >&2)
fi

say "build from $(basename "$SDIST") under qemu-aarch64 (setup.py build_ext --inplace)"
rm -rf "$SRC"; mkdir -p "$SRC"
tar -xzf "$SDIST" -C "$SRC" --strip-components=1
rm -f "$SRC/quantlib/_core.c"      # regenerate with Cython, as a fresh checkout would
(cd "$SRC" && "${QA[@]}" -E "PYTHONPATH=$SITE" \
    -E "CFLAGS=-I$R/usr/include/python3.11" -E "CPPFLAGS=-I$R/usr/include" \
    "$PYA" setup.py -q build_ext --inplace > "$A/build.log" 2>&1) \
    || { tail -n 30 "$A/build.log"; die "aarch64 build failed (log $A/build.log)"; }
so="$(ls "$SRC"/quantlib/_core*.so)"
file "$so" | sed 's/^/  /'
for fam in quantize hamming dot8 rescore; do
    neon_o="$(ls "$SRC"/build/temp.*/csrc/$fam/neon.o 2>/dev/null || true)"
    [ -n "$neon_o" ] || die "csrc/$fam/neon.c was not compiled"
    aarch64-linux-gnu-nm "$so" | grep -q " ql_ops_${fam}_neon\$" || die "ql_ops_${fam}_neon table not linked in"
    nvec="$(aarch64-linux-gnu-objdump -d "$neon_o" | grep -cE '\bv[0-9]+\.(16b|8h|4s|2d)\b' || true)"
    [ "$nvec" -gt 0 ] || die "$fam/neon.o has no AdvSIMD vector instruction"
    ok "$fam/neon.o compiled and linked (ql_ops_${fam}_neon), $nvec AdvSIMD vector instructions in it"
done

RUN=("${QA[@]}" -E "PYTHONPATH=$SRC:$SITE")
WORK=$A/work
copy_tests "$WORK"; cp "$REPO/tools/isa_fingerprint.py" "$WORK/"
cd "$WORK"
mapfile -t IGN < <(st_ignores "$WORK")
NATIVE=""
if [ -x /tmp/ql-qemu-np2/bin/python ]; then
    NATIVE="$(/tmp/ql-qemu-np2/bin/python isa_fingerprint.py | "$PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["parts"], sort_keys=True))')"
fi
for cpu in max cortex-a53; do
    say "qemu-aarch64 -cpu $cpu"
    info="$("${RUN[@]}" -cpu "$cpu" "$PYA" -c 'import quantlib as q, numpy; c=q.show_config(False); print(c["active_isa"], "|", " ".join(c["usable_isas"]), "|", " ".join(c["cpu_features"]), "| numpy", numpy.__version__)')"
    printf '  active | usable | features | numpy: %s\n' "$info"
    [ "${info%% |*}" = neon ] || die "$cpu: dispatcher chose ${info%% |*}, expected neon"
    ok "$cpu: dispatcher chose neon"
    set +e
    out="$("${RUN[@]}" -cpu "$cpu" -E QUANTLIB_ISA=avx2 "$PYA" -c 'import quantlib' 2>&1)"; rc=$?
    set -e
    [ "$rc" = 1 ] && printf '%s' "$out" | grep -q '^ImportError' || die "$cpu: QUANTLIB_ISA=avx2 gave rc=$rc"
    ok "$cpu: QUANTLIB_ISA=avx2 -> rc=1, $(printf '%s\n' "$out" | grep '^ImportError')"
    "${RUN[@]}" -cpu "$cpu" "$PYA" isa_fingerprint.py --all > "fp_$cpu.json" || die "$cpu: scalar and neon disagree"
    for lvl in scalar neon; do
        fp="$("$PY" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))[sys.argv[2]], sort_keys=True))' "fp_$cpu.json" "$lvl")"
        if [ -n "$NATIVE" ]; then
            [ "$fp" = "$NATIVE" ] || die "$cpu/$lvl: kernel outputs differ from x86-64 native: $fp"
            ok "$cpu/$lvl: kernel output hashes == x86-64 native"
        else
            ok "$cpu/$lvl: scalar == neon hashes (no x86 venv to compare; run tools/qemu_cpu_test.sh first)"
        fi
    done
done
say "pytest -k \"$K\" under qemu-aarch64 -cpu max (levels: scalar, neon)"
res="$("${RUN[@]}" -cpu max "$PYA" -m pytest -q -p no:cacheprovider ${IGN[@]+"${IGN[@]}"} tests -k "$K" 2>&1 | tail -n1)"
case "$res" in *failed*|*error*) die "aarch64: $res";; *passed*) ;; *) die "aarch64: $res";; esac
ok "aarch64: $res"
say "aarch64_test: passed in $((SECONDS - T0))s"
