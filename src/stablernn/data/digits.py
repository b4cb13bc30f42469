"""scikit-learn's 8x8 handwritten digits (1797 images, ships with the package: no download) as a sequence task."""
from __future__ import annotations

import functools

import numpy as np
import torch

from .base import DataError, TaskData, TaskInfo
from .config import DataConfig
from .loader import TensorLoader, as_index, carve_validation, moments, stratified_split
from .registry import missing_module, register

TEST_FRACTION = 0.2  # of all 1797 images
TEST_SEED = 0  # the test split never depends on cfg.seed, so test scores are comparable across seeds


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)  # pixel values 0..16 -> [0, 1]
    return x.reshape(-1, 8, 8), d.target.astype(np.int64)


def _check(cfg: DataConfig) -> str | None:
    return missing_module("sklearn.datasets", "digits: scikit-learn is not installed; pip install scikit-learn")


@register("digits", "scikit-learn 8x8 digits as 8 rows of 8 pixels (or 64 pixels), 10 classes", check=_check)
def build_digits(cfg: DataConfig) -> TaskData:
    """Digits: ``x`` ``[B, 8, 8]`` (``layout="rows"``: time = image row) or ``[B, 64, 1]`` (``"pixels"``), values in
    [0, 1]; ``y`` ``[B]`` in 0..9.

    Splits: a stratified 20 % test set fixed by seed 0 whatever ``cfg.seed`` (1797 -> 1437 pool / 360 test); the
    validation set is ``cfg.val_fraction`` of the remaining pool, stratified and seeded by ``cfg.seed`` (or its tail
    with ``val_split="tail"``). Reads ``layout, seed, val_fraction, val_split, batch_size, eval_batch_size``.
    """
    if cfg.layout not in ("rows", "pixels"):
        raise DataError(f"digits: layout must be 'rows' or 'pixels', got {cfg.layout!r}")
    x, y = _digits()
    pool, test = stratified_split(y, TEST_FRACTION, TEST_SEED)
    tr, va = carve_validation(y[pool], len(pool), cfg.val_fraction, cfg.val_split, cfg.seed)
    train, val = pool[tr], pool[va]
    xt = torch.from_numpy(x)
    if cfg.layout == "pixels":
        xt = xt.reshape(-1, 64, 1)
    yt = torch.from_numpy(y)
    mean, var = moments(xt[as_index(train)])
    info = TaskInfo(
        name="digits",
        input_size=xt.shape[2],
        output_size=10,
        seq_len=xt.shape[1],
        kind="classify",
        input_mean=mean,
        input_var=var,
        extra={"layout": cfg.layout, "n_train": len(train), "n_val": len(val), "n_test": len(test)},
    )

    def loader(idx: np.ndarray, bs: int, shuffle: bool) -> TensorLoader:
        i = as_index(idx)
        return TensorLoader(xt[i], yt[i], bs, shuffle=shuffle, seed=cfg.seed)

    return TaskData(
        info,
        loader(train, cfg.batch_size, True),
        loader(val, cfg.eval_batch_size, False),
        loader(test, cfg.eval_batch_size, False),
    )
