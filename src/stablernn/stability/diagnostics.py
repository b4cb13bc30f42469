"""Moved (see the note in stablernn/stability/__init__.py); this alias is kept for one release."""
from stablernn.diagnostics import *  # noqa: F403
from stablernn.lsc.radii import *  # noqa: F403
