"""MNIST-1D (Greydanus 2020): 1-D digit templates, generated locally by the ``mnist1d`` package's procedure."""
from __future__ import annotations

import functools

import numpy as np
import torch

from .base import TaskData, TaskInfo
from .config import DataConfig
from .loader import TensorLoader, as_index, carve_validation, moments
from .registry import missing_module, register


@functools.lru_cache(maxsize=1)
def _mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # make_dataset generates the data (~2 s, fixed seed inside the package's default args); get_dataset would try to
    # download a pickle, which must never happen here. Cached per process; nothing is written to disk.
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
    x = d["x"].astype(np.float32)
    xt = d["x_test"].astype(np.float32)
    return x, d["y"].astype(np.int64), xt, d["y_test"].astype(np.int64)


def _check(cfg: DataConfig) -> str | None:
    return missing_module("mnist1d.data", "mnist1d: the mnist1d package is not installed; pip install mnist1d")


@register("mnist1d", "MNIST-1D, generated offline by the mnist1d package: 40 steps x 1, 10 classes", check=_check)
def build_mnist1d(cfg: DataConfig) -> TaskData:
    """MNIST-1D: ``x`` ``[B, 40, 1]`` float, ``y`` ``[B]`` in 0..9.

    The package's own 4000 train / 1000 test split; validation is ``cfg.val_fraction`` of the 4000 (stratified,
    seeded by ``cfg.seed``, or the tail). Reads ``seed, val_fraction, val_split, batch_size, eval_batch_size``.
    """
    x, y, x_test, y_test = _mnist1d()
    tr, va = carve_validation(y, len(y), cfg.val_fraction, cfg.val_split, cfg.seed)
    xt = torch.from_numpy(x).unsqueeze(-1)
    yt = torch.from_numpy(y)
    x_tr, y_tr = xt[as_index(tr)], yt[as_index(tr)]
    mean, var = moments(x_tr)
    info = TaskInfo(
        name="mnist1d",
        input_size=1,
        output_size=10,
        seq_len=x.shape[1],
        kind="classify",
        input_mean=mean,
        input_var=var,
        extra={"n_train": len(tr), "n_val": len(va), "n_test": len(y_test)},
    )
    return TaskData(
        info,
        TensorLoader(x_tr, y_tr, cfg.batch_size, shuffle=True, seed=cfg.seed),
        TensorLoader(xt[as_index(va)], yt[as_index(va)], cfg.eval_batch_size),
        TensorLoader(torch.from_numpy(x_test).unsqueeze(-1), torch.from_numpy(y_test), cfg.eval_batch_size),
    )
