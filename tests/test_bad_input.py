"""Bad-input audit: every public function x bad input -> the documented error
(type AND a message naming the argument) or the defined result.

The table lives in ``CASES`` below; docs/bad_input.md is rendered from it
(``python tests/test_bad_input.py > docs/bad_input.md``) and a test checks the
two stay in sync.
"""
from __future__ import annotations

import numpy as np
import pytest

import quantlib


# ------------------------------------------------------- regression tests
def test_nd_self_calibration_of_empty_input_is_valueerror():
    # fuzz finding: (2, 0, d) input raised IndexError (as upstream does)
    for shape in [(2, 0, 3), (0, 2, 3)]:
        with pytest.raises(ValueError, match="empty embeddings"):
            quantlib.quantize_embeddings(np.ones(shape, np.float32), "int8")
    out = quantlib.quantize_embeddings(np.ones((2, 3, 0), np.float32), "int8")
    assert out.shape == (2, 3, 0) and out.dtype == np.int8


def test_torch_tensor_arguments_are_converted_or_refused_clearly():
    torch = pytest.importorskip("torch")
    # fuzz finding: requires_grad tensors as codes / ranges raised RuntimeError
    r = torch.tensor([[0.0, 0.0], [1.0, 2.0]], requires_grad=True)
    codes = torch.tensor([[1, 2]], dtype=torch.int8)
    want = quantlib.dequantize_embeddings(codes.numpy(), "int8", r.detach().numpy())
    np.testing.assert_array_equal(quantlib.dequantize_embeddings(codes, "int8", r), want)
    x = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(quantlib.quantize_embeddings(x, "uint8", ranges=r),
                                  quantlib.quantize_embeddings(x, "uint8", ranges=r.detach().numpy()))
    # audit finding: a tensor with no host copy raised NotImplementedError
    meta = torch.empty(3, 4, device="meta")
    for call in (lambda: quantlib.quantize_embeddings(meta, "binary"),
                 lambda: quantlib.calibration_ranges(meta)):
        with pytest.raises(TypeError, match="embeddings.*meta"):
            call()
    with pytest.raises(TypeError, match="ranges.*meta"):
        quantlib.quantize_embeddings(x, "uint8", ranges=torch.empty(2, 2, device="meta"))


def test_calibration_errors_name_the_argument_they_come_from():
    # audit finding: errors said "ranges ..." or numpy's "zero-size array ..."
    x = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="calibration_embeddings have 8 dims but embeddings have 16"):
        quantlib.quantize_embeddings(x, "int8", calibration_embeddings=x[:, :8])
    with pytest.raises(ValueError, match="calibration_embeddings must contain at least one row"):
        quantlib.quantize_embeddings(x, "int8", calibration_embeddings=x[:0])
    bad = np.vstack([x, np.full(16, np.inf, np.float32)])
    with pytest.raises(ValueError, match="calibration_embeddings contain infinite values"):
        quantlib.quantize_embeddings(x, "int8", calibration_embeddings=bad)
    with pytest.raises(ValueError, match="embeddings contain infinite values"):
        quantlib.quantize_embeddings(bad, "uint8")
    # audit finding: 0-d codes raised IndexError
    with pytest.raises(ValueError, match="codes must have at least one dimension"):
        quantlib.dequantize_embeddings(np.int8(3), "int8", quantlib.calibration_ranges(x))
