"""MNIST and Fashion-MNIST from the published IDX files, as sequence tasks.

Tasks (``f`` prefix = Fashion-MNIST, read the same way):

- ``smnist`` / ``fsmnist``: pixel by pixel, ``[B, 784, 1]`` in [0, 1];
- ``psmnist`` / ``fpsmnist``: the same with one fixed, seeded pixel permutation;
- ``rowmnist`` / ``frowmnist``: row by row, ``[B, 28, 28]``;
- ``slmnist`` / ``fslmnist``: spike-latency code (docs/data.md), ``[B, 100, 784]`` binary: each pixel >= 6/255 spikes
  once, brighter pixels earlier. ``slmnist_layout="original"`` gives the released code's reshaped layout (docs/data.md).

Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each plain or ``.gz``, also spelt ``train-images.idx3-ubyte``; searched in ``--data-dir``
(``cfg.data_dir``), ``$STABLERNN_DATA`` and their ``MNIST/raw`` (torchvision), ``mnist``, ``FashionMNIST/raw``,
``fashion-mnist`` ... sub-folders, and for Fashion-MNIST also Debian's ``/usr/share/datasets/fashion-mnist``.
The images are stored as uint8 and encoded one batch at a time, so even sl-MNIST (4.7 GB as dense bytes) costs
~50 MB of memory.
"""
from __future__ import annotations

import functools
import gzip
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import DataError, TaskData, TaskInfo
from .config import DataConfig
from .files import data_roots, describe_roots, require
from .loader import TensorLoader, as_index, carve_validation, moments
from .registry import register

IDX_UBYTE = 0x08
N_TRAIN, N_TEST = 60000, 10000
SL_STEPS = 100  # sl-MNIST time steps
SL_TAU = 50.0  # latency code's effective time constant (docs/data.md)
SL_THRESHOLD = 0.2
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

_SUBDIRS = {
    "mnist": ["MNIST/raw", "mnist/raw", "MNIST", "mnist"],
    "fashion": ["FashionMNIST/raw", "fashion-mnist/raw", "FashionMNIST", "fashion-mnist", "fashion_mnist",
                "fmnist"],
}
_STEMS = {
    ("train", "images"): "train-images",
    ("train", "labels"): "train-labels",
    ("test", "images"): "t10k-images",
    ("test", "labels"): "t10k-labels",
}


# ------------------------------------------------------------------------------------------------------ IDX files
def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or gzip, detected by content) as a uint8 array.

    Validates the magic number (``0x00 0x00 0x08 ndim``), the number of dimensions when ``ndim`` is given, and that
    the payload holds exactly the product of the dimensions. Any problem raises :class:`DataError` naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
            raw = gzip.decompress(raw)
    except OSError as e:  # includes gzip.BadGzipFile
        raise DataError(f"{path}: cannot read ({e})") from e
    except EOFError as e:
        raise DataError(f"{path}: truncated gzip stream ({e})") from e
    require(len(raw) >= 4, path, f"too short for an IDX header ({len(raw)} bytes)")
    require(
        raw[0] == 0 and raw[1] == 0,
        path,
        f"bad magic number 0x{raw[:4].hex()}: not an IDX file (expected 0x000008 followed by the number of dims)",
    )
    require(raw[2] == IDX_UBYTE, path, f"IDX data type 0x{raw[2]:02x} is not supported (only unsigned byte, 0x08)")
    nd = raw[3]
    if ndim is not None:
        require(nd == ndim, path, f"IDX file has {nd} dimensions, expected {ndim} (images 3, labels 1)")
    header = 4 + 4 * nd
    require(len(raw) >= header, path, f"truncated IDX header: {len(raw)} bytes, need {header}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    size = math.prod(dims)
    got = len(raw) - header
    require(got >= size, path, f"truncated: shape {dims} needs {size} data bytes, file has {got}")
    require(got == size, path, f"{got - size} bytes of trailing data after shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()  # writable, owns its memory


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array as an IDX file (gzip when ``compress`` or the name ends in ``.gz``); for tests/tools."""
    path = Path(path)
    a = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, IDX_UBYTE, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)


def _file_in(folder: Path, split: str, part: str) -> Path | None:
    stem = _STEMS[(split, part)]
    nd = 3 if part == "images" else 1
    for name in (f"{stem}-idx{nd}-ubyte", f"{stem}.idx{nd}-ubyte"):
        for suffix in ("", ".gz"):
            p = folder / (name + suffix)
            if p.is_file():
                return p
    return None


def find_mnist(cfg: DataConfig, family: str = "mnist") -> dict[str, Path]:
    """Locate the four IDX files of ``family`` ("mnist" or "fashion"): keys ``train_images, train_labels,
    test_images, test_labels``. Raises :class:`DataError` listing where it looked and how to fix it."""
    folders: list[Path] = []
    for root, explicit in data_roots(cfg):
        folders += [root / s for s in _SUBDIRS[family]]
        # files directly in a root: always for an explicit --data-dir; for $STABLERNN_DATA only for MNIST, so a
        # shared root holding MNIST is never mistaken for Fashion-MNIST (the file names are identical)
        if explicit or family == "mnist":
            folders.append(root)
    extra = [DEBIAN_FASHION] if family == "fashion" else []
    folders += extra
    for folder in folders:
        found = {f"{s}_{p}": _file_in(folder, s, p) for s, p in _STEMS}
        if all(found.values()):
            return found  # type: ignore[return-value]
    name = "Fashion-MNIST" if family == "fashion" else "MNIST"
    raise DataError(
        f"no {name} IDX files (train-images-idx3-ubyte[.gz] and the other three) found; searched "
        f"{describe_roots(cfg, extra)} and the sub-folders {', '.join(_SUBDIRS[family])}; "
        "pass --data-dir or set $STABLERNN_DATA"
    )


def _stamp(*paths: Path) -> tuple:
    """Size and mtime of files: part of the in-process cache key, so a rewritten file is read again."""
    return tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


@functools.lru_cache(maxsize=2)
def _load_pair(images: Path, labels: Path, count: int | None, stamp: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images, 3)
    y = read_idx(labels, 1)
    require(x.shape[1:] == (28, 28), images, f"images are {x.shape[1]}x{x.shape[2]}, expected 28x28")
    require(len(x) == len(y), labels, f"{len(y)} labels for {len(x)} images in {images.name}")
    if count is not None:
        require(len(x) == count, images, f"{len(x)} images, expected {count} (set check_counts=False for subsets)")
    bad = np.flatnonzero(y > 9)
    require(len(bad) == 0, labels, f"label out of range 0..9: {y[bad[0]] if len(bad) else ''} at index "
            f"{bad[0] if len(bad) else ''}")
    return x.reshape(len(x), 784), y.astype(np.int64)


def load_mnist_arrays(cfg: DataConfig, family: str = "mnist") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train [60000, 784] uint8, y_train [60000] int64, x_test [10000, 784], y_test [10000])`` from the IDX
    files of ``family`` ("mnist" / "fashion"); counts checked when ``cfg.check_counts``."""
    f = find_mnist(cfg, family)
    tri, trl, tei, tel = f["train_images"], f["train_labels"], f["test_images"], f["test_labels"]
    xtr, ytr = _load_pair(tri, trl, N_TRAIN if cfg.check_counts else None, _stamp(tri, trl))
    xte, yte = _load_pair(tei, tel, N_TEST if cfg.check_counts else None, _stamp(tei, tel))
    return xtr, ytr, xte, yte


# -------------------------------------------------------------------------------------------------- encodings
def pixel_permutation(seed: int) -> Tensor:
    """The psmnist permutation of the 784 pixel positions: same ``seed``, same permutation."""
    return torch.from_numpy(np.random.default_rng([seed, 784]).permutation(784))


def spike_latencies(images: np.ndarray) -> np.ndarray:
    """Spike-latency code of docs/data.md: ``[N, 784]`` uint8 pixels -> ``[N, 784]`` int8 spike step, -1 for none.

    ``X = 50 * p / 255``; a pixel spikes when ``X > 0.2``, at step ``round(10 * 50 * ln(X / (X - 0.2)))``, kept when
    that step is < 100. Bright pixels spike early (255 -> step 2), dim ones late (6 -> 93); pixels < 6 never spike.
    """
    x = SL_TAU * images.astype(np.float64) / 255.0
    lat = np.full(images.shape, -1, dtype=np.int8)
    on = x > SL_THRESHOLD
    steps = np.round(10.0 * SL_TAU * np.log(x[on] / (x[on] - SL_THRESHOLD)))
    steps[steps >= SL_STEPS] = -1
    lat[on] = steps.astype(np.int8)
    return lat


def encode_latencies(lat: Tensor, layout: str = "intended") -> Tensor:
    """``[B, 784]`` int8 latencies -> ``[B, 100, 784]`` float32 spikes.

    ``"intended"``: ``out[b, t, pixel] = 1`` when the pixel spikes at step ``t``. ``"original"``: the released code's
    ``(784, 100)`` one-hot *reshaped* (not transposed) to ``(100, 784)``, so step ``t`` mixes ~7.84 pixels and their
    latencies (docs/data.md); for reproducing its numbers only.
    """
    b = lat.shape[0]
    rows, pix = torch.nonzero(lat >= 0, as_tuple=True)
    t = lat[rows, pix].to(torch.int64)
    if layout == "intended":
        flat = t * 784 + pix
    elif layout == "original":
        flat = pix * SL_STEPS + t
    else:
        raise DataError(f"slmnist_layout must be 'intended' or 'original', got {layout!r}")
    out = torch.zeros(b, SL_STEPS * 784)
    out[rows, flat] = 1.0
    return out.reshape(b, SL_STEPS, 784)


# ----------------------------------------------------------------------------------------------------- builders
def _build(cfg: DataConfig, name: str, family: str, encoding: str) -> TaskData:
    xtr, ytr, xte, yte = load_mnist_arrays(cfg, family)
    tr, va = carve_validation(ytr, len(ytr), cfg.val_fraction, cfg.val_split, cfg.seed)
    extra: dict = {"n_train": len(tr), "n_val": len(va), "n_test": len(yte), "family": family}
    if encoding == "slmnist":
        stored_tr, stored_te = torch.from_numpy(spike_latencies(xtr)), torch.from_numpy(spike_latencies(xte))
        layout = cfg.slmnist_layout
        if layout not in ("intended", "original"):
            raise DataError(f"slmnist_layout must be 'intended' or 'original', got {layout!r}")

        def transform(b: Tensor) -> Tensor:
            return encode_latencies(b, layout)

        rate = float((stored_tr[as_index(tr)] >= 0).double().mean()) / SL_STEPS  # one spike per spiking pixel
        mean, var = rate, rate * (1 - rate)
        seq_len, size = SL_STEPS, 784
        extra["slmnist_layout"] = layout
    else:
        stored_tr, stored_te = torch.from_numpy(xtr), torch.from_numpy(xte)
        mean, var = moments(xtr[tr] / np.float32(255.0))
        if encoding == "rows":
            seq_len, size = 28, 28

            def transform(b: Tensor) -> Tensor:
                return b.to(torch.float32).div_(255.0).reshape(-1, 28, 28)

        else:
            seq_len, size = 784, 1
            perm = None
            if encoding == "permuted":
                pseed = cfg.seed if cfg.permutation_seed is None else cfg.permutation_seed
                perm = pixel_permutation(pseed)
                extra["permutation_seed"] = pseed

            def transform(b: Tensor) -> Tensor:
                if perm is not None:
                    b = b[:, perm]
                return b.to(torch.float32).div_(255.0).unsqueeze(-1)

    ytr_t, yte_t = torch.from_numpy(ytr), torch.from_numpy(yte)
    info = TaskInfo(name=name, input_size=size, output_size=10, seq_len=seq_len, kind="classify",
                    input_mean=mean, input_var=var, extra=extra)
    itr, iva = as_index(tr), as_index(va)
    return TaskData(
        info,
        TensorLoader(stored_tr[itr], ytr_t[itr], cfg.batch_size, shuffle=True, seed=cfg.seed, transform=transform),
        TensorLoader(stored_tr[iva], ytr_t[iva], cfg.eval_batch_size, transform=transform),
        TensorLoader(stored_te, yte_t, cfg.eval_batch_size, transform=transform),
    )


def _make_check(name: str, family: str):
    def check(cfg: DataConfig) -> str | None:
        try:
            find_mnist(cfg, family)
        except DataError as e:
            return f"{name}: {e}"
        return None

    return check


_VARIANTS = {
    "smnist": ("pixels", "pixel by pixel, 784 steps x 1"),
    "psmnist": ("permuted", "pixel by pixel in a fixed seeded permutation, 784 steps x 1"),
    "rowmnist": ("rows", "row by row, 28 steps x 28"),
    "slmnist": ("slmnist", "spike-latency code, 100 steps x 784 binary channels"),
}


def _register_all() -> None:
    for prefix, family, label in (("", "mnist", "MNIST"), ("f", "fashion", "Fashion-MNIST")):
        for base, (encoding, text) in _VARIANTS.items():
            name = prefix + base

            def builder(cfg: DataConfig, _name=name, _family=family, _encoding=encoding) -> TaskData:
                return _build(cfg, _name, _family, _encoding)

            builder.__doc__ = f"{label} {text}; 10 classes. See the module docstring."
            register(name, f"{label} {text} (IDX files)", check=_make_check(name, family))(builder)


_register_all()
