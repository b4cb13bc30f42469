"""Task losses and metrics, by task kind (see ``data/base.py`` for the batch conventions)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.base import TaskInfo


def _sequence_logits(logits: Tensor, mode: str) -> Tensor:
    """``[B, T, C]`` -> ``[B, C]`` for sequence classification (``[B, C]`` passes through, e.g. an FFN)."""
    if logits.dim() == 2:
        return logits
    if mode == "last":
        return logits[:, -1]
    return logits.mean(1)


def task_loss(logits: Tensor, y: Tensor, info: TaskInfo, seq_loss: str = "mean_logits") -> Tensor:
    """The training loss of one batch. ``logits [B, T, C]`` (``[B, C]`` for feed-forward nets)."""
    if info.kind == "classify":
        if seq_loss == "per_step" and logits.dim() == 3:
            B, T, C = logits.shape
            return F.cross_entropy(logits.reshape(B * T, C), y.repeat_interleave(T))
        return F.cross_entropy(_sequence_logits(logits, seq_loss), y)
    if info.kind in ("per_step", "lm"):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
    if info.kind == "regress":
        pred = logits[:, -1] if logits.dim() == 3 else logits
        return F.mse_loss(pred.reshape(y.shape[0], -1), y.reshape(y.shape[0], -1).to(pred.dtype))
    raise ValueError(f"unknown task kind {info.kind!r}")


class MetricSum:
    """Accumulates loss and accuracy over batches; :meth:`result` gives the task's metrics."""

    def __init__(self, info: TaskInfo, seq_loss: str = "mean_logits"):
        self.info, self.seq_loss = info, seq_loss
        self.loss_sum = 0.0
        self.count = 0  # examples (classify, regress) or target tokens (per_step, lm)
        self.correct = 0

    @torch.no_grad()
    def add(self, logits: Tensor, y: Tensor) -> None:
        kind = self.info.kind
        if kind == "classify":
            n = y.shape[0]
            self.loss_sum += task_loss(logits, y, self.info, self.seq_loss).item() * n
            pred = _sequence_logits(logits, "last" if self.seq_loss == "last" else "mean").argmax(-1)
            self.correct += int((pred == y).sum())
        elif kind in ("per_step", "lm"):
            mask = y != -100
            n = int(mask.sum())
            if n == 0:
                return
            flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100,
                                   reduction="sum")
            self.loss_sum += flat.item()
            self.correct += int(((logits.argmax(-1) == y) & mask).sum())
        else:
            n = y.shape[0]
            self.loss_sum += task_loss(logits, y, self.info).item() * n
        self.count += n

    def result(self, prefix: str) -> dict[str, float]:
        if self.count == 0:
            return {}
        loss = self.loss_sum / self.count
        out = {f"{prefix}_loss": loss}
        if self.info.kind in ("classify", "per_step", "lm"):
            out[f"{prefix}_acc"] = self.correct / self.count
        if self.info.kind == "lm":
            out[f"{prefix}_ppl"] = math.exp(min(loss, 50.0))
        return out


def score_key(info: TaskInfo) -> tuple[str, bool]:
    """The validation metric that picks the best epoch, and whether higher is better."""
    if info.kind == "lm":
        return "val_ppl", False
    if info.kind == "regress":
        return "val_loss", False
    return "val_acc", True
