"""The command-line applications (``quantlib demo``, ``bench``, ``build``,
``search``, ``inspect``, ``info``). They use the public library API only and are
not part of it: import :mod:`quantlib` for the library."""
