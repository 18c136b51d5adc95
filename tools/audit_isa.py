#!/usr/bin/env python3
"""Disassembly audit of quantlib's compiled objects: prove the build flags do what they claim.

    tools/audit_isa.py                  build the extension into /tmp/ql-audit (setup.py build_ext,
                                        outside the source tree) and audit its objects
    tools/audit_isa.py --build-temp D   audit objects already built in D (D/csrc/*.o, D/quantlib/_core.o)

What it checks (x86-64; `objdump -d -w`, AT&T syntax, raw bytes):

  Objects: the layout of setup.py / build_levels.py -- csrc/<family>/<level>.o for every family file
  of every x86-64 level, and the baseline csrc/dispatch.o, csrc/topk.o, csrc/<family>/scalar.o.

  Baseline objects (dispatch.o, topk.o, <family>/scalar.o, quantlib/_core.o; built -march=x86-64):
    B1  no ymm / zmm / AVX-512 mask (k0-k7) register operands
    B2  no VEX (C4/C5) or EVEX (62) encoded instruction: that excludes all AVX, AVX2, FMA, BMI1/2,
        F16C, AVX-512 and AVX-VNNI code, including 128-bit VEX ops on xmm
    B3  no popcnt, lzcnt, tzcnt, movbe (not in x86-64 v1: a pre-Nehalem CPU has no POPCNT)
    B4  no SSE3 / SSSE3 / SSE4.1 / SSE4.2 mnemonics (x86-64 v1 is SSE2)
  ISA objects:
    A1  every <family>/avx2.o uses ymm registers
    A2  every <family>/avx2.o has no zmm / k-register / EVEX instruction: a Haswell must never
        see AVX-512 code in the AVX2 level
    A3  hamming/avx512_icl.o contains vpopcntq (VPOPCNTDQ Hamming kernel)
    A4  dot8/avx512_icl.o contains vpdpbusd (VNNI int8 dot kernel)
    A5  every <family>/avx512_icl.o uses zmm registers
    A6  f32/avx2.o has vfmadd*ps on ymm and f32/avx512_icl.o on zmm (fused float32 kernel)
  Linking hazards:
    L1  no weak / COMDAT function definitions in the ISA objects, and no global function defined
        both in an ISA object and in a baseline object (the linker could keep the AVX copy and a
        scalar caller would then die of SIGILL)
    L2  in the linked extension, every function that contains VEX/EVEX code is one defined in an
        ISA object; every exported entry point (ql_*, PyInit_*) and every Cython function is clean

Exit status 0 only if every rule holds.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from build_levels import FAMILIES, LEVELS, X86_64  # noqa: E402  (the object layout setup.py builds)

BASELINE = (["csrc/dispatch.o", "csrc/topk.o"] + [f"csrc/{f}/scalar.o" for f in FAMILIES]
            + ["quantlib/_core.o"])
# (object, level) for every family file of every x86-64 level
ISA_OBJS = [(f"csrc/{f}/{lv}.o", lv) for lv, row in LEVELS.items() if row["arch"] == X86_64
            for f in FAMILIES if os.path.exists(os.path.join(REPO, "csrc", f, f"{lv}.c"))]

VEC_REG = re.compile(r"%(?:[yz]mm\d+|k[0-7])\b")
YMM = re.compile(r"%ymm\d+\b")
ZMM = re.compile(r"%zmm\d+\b")
KREG = re.compile(r"%k[0-7]\b")
LEGACY_PREFIX = {0x66, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x67, 0xF0}
NOT_V1 = {"popcnt", "lzcnt", "tzcnt", "movbe"}
SSE3_PLUS = set(
    # SSE3
    "addsubps addsubpd haddps haddpd hsubps hsubpd lddqu movddup movshdup movsldup fisttp "
    # SSSE3
    "pshufb palignr pabsb pabsw pabsd phaddw phaddd phaddsw phsubw phsubd phsubsw pmaddubsw "
    "pmulhrsw psignb psignw psignd "
    # SSE4.1
    "blendps blendpd blendvps blendvpd pblendw pblendvb dpps dppd extractps insertps pextrb pextrd "
    "pextrq pinsrb pinsrd pinsrq pmaxsb pmaxsd pmaxuw pmaxud pminsb pminsd pminuw pminud pmovsxbw "
    "pmovsxbd pmovsxbq pmovsxwd pmovsxwq pmovsxdq pmovzxbw pmovzxbd pmovzxbq pmovzxwd pmovzxwq "
    "pmovzxdq pmuldq pmulld ptest roundps roundpd roundss roundsd pcmpeqq packusdw mpsadbw "
    "phminposuw movntdqa "
    # SSE4.2
    "pcmpgtq pcmpestri pcmpestrm pcmpistri pcmpistrm crc32".split()
)


class Insn:
    __slots__ = ("func", "raw", "mnem", "ops", "text")

    def __init__(self, func, raw, text):
        self.func = func
        self.raw = raw
        self.text = text
        parts = text.split(None, 1)
        mn = parts[0] if parts else ""
        # prefixes shown as separate words ("rep stos", "lock xadd", "bnd jmp", "notrack jmp")
        while mn in ("rep", "repz", "repnz", "repe", "repne", "lock", "bnd", "notrack", "data16",
                     "addr32", "cs", "ds") and len(parts) > 1:
            parts = parts[1].split(None, 1)
            mn = parts[0]
        self.mnem = mn
        ops = parts[1] if len(parts) > 1 else ""
        self.ops = ops.split("#")[0].split("<")[0]   # drop comments / symbol annotations

    @property
    def encoding(self) -> str:
        i = 0
        while i < len(self.raw) and self.raw[i] in LEGACY_PREFIX:
            i += 1
        if i < len(self.raw) and 0x40 <= self.raw[i] <= 0x4F:   # REX
            i += 1
        if i >= len(self.raw):
            return "legacy"
        b = self.raw[i]
        return {0xC4: "vex", 0xC5: "vex", 0x62: "evex"}.get(b, "legacy")

    @property
    def base_mnem(self) -> str:
        # strip AT&T operand-size suffixes for the mnemonics that take them (popcntq, crc32b, ...)
        m = self.mnem
        for name in NOT_V1 | {"crc32"}:
            if m.startswith(name) and len(m) <= len(name) + 1:
                return name
        return m


def disassemble(path: str) -> list[Insn]:
    out = subprocess.run(["objdump", "-d", "-w", path],
                         check=True, capture_output=True, text=True).stdout
    insns, func = [], "?"
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            func = m.group(1)
            continue
        cols = line.split("\t")
        if len(cols) < 3 or not re.match(r"^\s*[0-9a-f]+:$", cols[0]):
            continue
        try:
            raw = bytes(int(b, 16) for b in cols[1].split())
        except ValueError:
            continue
        text = cols[2].strip()
        if not text or text.startswith("(bad)"):
            if text.startswith("(bad)"):
                insns.append(Insn(func, raw, "(bad)"))
            continue
        insns.append(Insn(func, raw, text))
    return insns


def defined_functions(path: str) -> dict[str, str]:
    """name -> binding letter (T global, t local, W/w weak, ...) for functions defined in `path`."""
    out = subprocess.run(["nm", "--defined-only", path], check=True, capture_output=True,
                         text=True).stdout
    res = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TtWwiu":
            res[parts[2]] = parts[1]
    return res


class Report:
    def __init__(self):
        self.failed = 0

    def check(self, tag: str, ok: bool, msg: str, detail: list[str] = ()):
        if ok:
            print(f"  PASS     {tag}  {msg}")
        else:
            self.failed += 1
            print(f"  FAIL     {tag}  {msg}")
        for d in list(detail)[:8]:
            print(f"             {d}")


def build(build_temp: str, build_lib: str) -> None:
    print(f"==> python setup.py build_ext -t {build_temp} -b {build_lib}  (baseline -march=x86-64)")
    shutil.rmtree(build_temp, ignore_errors=True)
    shutil.rmtree(build_lib, ignore_errors=True)
    os.makedirs(os.path.dirname(build_temp), exist_ok=True)
    log = os.path.join(os.path.dirname(build_temp), "build.log")
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "-f", "-t", build_temp,
                            "-b", build_lib], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        sys.stdout.write(open(log).read()[-4000:])
        sys.exit(f"build failed (log {log})")
    print(f"  build log: {log}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-temp", help="audit objects already built here (skip the build)")
    ap.add_argument("--so", help="linked extension to audit (default: the one built with the objects)")
    args = ap.parse_args()

    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        print(f"audit_isa: x86-64 only (this is {platform.machine()}); nothing to check")
        return 0

    if args.build_temp:
        temp, so = args.build_temp, args.so
    else:
        root = "/tmp/ql-audit"
        temp, lib = f"{root}/temp", f"{root}/lib"
        build(temp, lib)
        so = args.so or (glob.glob(f"{lib}/quantlib/_core*.so") or [None])[0]

    def obj(rel):
        p = os.path.join(temp, rel)
        if not os.path.exists(p):
            sys.exit(f"missing object {p}")
        return p

    rep = Report()
    print(f"==> objects in {temp}")
    base_funcs: dict[str, str] = {}
    for rel in BASELINE:
        p = obj(rel)
        ins = disassemble(p)
        base_funcs.update({k: v for k, v in defined_functions(p).items() if v in "TWw"})
        vreg = [i for i in ins if VEC_REG.search(i.ops)]
        vex = [i for i in ins if i.encoding != "legacy"]
        v1 = [i for i in ins if i.base_mnem in NOT_V1]
        sse = [i for i in ins if i.mnem in SSE3_PLUS]
        bad = [i for i in ins if i.text == "(bad)"]
        name = os.path.basename(rel)
        print(f"  -- {rel}: {len(ins)} instructions")
        fmt = lambda L: [f"<{i.func}> {i.text}" for i in L]  # noqa: E731
        rep.check("B1", not vreg, f"{name}: no ymm/zmm/k registers ({len(vreg)} found)", detail=fmt(vreg))
        rep.check("B2", not vex and not bad,
                  f"{name}: no VEX/EVEX-encoded instruction ({len(vex)} found, {len(bad)} undecodable)",
                  detail=fmt(vex + bad))
        rep.check("B3", not v1, f"{name}: no popcnt/lzcnt/tzcnt/movbe ({len(v1)} found)", detail=fmt(v1))
        rep.check("B4", not sse, f"{name}: no SSE3/SSSE3/SSE4.x instruction ({len(sse)} found)",
                  detail=fmt(sse))

    isa_funcs: dict[str, str] = {}
    for rel, level in ISA_OBJS:
        p = obj(rel)
        ins = disassemble(p)
        funcs = defined_functions(p)
        isa_funcs.update(funcs)
        mn = defaultdict(int)
        for i in ins:
            mn[i.mnem] += 1
        ymm = sum(1 for i in ins if YMM.search(i.ops))
        zmm = sum(1 for i in ins if ZMM.search(i.ops))
        kreg = sum(1 for i in ins if KREG.search(i.ops))
        evex = sum(1 for i in ins if i.encoding == "evex")
        vex = sum(1 for i in ins if i.encoding == "vex")
        name = rel[len("csrc/"):]
        print(f"  -- {rel} (level {level}): {len(ins)} instructions, {vex} VEX, {evex} EVEX, "
              f"{ymm} with ymm, {zmm} with zmm")
        interesting = ["vpopcntq", "vpopcntd", "vpdpbusd", "vpdpbusds", "vpshufb", "vpsadbw",
                       "vpmaddubsw", "vpmaddwd", "vpternlogq", "vpopcntb", "popcnt", "popcntq"]
        print("     mnemonics: " + ", ".join(f"{m}={mn[m]}" for m in interesting if mn[m]) or "-")
        if level == "avx2":
            rep.check("A1", ymm > 0, f"{name}: uses ymm registers ({ymm} instructions)")
            rep.check("A2", zmm == 0 and kreg == 0 and evex == 0,
                      f"{name}: no AVX-512 (zmm={zmm}, k-reg={kreg}, EVEX={evex})")
        elif level == "avx512_icl":
            if rel.startswith("csrc/hamming/"):
                rep.check("A3", mn["vpopcntq"] > 0, f"{name}: contains vpopcntq ({mn['vpopcntq']})")
            if rel.startswith("csrc/dot8/"):
                rep.check("A4", mn["vpdpbusd"] + mn["vpdpbusds"] > 0,
                          f"{name}: contains vpdpbusd ({mn['vpdpbusd'] + mn['vpdpbusds']})")
            rep.check("A5", zmm > 0, f"{name}: uses zmm registers ({zmm} instructions)")
        if rel.startswith("csrc/f32/") and level in ("avx2", "avx512_icl"):
            reg = YMM if level == "avx2" else ZMM
            nfma = sum(1 for i in ins if i.mnem.startswith("vfmadd") and i.mnem.endswith("ps")
                       and reg.search(i.ops))
            rep.check("A6", nfma > 0, f"{name}: {nfma} vfmadd*ps on {'ymm' if level == 'avx2' else 'zmm'}")
        weak = sorted(f for f, b in funcs.items() if b in "Wwiu")
        dup = sorted(f for f, b in funcs.items() if b == "T" and f in base_funcs)
        rep.check("L1", not weak and not dup,
                  f"{name}: no weak/COMDAT functions ({len(weak)}) and no global function also "
                  f"defined in a baseline object ({len(dup)})", detail=weak + dup)

    if so and os.path.exists(so):
        print(f"==> linked extension {so}")
        ins = disassemble(so)
        vec_funcs = sorted({i.func for i in ins if i.encoding != "legacy" or VEC_REG.search(i.ops)})
        stray = [f for f in vec_funcs if f.split("@")[0].split(".")[0] not in isa_funcs]
        entry = [f for f in vec_funcs if f.startswith(("ql_", "PyInit_", "__pyx_"))]
        print(f"  {len(vec_funcs)} functions contain vector-extension code: "
              + ", ".join(vec_funcs[:12]) + (" ..." if len(vec_funcs) > 12 else ""))
        rep.check("L2", not stray and not entry,
                  f"{os.path.basename(so)}: VEX/EVEX code only in functions of the ISA objects "
                  f"({len(stray)} stray, {len(entry)} in entry points/Cython)", detail=stray + entry)
    else:
        print("==> no linked extension given: L2 skipped")

    print(f"==> audit: {rep.failed} failed, {len(BASELINE)} baseline and {len(ISA_OBJS)} ISA objects")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
