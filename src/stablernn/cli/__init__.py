"""Command-line interface: ``stablernn train | demo | pretrain | diagnose | sweep | report | ...``.

Each command lives in a module of this package that registers itself on :data:`app`; add new modules to
``COMMAND_MODULES``. User errors (bad options, unknown names, malformed files) print one ``error:`` line and exit 2;
set ``STABLERNN_DEBUG=1`` to see the traceback.
"""
from __future__ import annotations

import importlib
import os
import sys

from .app import app

COMMAND_MODULES = ["train", "data", "snn", "dynamics", "sweep", "lsc"]

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``stablernn`` console script."""
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit:
        raise
    except USER_ERRORS as e:
        if os.environ.get("STABLERNN_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["app", "main"]
