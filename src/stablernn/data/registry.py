"""Task registry: builders register under a name; ``load_task`` builds one from a :class:`DataConfig`.

A builder is ``builder(cfg: DataConfig) -> TaskData``. It may also give an availability check
``check(cfg) -> str | None`` (``None``: the task can be built here; else the reason it cannot, with the fix), which
must be cheap (look for files, import a package) so ``stablernn data list`` stays fast.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from .base import DataError, TaskData
from .config import DataConfig
from .loader import RepeatLoader

Builder = Callable[[DataConfig], TaskData]
Check = Callable[[DataConfig], "str | None"]


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    description: str
    check: Check | None


_TASKS: dict[str, _Entry] = {}


def register(name: str, description: str, *, check: Check | None = None) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(cfg) -> TaskData`` as task ``name``.

    ``description``: one line for ``stablernn data list``. ``check``: optional cheap availability test (see module
    docstring); without one the task counts as always available. Registering a name twice is an error, so two
    modules cannot silently shadow each other.
    """

    def deco(builder: Builder) -> Builder:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        _TASKS[name] = _Entry(builder, description, check)
        return builder

    return deco


def missing_module(module: str, message: str) -> str | None:
    """For availability checks: ``message`` (what to install) when ``module`` cannot be imported, else ``None``."""
    try:
        importlib.import_module(module)
    except ImportError:
        return message
    return None


def task_names() -> list[str]:
    """Names of all registered tasks, sorted."""
    return sorted(_TASKS)


def describe(name: str) -> str:
    """The one-line description a task was registered with."""
    return _entry(name).description


def _entry(name: str) -> _Entry:
    try:
        return _TASKS[name]
    except KeyError:
        raise DataError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}") from None


def load_task(cfg: DataConfig) -> TaskData:
    """Build the task ``cfg.task``: train / val / test loaders and its :class:`TaskInfo`.

    ``cfg.time_repeat = k > 1`` is applied here, once for every task: each frame and per-step target is repeated
    ``k`` times along time and ``info.seq_len`` is multiplied by ``k``. Raises :class:`DataError` for an unknown name,
    bad options or unreadable data.
    """
    entry = _entry(cfg.task)
    _check_common(cfg)
    data = entry.builder(cfg)
    k = cfg.time_repeat
    if k > 1:
        info = replace(data.info, seq_len=data.info.seq_len * k, extra={**data.info.extra, "time_repeat": k})
        data = TaskData(info, RepeatLoader(data.train, k), RepeatLoader(data.val, k), RepeatLoader(data.test, k))
    return data


def availability(cfg: DataConfig | None = None) -> dict[str, str | None]:
    """For every registered task: ``None`` when it can be loaded here, else the reason and the fix."""
    cfg = cfg or DataConfig()
    out: dict[str, str | None] = {}
    for name in task_names():
        check = _TASKS[name].check
        if check is None:
            out[name] = None
            continue
        try:
            out[name] = check(replace(cfg, task=name))
        except DataError as e:  # a check that raises still answers the question
            out[name] = f"{name}: {e}"
    return out


def _check_common(cfg: DataConfig) -> None:
    """Options every task reads, checked again in case the config was changed after it was made; a wrong value
    fails here with the option's name, not deep inside a builder."""
    cfg.__post_init__()
