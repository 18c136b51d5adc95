import os

import numpy as np
import pytest

import quantlib
from helpers import use_isa

ISAS = quantlib.available_isas()


def pytest_configure(config):
    """The markers and the light default run also hold when the tests run
    without the repository's pyproject.toml (tools/verify_dist.sh and
    tools/numpy_matrix.sh run a copy of tests/ against an installed wheel)."""
    config.addinivalue_line("markers", "slow: larger sizes (still part of the default run)")
    config.addinivalue_line("markers", "heavy: soak loops and multi-GB cases; `pytest -m heavy` runs them")
    if not config.option.markexpr:
        config.option.markexpr = "not heavy"


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once per kernel level this CPU supports."""
    with use_isa(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
