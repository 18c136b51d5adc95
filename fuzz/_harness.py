"""What every fuzz target here shares (imported by fuzz/fuzz_*.py; not a target itself: run.sh runs fuzz_*.py)."""
from __future__ import annotations

import hashlib
import os


def save_finding(data: bytes, exc: BaseException) -> None:
    """Keep a failing input in $QL_FUZZ_ARTIFACTS (with its exception in a .txt beside it) even if the process
    then dies before libFuzzer writes its own artifact (seen once: SIGALRM during exit with pool threads)."""
    out = os.environ.get("QL_FUZZ_ARTIFACTS")
    if not out:
        return
    os.makedirs(out, exist_ok=True)
    name = os.path.join(out, "finding-" + hashlib.sha1(data).hexdigest())
    with open(name, "wb") as f:
        f.write(data)
    with open(name + ".txt", "w") as f:
        f.write(f"{type(exc).__name__}: {exc}\n")
