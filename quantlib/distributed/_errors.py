"""The errors of quantlib.distributed (no Dask here)."""
from __future__ import annotations

from .._format import FormatError


class ShardError(RuntimeError):
    """A shard did not answer (its worker died, the call timed out or raised)
    after all retries.

    Attributes
    ----------
    shard : int
        Index of the shard in the manifest.
    path : str
        The shard's file.
    attempts : int
        Calls made (1 + retries used).
    cause : BaseException
        The last error (also chained as ``__cause__``).
    """

    def __init__(self, shard: int, path: str, cause: BaseException, attempts: int = 1, what: str = "search"):
        self.shard = shard
        self.path = path
        self.attempts = attempts
        self.cause = cause
        self.what = what
        super().__init__(f"shard {shard} ({path}) failed to {what} after {attempts} attempt(s): "
                         f"{type(cause).__name__}: {cause}")

    def __reduce__(self):
        return (ShardError, (self.shard, self.path, self.cause, self.attempts, self.what))


class ManifestError(FormatError):
    """The manifest is malformed or does not match its shard files (missing
    file, size, kind, precision, dimension, count, ids or ranges mismatch)."""


def _deterministic(exc: BaseException) -> bool:
    """Errors that a retry cannot fix (bad input, file/manifest mismatch)."""
    return isinstance(exc, (ValueError, TypeError))
