"""The level registry (csrc/levels.h) agrees with the build flags (build_levels.py), the
run-time checks and the dispatcher: a level is never compiled with an instruction set its
run-time check does not require, aliases resolve, and every kernel slot is served."""
import platform
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import quantlib
from helpers import use_isa
from quantlib import _core

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "build_levels.py").exists(), reason="needs the source tree")


def _build_levels():
    sys.path.insert(0, str(ROOT))
    try:
        import build_levels
    finally:
        sys.path.pop(0)
    return build_levels


def _levels_h():
    return (ROOT / "csrc" / "levels.h").read_text()


def test_header_levels_are_the_dispatcher_levels():
    rows = re.findall(r"X\((\w+), (\w+), (\w+), [^)]*\)", _levels_h().split("#define QL_LEVEL_ALIASES")[0])
    assert [name for _, name, _ in rows] == _core.isa_names()
    ids = [i for i, _, _ in rows]
    for i, _, fb in rows:  # a fallback comes before the level (one resolving pass)
        assert ids.index(fb) <= ids.index(i)


def test_every_flag_is_a_required_feature():
    bl = _build_levels()
    assert set(bl.LEVELS) <= set(_core.isa_names()) - {"scalar"}
    for level, row in bl.LEVELS.items():
        req = set(_core.isa_required_features(level))
        for flag in row["flags"]:
            assert flag.startswith("-m"), flag
            feat = flag[2:]
            assert feat in req, f"{level} is compiled with {flag} but its run-time check does not require {feat}"


def test_avx512_icl_requires_the_ice_lake_set_and_the_os():
    req = set(_core.isa_required_features("avx512_icl"))
    assert {"avx512vpopcntdq", "avx512vnni", "avx512bitalg", "os_avx512", "os_avx"} <= req
    assert {"avx2", "fma", "bmi2", "popcnt", "os_avx"} <= set(_core.isa_required_features("avx2"))
    assert _core.isa_required_features("scalar") == []


def test_alias_avx512():
    assert _core.resolve_isa("avx512") == "avx512_icl"
    assert _core.resolve_isa("sse9") is None
    assert _core.isa_required_features("avx512") == _core.isa_required_features("avx512_icl")
    usable = quantlib.available_isas()
    assert ("avx512" in usable) == ("avx512_icl" in usable)
    assert "avx512" not in list(usable)  # iteration gives each level once, by its real name
    if "avx512_icl" in usable:
        with use_isa("avx512") as active:
            assert active == "avx512_icl"


def test_usable_levels_have_their_features():
    feats = set(_core.cpu_features())
    for level in quantlib.available_isas():
        assert set(_core.isa_required_features(level)) <= feats


@pytest.mark.parametrize("level", quantlib.available_isas())
def test_every_slot_served(level):
    with use_isa(level):
        kl = _core.kernel_levels()
        cfg = quantlib.show_config(print_out=False)
    assert len(kl) == 13 and {f for f, _ in kl.values()} == {"quantize", "hamming", "dot8", "rescore", "f32"}
    usable = set(quantlib.available_isas())
    for slot, (family, served) in kl.items():
        assert served in usable, (slot, served)
    assert set(cfg["kernel_levels"]) == {"quantize", "hamming", "dot8", "rescore", "f32"}
    assert cfg["active_isa"] == level


@pytest.mark.parametrize("level", quantlib.available_isas())
def test_rescore_ids_checked_in_c(level):
    with use_isa(level):
        codes = np.zeros((5, 16), np.uint8)
        w = np.ones((2, 16))
        out = np.empty((2, 3))
        ids = np.array([[0, -1, 4], [1, 2, 3]], np.int64)
        _core.rescore_codes(w, codes, True, ids, out)
        assert out[0, 1] == -np.inf and out[0, 0] == 16 * 128.0
        bad = ids.copy()
        bad[1, 2] = 5
        with pytest.raises(ValueError, match="candidate id 5 out of range for 5 code rows"):
            _core.rescore_codes(w, codes, True, bad, out)
        bits = np.zeros((5, 2), np.uint8)
        with pytest.raises(ValueError, match="candidate id 5 out of range"):
            _core.rescore_bits(w, bits, 0, bad, out)


def test_dot_matrix_status():
    d = int(_core.DOT_MAX_DIM_UNSIGNED) + 1
    a = np.zeros((1, d), np.uint8)
    with pytest.raises(ValueError, match="out of range"):
        _core.dot_matrix(a, a, False, np.empty((1, 1), np.int32))
    out = np.empty((1, 1), np.int32)
    _core.dot_matrix(a, a, True, out)  # within the signed limit
    assert out[0, 0] == 0


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 build layout")
def test_setup_compiles_each_family_file_of_each_level():
    bl = _build_levels()
    for level, row in bl.LEVELS.items():
        if "x86_64" not in row["arch"]:
            continue
        assert level in _core.compiled_isas()
        for fam in bl.FAMILIES:
            src = ROOT / "csrc" / fam / f"{level}.c"
            if src.exists():  # a family file exports exactly its ops table
                assert f"ql_ops_{fam}_{level} = " in src.read_text()
