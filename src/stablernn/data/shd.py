"""Spiking Heidelberg Digits (Cramer et al. 2020) from the published HDF5 files, binned into dense frames.

Files: ``shd_train.h5`` and ``shd_test.h5`` (or their ``.h5.gz``, decompressed once into the cache dir), searched in
``--data-dir`` (``cfg.data_dir``), ``$STABLERNN_DATA`` and their ``shd`` / ``SHD`` / ``hdspikes`` sub-folders.
Each file holds ``spikes/times`` (ragged float, seconds), ``spikes/units`` (ragged uint16, 0..699), ``labels``
(0..19), ``extra/speaker`` and ``extra/keys``.

Binning (the intended one, not the released code's, see docs/data.md): ``T = round(window / dt)`` bins,
left-closed ``[k dt, (k+1) dt)``; a spike exactly at the window end goes to the last bin, later spikes are dropped.
``shd_channels = C`` sums groups of ``700 / C`` neighbouring units. Frames are stored as uint8 (binary, or counts
capped at 255) and turned into float one batch at a time, so 8156 x 140 x 700 frames cost 0.8 GB, not 3.2 GB.

The dense frames are cached under the cache dir, keyed by the source file (path, size, mtime) and every
preprocessing option, and written atomically.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .base import DataError, TaskData, TaskInfo
from .config import DataConfig
from .files import atomic_path, cache_root, data_roots, describe_roots, require
from .loader import TensorLoader, as_index, carve_validation, moments
from .registry import missing_module, register

N_UNITS = 700
N_CLASSES = 20
COUNTS = {"train": 8156, "test": 2264}
EDGE_TOL = 1e-4  # in bins; see bin_spikes
CACHE_VERSION = 1  # bump when the binning changes, so old caches are not reused
_SUBDIRS = ["", "shd", "SHD", "hdspikes"]
_REQUIRED_KEYS = ("spikes/times", "spikes/units", "labels")


# ------------------------------------------------------------------------------------------------------ binning
def n_bins(dt: float, window: float) -> int:
    """Number of time bins ``round(window / dt)``; checks both are positive."""
    if dt <= 0 or window <= 0:
        raise DataError(f"SHD: shd_dt and shd_window must be > 0, got {dt}, {window}")
    return max(1, round(window / dt))


def bin_spikes(
    times: Sequence[np.ndarray],
    units: Sequence[np.ndarray],
    dt: float,
    window: float,
    n_channels: int = N_UNITS,
    frames: str = "binary",
    max_chunk_cells: int = 1 << 24,
) -> np.ndarray:
    """Bin ragged spike trains into dense frames ``[N, T, C]`` uint8.

    ``times[i]``: spike times in seconds of sample ``i``; ``units[i]``: their units in ``0..699``. Bin of a spike:
    ``min(floor(t / dt), T - 1)`` for ``0 <= t <= window`` (edges with a 1e-4 bin tolerance for float32 times);
    spikes after the window are dropped. Channel:
    ``unit // (700 // n_channels)``. ``frames``: "binary" (any spike -> 1) or "count" (capped at 255).
    Vectorised over chunks of samples so memory stays bounded (~``max_chunk_cells`` int64 counters per chunk).
    """
    if len(times) != len(units):
        raise DataError(f"SHD: {len(times)} spike-time rows but {len(units)} unit rows")
    if n_channels < 1 or N_UNITS % n_channels:
        raise DataError(f"shd_channels must divide 700 (e.g. 700, 350, 140, 100, 70), got {n_channels}")
    if frames not in ("binary", "count"):
        raise DataError(f"shd_frames must be 'binary' or 'count', got {frames!r}")
    t_bins = n_bins(dt, window)
    group = N_UNITS // n_channels
    n = len(times)
    cells = t_bins * n_channels
    out = np.zeros((n, t_bins, n_channels), dtype=np.uint8)
    step = max(1, max_chunk_cells // cells)
    for start in range(0, n, step):
        stop = min(n, start + step)
        lengths = np.fromiter((len(times[i]) for i in range(start, stop)), dtype=np.int64, count=stop - start)
        if lengths.sum() == 0:
            continue
        t = np.concatenate([np.asarray(times[i], dtype=np.float64) for i in range(start, stop)])
        u = np.concatenate([np.asarray(units[i], dtype=np.int64) for i in range(start, stop)])
        row = np.repeat(np.arange(stop - start, dtype=np.int64), lengths)
        s = t / dt  # time in bins
        # EDGE_TOL: the files store float32 (or float16) seconds, so a spike meant at k*dt may read as a hair below
        # it; the tolerance puts it in bin k (and keeps a spike at the window end), shifting edges by < 1 us
        keep = (s >= 0) & (s <= window / dt + EDGE_TOL)
        b = np.minimum(np.floor(s[keep] + EDGE_TOL).astype(np.int64), t_bins - 1)
        flat = row[keep] * cells + b * n_channels + u[keep] // group
        block = out[start:stop].reshape(-1)
        if frames == "binary":
            block[flat] = 1
        else:
            counts = np.bincount(flat, minlength=block.size)
            block[:] = np.minimum(counts, 255).astype(np.uint8)
    return out


# -------------------------------------------------------------------------------------------------------- files
def find_shd(cfg: DataConfig) -> dict[str, Path]:
    """Locate ``shd_train.h5`` and ``shd_test.h5`` (or ``.h5.gz``): keys "train", "test"."""
    for root, _ in data_roots(cfg):
        for sub in _SUBDIRS:
            folder = root / sub if sub else root
            found = {}
            for split in ("train", "test"):
                for name in (f"shd_{split}.h5", f"shd_{split}.h5.gz"):
                    if (folder / name).is_file():
                        found[split] = folder / name
                        break
            if len(found) == 2:
                return found
    raise DataError(
        f"no SHD files (shd_train.h5 and shd_test.h5, or .h5.gz) found; searched {describe_roots(cfg)} and the "
        f"sub-folders {', '.join(s for s in _SUBDIRS if s)}; download them once from "
        "https://zenkelab.org/datasets/ (compneuro.net) and pass --data-dir or set $STABLERNN_DATA"
    )


def _plain_h5(path: Path, cfg: DataConfig) -> Path:
    """``.h5.gz`` -> a decompressed copy in the cache dir (h5py needs a seekable file); ``.h5`` as is."""
    if path.suffix != ".gz":
        return path
    root = cache_root(cfg)
    if root is None:
        raise DataError(f"{path}: gzip-compressed and caching is off (cache_dir=''); run `gunzip {path}` first")
    st = path.stat()
    target = root / f"{path.name[:-3]}.{st.st_size}-{st.st_mtime_ns}"
    if not target.is_file():
        try:
            with atomic_path(target) as tmp, gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: cannot decompress ({e})") from e
    return target


def read_shd(
    path: str | Path, *, need_speakers: bool = False, count: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Read one SHD HDF5 file: ``(times, units, labels [N] int64, speakers [N] int64 or None)``.

    ``times`` / ``units`` are sequences of 1-D arrays (ragged). Validates keys, lengths, label range 0..19, unit
    range 0..699 and non-negative finite times; each problem raises one :class:`DataError` naming the file.
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: cannot open as HDF5 ({e})") from e
    with f:
        keys = _REQUIRED_KEYS + (("extra/speaker",) if need_speakers else ())
        for key in keys:
            require(key in f, path, f"missing HDF5 key '{key}' (an SHD file has spikes/times, spikes/units, labels, "
                    "extra/speaker)")
        try:
            times = f["spikes/times"][()]
            units = f["spikes/units"][()]
            labels = np.asarray(f["labels"][()], dtype=np.int64)
            speakers = np.asarray(f["extra/speaker"][()], dtype=np.int64) if "extra/speaker" in f else None
        except (OSError, ValueError, TypeError) as e:
            raise DataError(f"{path}: cannot read the SHD datasets ({e})") from e
    n = len(labels)
    require(labels.ndim == 1, path, f"'labels' has shape {labels.shape}, expected [N]")
    require(len(times) == n and len(units) == n, path,
            f"{len(times)} spike-time rows, {len(units)} unit rows and {n} labels: the counts must agree")
    if speakers is not None:
        require(len(speakers) == n, path, f"{len(speakers)} speakers for {n} labels")
    if count is not None:
        require(n == count, path, f"{n} samples, expected {count} (set check_counts=False for subsets)")
    bad = np.flatnonzero((labels < 0) | (labels >= N_CLASSES))
    require(len(bad) == 0, path, f"label out of range 0..19: {labels[bad[0]] if len(bad) else ''} at sample "
            f"{bad[0] if len(bad) else ''}")
    for i in range(n):
        ti, ui = times[i], units[i]
        if len(ti) != len(ui):
            raise DataError(f"{path}: sample {i} has {len(ti)} spike times but {len(ui)} units")
        if len(ui) and (ui.min() < 0 or ui.max() >= N_UNITS):
            raise DataError(f"{path}: sample {i} has a unit out of range 0..699 ({int(ui.max())})")
        if len(ti) and not (np.isfinite(ti).all() and ti.min() >= 0):
            raise DataError(f"{path}: sample {i} has a negative or non-finite spike time")
    return times, units, labels, speakers


def _cache_key(path: Path, cfg: DataConfig) -> str:
    st = path.stat()
    key = {
        "version": CACHE_VERSION,
        "file": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "dt": cfg.shd_dt,
        "window": cfg.shd_window,
        "channels": cfg.shd_channels,
        "frames": cfg.shd_frames,
        "check_counts": cfg.check_counts,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def load_shd_split(
    cfg: DataConfig, split: str, path: Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Dense frames of one file: ``(frames [N, T, C] uint8, labels [N] int64, speakers [N] int64 or None)``.

    Uses (and fills) the cache unless ``cfg.cache_dir == ""``. ``path`` overrides the file search.
    """
    path = path if path is not None else find_shd(cfg)[split]
    plain = _plain_h5(path, cfg)
    root = cache_root(cfg)
    cache = root / f"shd_{split}_{_cache_key(plain, cfg)}.npz" if root is not None else None
    if cache is not None and cache.is_file():
        try:
            with np.load(cache) as z:
                spk = z["speakers"] if z["has_speakers"] else None
                return z["frames"], z["labels"], spk
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache (e.g. disk full when written): rebuild and overwrite it
    times, units, labels, speakers = read_shd(plain, count=COUNTS[split] if cfg.check_counts else None)
    frames = bin_spikes(times, units, cfg.shd_dt, cfg.shd_window, cfg.shd_channels, cfg.shd_frames)
    if cache is not None:
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, frames=frames, labels=labels, has_speakers=speakers is not None,
                     speakers=speakers if speakers is not None else np.zeros(0, np.int64))
    return frames, labels, speakers


def speaker_split(speakers: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices holding out whole speakers: random speakers (seeded) until >= ``fraction`` of samples."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.unique(speakers))
    target = fraction * len(speakers)
    held: list[int] = []
    n_held = 0
    for s in order:
        if n_held >= target or len(held) == len(order) - 1:  # keep at least one speaker for training
            break
        held.append(int(s))
        n_held += int((speakers == s).sum())
    val_mask = np.isin(speakers, held)
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


# ------------------------------------------------------------------------------------------------------ builder
def _check(cfg: DataConfig) -> str | None:
    missing = missing_module("h5py", "shd: h5py is not installed; pip install h5py")
    if missing:
        return missing
    try:
        find_shd(cfg)
    except DataError as e:
        return f"shd: {e}"
    return None


def _to_float(b: torch.Tensor) -> torch.Tensor:
    return b.to(torch.float32)


@register("shd", "Spiking Heidelberg Digits: binned spike frames [T, 700 or fewer channels], 20 classes (HDF5)",
          check=_check)
def build_shd(cfg: DataConfig) -> TaskData:
    """SHD: ``x`` ``[B, T, C]`` float (0/1 or counts), ``T = round(shd_window / shd_dt)`` (140 by default),
    ``C = shd_channels``; ``y`` ``[B]`` in 0..19.

    Test = the whole test file. Validation from the train file only: ``val_split`` "random" (stratified by label,
    seeded), "tail" (the last ``val_fraction``, like the released code) or "speakers" (whole speakers held out).
    Reads ``data_dir, cache_dir, shd_dt, shd_window, shd_channels, shd_frames, val_fraction, val_split, seed,
    check_counts`` and the batch sizes.
    """
    files = find_shd(cfg)
    x_pool, y_pool, spk = load_shd_split(cfg, "train", files["train"])
    x_test, y_test, _ = load_shd_split(cfg, "test", files["test"])
    if cfg.val_split == "speakers":
        if spk is None:
            raise DataError(f"{files['train']}: val_split='speakers' needs the HDF5 key 'extra/speaker'")
        tr, va = speaker_split(spk, cfg.val_fraction, cfg.seed)
    else:
        tr, va = carve_validation(y_pool, len(y_pool), cfg.val_fraction, cfg.val_split, cfg.seed)
    x_tr = x_pool[tr]
    if cfg.shd_frames == "binary":  # exact and fast for 0/1 frames: the mean is the spike rate
        mean = float(np.count_nonzero(x_tr)) / max(1, x_tr.size)
        var = mean * (1 - mean)
    else:
        mean, var = moments(x_tr)
    info = TaskInfo(
        name="shd",
        input_size=x_pool.shape[2],
        output_size=N_CLASSES,
        seq_len=x_pool.shape[1],
        kind="classify",
        input_mean=mean,
        input_var=var,
        extra={"n_train": len(tr), "n_val": len(va), "n_test": len(y_test), "dt": cfg.shd_dt,
               "window": cfg.shd_window, "frames": cfg.shd_frames, "val_split": cfg.val_split},
    )
    y_t = torch.from_numpy(y_pool)
    return TaskData(
        info,
        TensorLoader(torch.from_numpy(x_tr), y_t[as_index(tr)], cfg.batch_size, shuffle=True, seed=cfg.seed,
                     transform=_to_float),
        TensorLoader(torch.from_numpy(x_pool[va]), y_t[as_index(va)], cfg.eval_batch_size, transform=_to_float),
        TensorLoader(torch.from_numpy(x_test), torch.from_numpy(y_test), cfg.eval_batch_size, transform=_to_float),
    )


def write_shd(
    path: str | Path,
    times: Sequence[np.ndarray],
    units: Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    speakers: Sequence[int] | np.ndarray | None = None,
) -> None:
    """Write spike trains in the published SHD HDF5 layout (ragged float ``spikes/times``, ragged uint16
    ``spikes/units``, uint8 ``labels``, ``extra/speaker``, ``extra/keys``); for tests, benchmarks and subsets."""
    import h5py

    n = len(labels)
    speakers = np.zeros(n, np.uint16) if speakers is None else np.asarray(speakers, np.uint16)
    with h5py.File(path, "w") as f:
        t_ds = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.dtype("float32")))
        u_ds = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.dtype("uint16")))
        for i in range(n):
            t_ds[i] = np.asarray(times[i], dtype=np.float32)
            u_ds[i] = np.asarray(units[i], dtype=np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint8))
        f.create_dataset("extra/speaker", data=speakers)
        f.create_dataset("extra/keys", data=np.array([f"digit-{i}".encode() for i in range(N_CLASSES)]))
