"""Command-line interface: ``stablernn train | demo | pretrain | diagnose | sweep | report | ...``.

Each command lives in a module of this package that registers itself on :data:`app`; add new modules to
``COMMAND_MODULES``. User errors (bad options, unknown names, malformed files, NaN/inf during training, a missing
optional package, a run another process is training) print one ``error:`` line with the fix and exit 2; set
``STABLERNN_DEBUG=1`` to see the traceback. ``-h`` and ``--help`` work on every command.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings

from ..errors import MissingDependencyError, NonFiniteError, RunBusyError
from .app import app

COMMAND_MODULES = ["train", "data", "snn", "dynamics", "sweep", "lsc"]

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
                                                NonFiniteError, MissingDependencyError, RunBusyError)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``stablernn`` console script."""
    debug = bool(os.environ.get("STABLERNN_DEBUG"))
    previous = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _one_line_warning  # the CLI's warnings are messages for people, not code sites
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit:
        raise
    except USER_ERRORS as e:
        if debug:
            raise
        text = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the message held
        print(f"error: {text}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        warnings.formatwarning = previous  # main() called in-process (tests, notebooks) leaves no trace


__all__ = ["USER_ERRORS", "app", "main"]
