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
