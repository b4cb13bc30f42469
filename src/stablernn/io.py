"""Atomic writes, run locks and safe loading.

- A run directory never holds a half-written file: everything goes to a temporary file in the same folder, then
  ``os.replace``. Files get the mode a plain ``open()`` would give them (``0o666`` minus the umask), so
  collaborators on shared storage can read results (``mkstemp`` alone would leave ``0o600``).
- Temporary files orphaned by a killed process (``.<name>.*.tmp``) are removed by :func:`clean_temp_files`, which
  the training loop calls under the run's lock on its next start.
- :class:`RunLock`: an OS file lock (``flock``) held by the live process training a run; the kernel frees it
  when that process dies, however it dies, so "running" is judged by the lock and never by a status string.
- Checkpoints are read with ``weights_only=True`` (no unpickling of arbitrary objects).
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch

from .errors import RunBusyError

LOCK_FILE = ".lock"
_umask_lock = threading.Lock()


def file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (``0o666 & ~umask``)."""
    with _umask_lock:  # reading the umask means setting it: keep other threads out of the gap
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """A temporary path next to ``target`` for writers that need a file name (gzip, h5py); renamed onto ``target``
    in one step on success (the umask's mode, like every file here), removed on failure."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, file_mode())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename."""
    _atomic(Path(path), lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    _atomic(Path(path), lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` via a temporary file and a rename."""
    _atomic(Path(path), lambda f: torch.save(obj, f))


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """``fig.savefig`` (matplotlib) via a temporary file and a rename; the format comes from the suffix."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    _atomic(path, lambda f: fig.savefig(f, **kwargs))


def clean_temp_files(folder: str | Path, older_than: float = 0.0) -> list[Path]:
    """Remove the temporary files (``.<name>.*.tmp``) an interrupted atomic write left in ``folder``; returns
    them. Call it only while no other process writes there (e.g. under the run's :class:`RunLock`)."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.glob(".*.tmp"):
        try:
            if p.is_file() and now - p.stat().st_mtime >= older_than:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:  # another cleaner got there first
            pass
    return removed


class RunLock:
    """An exclusive, non-blocking OS lock on ``folder/.lock``, held while a process trains the run in ``folder``.

    ``flock`` locks belong to the open file, so the kernel releases them when the holder dies (SIGKILL included);
    on Linux NFS mounts they are emulated with POSIX byte-range locks, which the server also frees. Re-entrant
    within one process (a sweep worker locks the run, then :func:`stablernn.train.fit` locks it again).
    """

    _held: ClassVar[dict[str, tuple[int, int]]] = {}  # resolved lock path -> (fd, depth), this process only
    _guard = threading.Lock()

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._key = ""

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunBusyError` naming the holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        with RunLock._guard:
            if key in RunLock._held:
                fd, depth = RunLock._held[key]
                RunLock._held[key] = (fd, depth + 1)
                self._key = key
                return self
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_fd(fd)
                os.close(fd)
                raise RunBusyError(f"run {self.folder} is being trained by another process ({holder or 'unknown'}); "
                                   "wait for it to finish, or pick another --name") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
            RunLock._held[key] = (fd, 1)
            self._key = key
        return self

    def release(self) -> None:
        with RunLock._guard:
            if self._key not in RunLock._held:
                return
            fd, depth = RunLock._held[self._key]
            if depth > 1:
                RunLock._held[self._key] = (fd, depth - 1)
            else:
                del RunLock._held[self._key]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            self._key = ""

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def is_locked(folder: str | Path) -> bool:
    """Whether a live process (this one included) holds the :class:`RunLock` of ``folder``."""
    path = Path(folder) / LOCK_FILE
    if not path.exists():
        return False
    if str(path.resolve()) in RunLock._held:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except PermissionError:  # another user's private run (umask 077): we cannot tell, so do not claim it runs
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _read_fd(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""


_UNSAFE_ADVICE = "weights_only"


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """Load a checkpoint or weights file safely (``weights_only=True``); one clear line for missing or corrupt
    files, with the fix, and never torch's advice to retry with ``weights_only=False`` (that would run any code a
    crafted file holds)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        text = str(e)
        if "Weights only load failed" in text or _UNSAFE_ADVICE in text:
            why = "it holds Python objects besides tensors, which stablernn refuses to unpickle"
        else:
            first = text.strip().splitlines()[0] if text.strip() else ""
            why = f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__
        raise ValueError(f"cannot read checkpoint {path} ({why}); it is truncated or not a stablernn/PyTorch "
                         f"weights file: delete it to start that run over (or pass --overwrite)") from None


def load_state_dict_from(path: str | Path) -> dict[str, torch.Tensor]:
    """A model state dict from a weights file, a training checkpoint (``{"model": ...}``) or an LSC output."""
    obj = load_checkpoint(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a model state dict")
    return obj


def load_weights_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``model.load_state_dict(state)`` with one clear error naming the layers whose names or sizes differ."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} is {list(state[k].shape)} there, {list(own[k].shape)} here" for k in own
              if k in state and state[k].shape != own[k].shape]
    problems = shapes + [f"{k} missing there" for k in missing] + [f"{k} unknown here" for k in extra]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"weights in {source} do not fit this model: " + "; ".join(problems[:3]) + more
                         + "; build the model with the cell, --layers and --width of the run that wrote them")
    model.load_state_dict(state)


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
