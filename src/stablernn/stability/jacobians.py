"""Moved (see the note in stablernn/stability/__init__.py); this alias is kept for one release."""
from stablernn.lsc.measures import *  # noqa: F403
from stablernn.lsc.transitions import *  # noqa: F403
