"""Tasks: train / validation / test loaders and a :class:`TaskInfo`, built by name from a :class:`DataConfig`.

Importing this package registers every task (each module registers its builders on import).
"""
from __future__ import annotations

from . import digits, mnist, mnist1d, ptb, shd, synthetic  # noqa: F401  (registration side effects)
from .base import DataError, TaskData, TaskInfo
from .check import check_task
from .config import DataConfig
from .registry import availability, describe, load_task, register, task_names
from .synthetic import memory_capacity_stream

__all__ = [
    "DataConfig",
    "DataError",
    "TaskData",
    "TaskInfo",
    "availability",
    "check_task",
    "describe",
    "load_task",
    "memory_capacity_stream",
    "register",
    "task_names",
]
