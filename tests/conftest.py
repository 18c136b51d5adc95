import os

import numpy as np
import pytest

import quantlib

ISAS = quantlib.available_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once per kernel level this CPU supports."""
    prev = quantlib.get_isa()
    quantlib.set_isa(request.param)
    try:
        yield request.param
    finally:
        quantlib.set_isa(prev)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
