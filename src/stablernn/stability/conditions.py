"""Moved (see the note in stablernn/stability/__init__.py); this alias is kept for one release."""
from stablernn.snn.conditions import *  # noqa: F403
