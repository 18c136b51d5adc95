"""Small helpers shared by the test files."""
from __future__ import annotations

import contextlib
from typing import Iterator

import quantlib


@contextlib.contextmanager
def use_isa(level: str) -> Iterator[str]:
    """Run the block on kernel level ``level`` (any name set_isa takes), then
    restore the level that was active before, even on error."""
    prev = quantlib.get_isa()
    active = quantlib.set_isa(level)
    try:
        yield active
    finally:
        quantlib.set_isa(prev)
