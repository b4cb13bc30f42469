"""Moved (see the note in stablernn/stability/__init__.py); this alias is kept for one release."""
from stablernn.lsc.config import *  # noqa: F403
