"""``check_task``: load a task and summarise it, for ``stablernn data check TASK``."""
from __future__ import annotations

import time
from dataclasses import replace
from itertools import islice

import torch

from .config import DataConfig
from .registry import load_task

Summary = dict[str, "str | int | float"]


def _count(loader) -> int:
    """Rows of a loader: from its stored labels when it has them (no encoding work), else by iterating."""
    y = getattr(loader, "y", None)
    if isinstance(y, torch.Tensor):
        return len(y)
    streams = getattr(loader, "streams", None)
    if isinstance(streams, torch.Tensor):  # LM: tokens = streams x length
        return int(streams.numel())
    return sum(len(yb) for _, yb in loader)


def check_task(cfg: DataConfig, n_batches: int = 4) -> Summary:
    """Load ``cfg.task`` and summarise it as a flat ``{str: str | int | float}`` dict (easy to print as a table).

    Keys: ``task, kind, input_kind, stateful, input_size, output_size, seq_len, x_shape, y_shape, x_dtype, n_train,
    n_val, n_test`` (rows; tokens for LMs), ``class_balance`` (train label counts, classification only),
    ``input_mean / input_var`` (from ``TaskInfo``), ``batch_mean`` and ``spike_rate`` (fraction of non-zero input
    entries, over the first ``n_batches`` train batches; dense inputs only), ``load_seconds``.
    """
    t0 = time.perf_counter()
    data = load_task(replace(cfg))
    load_s = time.perf_counter() - t0
    info = data.info
    out: Summary = {
        "task": info.name,
        "kind": info.kind,
        "input_kind": info.input_kind,
        "stateful": str(info.stateful),
        "input_size": info.input_size,
        "output_size": info.output_size,
        "seq_len": info.seq_len,
    }
    x, y = next(iter(data.train))
    out["x_shape"] = str(list(x.shape))
    out["y_shape"] = str(list(y.shape))
    out["x_dtype"] = str(x.dtype).replace("torch.", "")
    out["n_train"] = _count(data.train)
    out["n_val"] = _count(data.val)
    out["n_test"] = _count(data.test)
    labels = getattr(data.train, "y", None)
    if info.kind == "classify" and isinstance(labels, torch.Tensor):
        counts = torch.bincount(labels.reshape(-1), minlength=info.output_size).tolist()
        out["class_balance"] = " ".join(f"{c}:{n}" for c, n in enumerate(counts))
    out["input_mean"] = float(info.input_mean)
    out["input_var"] = float(info.input_var)
    if info.input_kind == "dense":
        total = nonzero = 0
        s = 0.0
        for xb, _ in islice(data.train, n_batches):
            total += xb.numel()
            nonzero += int(torch.count_nonzero(xb))
            s += float(xb.double().sum())
        out["batch_mean"] = s / max(1, total)
        out["spike_rate"] = nonzero / max(1, total)
    out["load_seconds"] = round(load_s, 3)
    return out
