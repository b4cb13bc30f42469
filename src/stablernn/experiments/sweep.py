"""Moved (see the note in stablernn/stability/__init__.py); this alias is kept for one release."""
from stablernn.sweep.runner import *  # noqa: F403
from stablernn.sweep.spec import *  # noqa: F403
