"""Error types the command line reports as one line (``error: ...``, exit code 2) instead of a traceback."""
from __future__ import annotations


class MissingDependencyError(ImportError):
    """An optional package a feature needs is not installed; the message holds the install command."""


class RunBusyError(RuntimeError):
    """Another live process holds the run's lock (it is training that run right now)."""


class NonFiniteError(RuntimeError):
    """Training produced a NaN/inf; the message names the epoch, step and the first non-finite tensor."""
