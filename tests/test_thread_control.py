"""Process-wide thread control: set_num_threads / QUANTLIB_NUM_THREADS, and
threads= bounding numpy's BLAS on the float32 path."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import quantlib
from quantlib import _threads


@pytest.fixture(autouse=True)
def _restore():
    yield
    quantlib.set_num_threads(None)


def test_default_is_every_usable_core():
    assert quantlib.get_num_threads() == _threads.usable_cores()


def test_set_num_threads_changes_the_default_and_explicit_threads_win(monkeypatch):
    calls = []
    real = _threads.split_range

    def spy(n, parts, align=1):
        calls.append(parts)
        return real(n, parts, align)

    S = sys.modules["quantlib.search"]  # the module (quantlib.search is also the function)
    monkeypatch.setattr(S, "split_range", spy)
    c = np.random.default_rng(0).integers(0, 256, (70_000, 64), dtype=np.uint8)
    quantlib.set_num_threads(1)
    assert quantlib.get_num_threads() == 1
    ref = quantlib.search(c[:3], c, 5, precision="ubinary")
    assert calls == []  # one thread: no split
    got = quantlib.search(c[:3], c, 5, precision="ubinary", threads=2)
    assert calls == [2]
    np.testing.assert_array_equal(ref[1], got[1])


@pytest.mark.parametrize("bad", [0, -1])
def test_set_num_threads_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="threads must be >= 1"):
        quantlib.set_num_threads(bad)
    with pytest.raises(TypeError, match="threads must be an int"):
        quantlib.set_num_threads(1.5)


def _run(env_value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QUANTLIB_NUM_THREADS=env_value)
    return subprocess.run([sys.executable, "-c", "import quantlib; print(quantlib.get_num_threads())"],
                          env=env, capture_output=True, text=True, timeout=120)


def test_environment_variable():
    r = _run("1")
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
    r = _run("lots")
    assert r.returncode != 0 and "QUANTLIB_NUM_THREADS must be a positive integer, got 'lots'" in r.stderr


def test_float32_search_honours_threads(monkeypatch):
    """The float32 path runs quantlib's fused kernel on quantlib's threads (it
    used to call numpy's BLAS, whose own threads ignored threads=)."""
    S = sys.modules["quantlib.search"]
    calls = []
    real = S._core.f32_topk

    def spy(q, c, *a):
        calls.append((q.shape[0], c.shape[0]))
        return real(q, c, *a)

    monkeypatch.setattr(S._core, "f32_topk", spy)
    c = np.random.default_rng(1).standard_normal((20_000, 64)).astype(np.float32)
    one = quantlib.search(c[:4], c, 3, precision="float32", threads=1)
    assert calls == [(4, 20_000)]
    calls.clear()
    two = quantlib.search(c[:4], c, 3, precision="float32", threads=2)
    assert len(calls) == 2 and sum(n for _, n in calls) == 20_000  # the corpus split in two
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
