"""The .qlx file format: every truncation, bit flips, hostile headers and
atomic writes. A bad file must raise quantlib.FormatError (a ValueError),
never crash, hang or allocate what the header claims."""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest

import quantlib
from quantlib import _format as F
from quantlib import FormatError, load_index


def small_index(precision="ubinary", n=5, d=20, ids=True):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, d)).astype(np.float32)
    ranges = quantlib.calibration_ranges(rng.standard_normal((50, d)).astype(np.float32))
    idx = quantlib.Index(d, precision, ranges if precision.endswith("int8") else None)
    idx.add(x, ids=np.arange(n) * 11 if ids else None)
    return idx, x


@pytest.fixture(params=["ubinary", "int8", "pipeline"])
def saved(request, tmp_path):
    path = tmp_path / "f.qlx"
    if request.param == "pipeline":
        x = np.random.default_rng(4).standard_normal((6, 20)).astype(np.float32)
        quantlib.RescorePipeline.build(x, path)
    else:
        idx, _ = small_index(request.param)
        idx.save(path)
    return path


def test_format_error_is_value_error():
    assert issubclass(FormatError, ValueError)
    assert quantlib.FormatError is F.FormatError


def test_every_truncation_length(saved, tmp_path):
    blob = saved.read_bytes()
    bad = tmp_path / "t.qlx"
    bad.write_bytes(blob)
    for n in range(len(blob) - 1, -1, -1):  # every prefix length, longest first
        os.truncate(bad, n)
        for mmap in (True, False):
            with pytest.raises(FormatError):
                load_index(bad, mmap=mmap)
    bad.write_bytes(blob)
    load_index(bad, mmap=False)  # the untruncated copy is fine


def test_trailing_data(saved, tmp_path):
    bad = tmp_path / "x.qlx"
    bad.write_bytes(saved.read_bytes() + b"\0")
    with pytest.raises(FormatError, match="trailing"):
        load_index(bad)


def test_random_bit_flips(saved, tmp_path):
    blob = bytearray(saved.read_bytes())
    rng = np.random.default_rng(2024)
    bad = tmp_path / "b.qlx"
    hsize = struct.unpack_from("<I", blob, 12)[0]
    for trial in range(150):
        b = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, len(b)))
            b[pos] ^= 1 << int(rng.integers(0, 8))
        if b == blob:
            continue
        bad.write_bytes(bytes(b))
        with pytest.raises(FormatError):
            load_index(bad, mmap=False)  # in-memory load verifies every checksum
        with pytest.raises(FormatError):
            load_index(bad, mmap=True, verify=True)
    # header flips are caught even by a lazy memory-mapped open
    for trial in range(100):
        b = bytearray(blob)
        pos = int(rng.integers(0, hsize))
        b[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(b))
        with pytest.raises(FormatError):
            load_index(bad, mmap=True)


def _rewrite_header(blob: bytes, **changes) -> bytes:
    """Re-pack the header with new field values and a *valid* checksum (a
    hostile file, not a corrupted one)."""
    fixed = list(F._FIXED.unpack_from(blob, 0))
    names = ["magic", "vmaj", "vmin", "hsize", "kind", "prec", "dim", "count", "flags", "nsec"]
    entries = []
    nsec = fixed[9]
    for i in range(nsec):
        entries.append(list(F._ENTRY.unpack_from(blob, F._FIXED.size + i * F._ENTRY.size)))
    for k, v in changes.items():
        if k.startswith("sec"):
            i, field = k[3:].split("_", 1)
            fields = ["kind", "dtype", "rows", "cols", "offset", "nbytes", "crc"]
            entries[int(i)][fields.index(field)] = v
        else:
            fixed[names.index(k)] = v
    body = F._FIXED.pack(*fixed) + b"".join(F._ENTRY.pack(*e) for e in entries)
    old_hsize = F._FIXED.size + F._ENTRY.size * nsec + 4
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF) + blob[old_hsize:]


@pytest.mark.parametrize("changes,match", [
    (dict(magic=b"NOTQLIDX"), "not a quantlib"),
    (dict(vmaj=2), "unsupported format version"),
    (dict(nsec=0), "section count"),
    (dict(nsec=2 ** 31), "section count"),
    (dict(hsize=2 ** 31), "header size"),
    (dict(kind=7), "file kind"),
    (dict(prec=9), "precision"),
    (dict(flags=0x80), "flags"),
    (dict(dim=0), "dimension"),
    (dict(dim=2 ** 62), "dimension"),
    (dict(count=2 ** 63), "count"),
    (dict(count=2 ** 40), "section"),
    (dict(sec0_rows=2 ** 62, sec0_nbytes=2 ** 62 * 3), "beyond the end|x"),
    (dict(sec0_rows=2 ** 61, sec0_cols=2 ** 61), "table says"),  # rows*cols*itemsize overflows 64 bits
    (dict(sec0_nbytes=2 ** 64 - 1), "table says"),
    (dict(sec0_offset=2 ** 63), "beyond the end"),
    (dict(sec0_offset=3), "bad offset"),
    (dict(sec0_dtype=99), "dtype"),
    (dict(sec0_kind=99), "unknown kind"),
    (dict(sec1_kind=1), "duplicate"),
])
def test_hostile_headers(tmp_path, changes, match):
    idx, _ = small_index("ubinary")
    path = tmp_path / "h.qlx"
    idx.save(path)
    blob = path.read_bytes()
    path.write_bytes(_rewrite_header(blob, **changes))
    for mmap in (True, False):
        with pytest.raises(FormatError, match=match):
            load_index(path, mmap=mmap)


def test_nonzero_padding_detected(tmp_path):
    idx, _ = small_index("ubinary")
    path = tmp_path / "p.qlx"
    idx.save(path)
    b = bytearray(path.read_bytes())
    hsize = struct.unpack_from("<I", b, 12)[0]
    b[hsize] = 1  # the padding after the header
    path.write_bytes(bytes(b))
    with pytest.raises(FormatError, match="padding"):
        load_index(path)


def test_not_a_file_and_empty(tmp_path):
    p = tmp_path / "e.qlx"
    p.write_bytes(b"")
    with pytest.raises(FormatError):
        load_index(p)
    p.write_bytes(b"hello world, this is not an index at all, but long enough to have a header")
    with pytest.raises(FormatError, match="not a quantlib"):
        load_index(p)
    with pytest.raises(OSError):
        load_index(tmp_path / "missing.qlx")


def test_layout_is_documented(tmp_path):
    idx, _ = small_index("int8", n=3, d=10)
    path = tmp_path / "l.qlx"
    size = idx.save(path)
    blob = path.read_bytes()
    assert size == len(blob)
    assert blob[:8] == F.MAGIC
    magic, vmaj, vmin, hsize, kind, prec, dim, count, flags, nsec = F._FIXED.unpack_from(blob)
    assert (vmaj, vmin, kind, prec, dim, count) == (1, 0, F.KIND_INDEX, F.PRECISION_CODES["int8"], 10, 3)
    assert flags == F.FLAG_IDS | F.FLAG_RANGES and nsec == 3
    assert hsize == 48 + 48 * 3 + 4
    codes = F._ENTRY.unpack_from(blob, 48)
    assert codes[0] == F.SEC_CODES and codes[4] % 64 == 0
    assert blob[codes[4]: codes[4] + codes[5]] == np.ascontiguousarray(idx.codes).tobytes()
    assert codes[6] == zlib.crc32(blob[codes[4]: codes[4] + codes[5]])


def test_atomic_write_leaves_no_temp_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    idx, x = small_index("ubinary")
    path = tmp_path / "a.qlx"
    idx.save(path)
    before = path.read_bytes()
    idx.add(x)  # change the index, then fail halfway through the next save
    real = F._iter_bytes

    def boom(src, dtype):
        yield from real(src, dtype)
        raise RuntimeError("disk full")

    monkeypatch.setattr(F, "_iter_bytes", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        idx.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.qlx"]
    idx.save(path)
    assert len(load_index(path)) == len(idx) == 10
    assert sorted(os.listdir(tmp_path)) == ["a.qlx"]


def test_empty_index_roundtrip(tmp_path):
    for p in ("float32", "int8", "ubinary"):
        idx = quantlib.Index(12, p)
        idx.save(tmp_path / "z.qlx")
        for mmap in (True, False):
            j = load_index(tmp_path / "z.qlx", mmap=mmap)
            assert len(j) == 0 and j.precision == p and j.dim == 12
            v, i = j.search(np.ones((2, 12), np.float32) if p != "int8" else np.ones((2, 12), np.int8), 3)
            assert v.shape == (2, 0) and i.shape == (2, 0)
