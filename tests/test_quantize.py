"""quantize_embeddings: byte-for-byte parity with sentence-transformers 6.2
(the real package, installed by the `test` extra) and with the numpy formula,
on every kernel level this CPU has."""
import logging

import numpy as np
import pytest

# the `test` extra installs both; minimal wheel/sdist venvs (tools/) run without them
torch = pytest.importorskip("torch")
st_quantize = pytest.importorskip("sentence_transformers.util.quantization").quantize_embeddings

import quantlib
from quantlib import quantize_embeddings

import reference as ref

PRECISIONS = ["float32", "int8", "uint8", "binary", "ubinary"]
DIMS = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100, 127, 128, 129, 130]


def assert_same(a, b):
    if isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
        return
    assert isinstance(a, np.ndarray), type(a)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.tobytes() == b.tobytes()


def both(*args, **kw):
    return quantize_embeddings(*args, **kw), st_quantize(*args, **kw)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("d", DIMS)
def test_parity_2d_self_calibrated(isa, rng, precision, dtype, d):
    x = (rng.standard_normal((150, d)) * 3).astype(dtype)
    x[::17, 0] = 0.0
    assert_same(*both(x, precision))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("n", [0, 1, 2, 5, 257])
@pytest.mark.parametrize("d", [1, 9, 64, 100, 130])
def test_parity_calibration_and_ranges(isa, rng, precision, n, d):
    calib = rng.standard_normal((120, d)).astype(np.float32)
    x = (rng.standard_normal((n, d)) * 1.5).astype(np.float32)  # some out of range
    assert_same(*both(x, precision, calibration_embeddings=calib))
    ranges = np.vstack((calib.min(0), calib.max(0)))
    assert_same(*both(x, precision, ranges=ranges))
    assert_same(*both(x.astype(np.float64), precision, ranges=ranges.astype(np.float64)))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint16, np.float16])
def test_parity_other_dtypes(isa, rng, precision, dtype):
    x = rng.integers(-50, 50, (130, 19)).astype(dtype)
    if np.dtype(dtype).kind == "u":
        x = rng.integers(0, 100, (130, 19)).astype(dtype)
    assert_same(*both(x, precision))
    calib = rng.standard_normal((30, 19)) * 40
    assert_same(*both(x, precision, calibration_embeddings=calib))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("d", [5, 16, 33])
def test_parity_1d_and_nd(isa, rng, precision, d):
    calib = rng.standard_normal((200, d)).astype(np.float32)
    ranges = np.vstack((calib.min(0), calib.max(0)))
    v = rng.standard_normal(d).astype(np.float32)
    t = rng.standard_normal((3, 4, d)).astype(np.float32)
    if precision in ("int8", "uint8"):
        assert_same(*both(v, precision, ranges=ranges))
        assert_same(*both(v, precision, calibration_embeddings=calib))
        assert_same(*both(t, precision, ranges=ranges))
        assert_same(*both(t, precision, calibration_embeddings=calib))
        # N-D self-calibration reduces along axis 0 only upstream: reproduced exactly
        t2 = rng.standard_normal((6, 1, d)).astype(np.float32)
        assert_same(*both(t2, precision))
        t3 = rng.standard_normal((6, 3, d)).astype(np.float32)
        assert_same(*both(t3, precision))
    else:
        assert_same(*both(v, precision))
        assert_same(*both(t, precision))
        assert_same(*both(rng.standard_normal((2, 0, d)).astype(np.float32), precision))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_parity_lists_and_tensors(rng, precision):
    rows = [rng.standard_normal(24).astype(np.float32) for _ in range(150)]
    assert_same(*both(rows, precision))
    assert_same(*both([r.tolist() for r in rows], precision))  # float64 via np.array
    mats = [rng.standard_normal((n, 24)).astype(np.float32) for n in (10, 0, 3, 200)]
    assert_same(*both(mats, precision))
    assert_same(*both(mats, precision, calibration_embeddings=rng.standard_normal((50, 24))))
    assert_same(*both([np.zeros((0, 16), np.float32)], precision))
    assert_same(*both([], precision))
    t = torch.from_numpy(rng.standard_normal((150, 24)).astype(np.float32))
    assert_same(*both(t, precision))
    assert_same(*both(t.to(torch.bfloat16), precision))
    assert_same(*both(t.to(torch.float16), precision))
    assert_same(*both(list(t[:120]), precision))
    assert_same(*both([torch.from_numpy(m) for m in mats], precision))


def test_parity_specials_binary(isa):
    v = np.array([[0.0, -0.0, np.nan, -np.inf, np.inf, 1e-45, -1e-45, 1.0, 2.0, -3.0, 0.5]], np.float32)
    for p in ("binary", "ubinary"):
        assert_same(*both(v, p))
        assert_same(*both(v.astype(np.float64), p))


def test_inf_saturates_like_upstream(isa, rng):
    calib = rng.standard_normal((100, 8)).astype(np.float32)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    x[0, :4] = np.inf
    x[1, 4:] = -np.inf
    x[2] = 1e30
    for p in ("int8", "uint8"):
        assert_same(*both(x, p, calibration_embeddings=calib))


def test_upstream_worked_example():
    calib = np.array([[1, 20, -3], [4, 5, -60]], np.float32)
    x = np.array([[-1, 15, 1]], np.float32)
    got8 = quantize_embeddings(x, "int8", calibration_embeddings=calib)
    gotu = quantize_embeddings(x, "uint8", calibration_embeddings=calib)
    # derived from the formula by the reference, not hard-coded
    ranges = np.vstack((calib.min(0), calib.max(0)))
    assert_same(got8, ref.quantize(x, ranges, True))
    assert_same(gotu, ref.quantize(x, ranges, False))
    assert_same(got8, st_quantize(x, "int8", calibration_embeddings=calib))


def test_calibration_max_maps_to_254(isa, rng):
    x = rng.standard_normal((500, 64)).astype(np.float32)
    u = quantize_embeddings(x, "uint8")
    assert_same(u, st_quantize(x, "uint8"))
    assert_same(u, ref.quantize(x, np.vstack((x.min(0), x.max(0))), False))
    # the float32 step rounds, so a column's max lands in bucket 254 or 255 (never wraps)
    top = u[x.argmax(0), np.arange(64)]
    assert set(np.unique(top)) <= {254, 255}


def test_int8_is_uint8_xor_0x80(rng):
    x = rng.standard_normal((300, 50)).astype(np.float32)
    a = quantize_embeddings(x, "int8")
    b = quantize_embeddings(x, "uint8")
    assert (a.view(np.uint8) == (b ^ 0x80)).all()
    assert (quantize_embeddings(x, "binary").view(np.uint8) == (quantize_embeddings(x, "ubinary") ^ 0x80)).all()


def test_threads_identical(rng):
    x = rng.standard_normal((20000, 100)).astype(np.float32)  # above the parallel threshold
    for p in ("int8", "binary"):
        a = quantize_embeddings(x, p, threads=1)
        b = quantize_embeddings(x, p, threads=2)
        c = quantize_embeddings(x, p, threads=3)
        assert_same(a, b)
        assert_same(a, c)
        assert_same(a, st_quantize(x, p))


def test_non_contiguous_inputs(rng):
    x = rng.standard_normal((300, 40)).astype(np.float32)
    for v in (x[::2], x[:, ::2], np.asfortranarray(x), x[::-1]):
        for p in PRECISIONS:
            assert_same(*both(v, p))
    ro = x.copy()
    ro.setflags(write=False)
    assert_same(*both(ro, "int8"))


def test_memmap_input(tmp_path, rng):
    x = rng.standard_normal((400, 32)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    for p in PRECISIONS:
        assert_same(quantize_embeddings(mm, p), st_quantize(x, p))
    r = quantlib.calibration_ranges(mm, chunk_size=37)
    np.testing.assert_array_equal(r, np.vstack((x.min(0), x.max(0))).astype(np.float32))


# ------------------------------------------------------------------ errors
def test_error_int_input_same_as_upstream():
    for dt in (np.int8, np.uint8):
        x = np.zeros((3, 8), dt)
        with pytest.raises(Exception) as ours:
            quantize_embeddings(x, "int8")
        with pytest.raises(Exception) as theirs:
            st_quantize(x, "int8")
        assert type(ours.value) is type(theirs.value) is Exception
        assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("bad", ["float16", "int4", "INT8", ""])
def test_error_unsupported_precision(rng, bad):
    x = rng.standard_normal((5, 8)).astype(np.float32)
    with pytest.raises(ValueError) as ours:
        quantize_embeddings(x, bad)
    with pytest.raises(ValueError) as theirs:
        st_quantize(x, bad)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_error_single_embedding_same_as_upstream(rng, precision):
    for x in (rng.standard_normal(8).astype(np.float32), rng.standard_normal((1, 8)).astype(np.float32)):
        with pytest.raises(ValueError) as ours:
            quantize_embeddings(x, precision)
        with pytest.raises(ValueError) as theirs:
            st_quantize(x, precision)
        assert str(ours.value) == str(theirs.value)


def test_warning_logged_like_upstream(rng, caplog):
    x = rng.standard_normal((10, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        quantize_embeddings(x, "int8")
        st_quantize(x, "int8")
    msgs = [r.getMessage() for r in caplog.records if "quantization buckets" in r.getMessage()]
    assert len(msgs) == 2 and msgs[0] == msgs[1]
    assert {r.name for r in caplog.records if "buckets" in r.getMessage()} == {
        "quantlib.quantization", "sentence_transformers.util.quantization"}


@pytest.mark.parametrize("precision", ["int8", "uint8"])
@pytest.mark.parametrize("where", ["input", "calibration", "self"])
def test_nan_raises_with_count_and_position(rng, precision, where):
    x = rng.standard_normal((50, 12)).astype(np.float32)
    calib = rng.standard_normal((50, 12)).astype(np.float32)
    target = calib if where == "calibration" else x
    target[7, 3] = np.nan
    target[9, 0] = np.nan
    kw = {"calibration_embeddings": calib} if where != "self" else {}
    with pytest.raises(ValueError, match=r"2 NaN value\(s\) \(first at index \(7, 3\)\)"):
        quantize_embeddings(x, precision, **kw)


def test_error_ranges_shape(rng):
    x = rng.standard_normal((5, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 8\).*got shape \(2, 7\)"):
        quantize_embeddings(x, "int8", ranges=np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 8\).*got shape \(3, 8\)"):
        quantize_embeddings(x, "int8", ranges=np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match="finite"):
        quantize_embeddings(x, "int8", ranges=np.array([[np.nan] * 8, [1.0] * 8]))


def test_error_garbage_input():
    for bad in ("abc", None, {"a": 1}, np.array(["x", "y"])):
        with pytest.raises(TypeError, match="embeddings"):
            quantize_embeddings(bad, "binary")
    with pytest.raises(TypeError, match="torch tensor"):
        quantize_embeddings(np.ones((3, 4), np.float32), "int8",
                            calibration_embeddings=torch.ones(5, 4))


def test_dequantize_matches_upstream_formula(rng):
    x = rng.standard_normal((100, 20)).astype(np.float32)
    ranges = quantlib.calibration_ranges(x)
    for p in ("int8", "uint8"):
        codes = quantize_embeddings(x, p, ranges=ranges)
        from sentence_transformers.util.quantization import _dequantize_embeddings

        np.testing.assert_array_equal(quantlib.dequantize_embeddings(codes, p, ranges),
                                      _dequantize_embeddings(codes, p, ranges))
