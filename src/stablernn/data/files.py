"""Where user-provided data and preprocessed caches live, and how cache files are written safely."""
from __future__ import annotations

import os
from pathlib import Path

from ..io import atomic_path  # noqa: F401  (re-exported: the data loaders' cache writes)
from .base import DataError
from .config import DataConfig

DATA_ENV = "STABLERNN_DATA"
CACHE_ENV = "STABLERNN_CACHE"


def data_roots(cfg: DataConfig) -> list[tuple[Path, bool]]:
    """Directories to search for user data, in order: ``cfg.data_dir`` then ``$STABLERNN_DATA``.

    Each comes with ``explicit``: True for ``cfg.data_dir`` (the user pointed at this very folder, so files lying
    directly in it count for any task), False for the environment variable (a shared root where each dataset is
    expected in its own sub-folder, though MNIST/SHD/PTB files directly in it are still found).
    """
    roots: list[tuple[Path, bool]] = []
    if cfg.data_dir:
        roots.append((Path(cfg.data_dir).expanduser(), True))
    env = os.environ.get(DATA_ENV)
    if env:
        roots.append((Path(env).expanduser(), False))
    return roots


def describe_roots(cfg: DataConfig, extra: list[Path] | None = None) -> str:
    """The searched roots as text for error messages ("no folder ..." hints at the fix)."""
    paths = [str(p) for p, _ in data_roots(cfg)] + [str(p) for p in extra or []]
    return ", ".join(paths) if paths else f"no folder (no --data-dir given and ${DATA_ENV} is not set)"


def cache_root(cfg: DataConfig) -> Path | None:
    """Cache directory: ``cfg.cache_dir``, else ``$STABLERNN_CACHE``, else ``~/.cache/stablernn``; None when
    ``cfg.cache_dir == ""`` (caching off)."""
    if cfg.cache_dir == "":
        return None
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/stablernn").expanduser()


def require(cond: bool, path: Path | str, problem: str) -> None:
    """Raise one :class:`DataError` naming the file and the problem when ``cond`` is false."""
    if not cond:
        raise DataError(f"{path}: {problem}")
