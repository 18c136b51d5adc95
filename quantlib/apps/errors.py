"""The error type of the command-line applications."""
from __future__ import annotations


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""
