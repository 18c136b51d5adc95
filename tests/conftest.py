import os

import numpy as np
import pytest

import quantlib
from helpers import use_isa

ISAS = quantlib.available_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once per kernel level this CPU supports."""
    with use_isa(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
