"""Task losses and metrics, by task kind (see ``data/base.py`` for the batch conventions)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

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


# --- DECOLLE-style local losses -----------------------------------------------------------------------------------
def local_readouts(widths: Sequence[int], classes: int, seed: int = 0, *, device: Any = None,
                   dtype: torch.dtype | None = None) -> list[Tensor]:
    """Fixed random readouts ``[classes, width_l]``, one per layer, U(±1/sqrt(width_l)) (``nn.Linear``'s default
    range, as DECOLLE's readouts, arXiv:1811.10766 §2.3). Drawn from their own generator seeded by ``seed``, so a
    resumed run gets the same ones without storing them."""
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    out = []
    for w in widths:
        bound = 1.0 / math.sqrt(w)
        r = (torch.rand(classes, w, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * bound
        out.append(r.to(device=device, dtype=dtype or torch.get_default_dtype()))
    return out


def local_losses(layer_outputs: Sequence[Tensor], readouts: Sequence[Tensor], y: Tensor, info: TaskInfo,
                 seq_loss: str = "mean_logits") -> Tensor:
    """Mean over layers of the task loss of each layer's output ``[B, T, n_l]`` through its fixed readout."""
    if len(layer_outputs) != len(readouts):
        raise ValueError(f"{len(layer_outputs)} layer outputs but {len(readouts)} local readouts")
    if not layer_outputs:
        return y.new_zeros((), dtype=torch.get_default_dtype())
    terms = [task_loss(F.linear(o, r), y, info, seq_loss) for o, r in zip(layer_outputs, readouts, strict=True)]
    return torch.stack(terms).mean()


class LocalLoss:
    """DECOLLE's per-layer local losses for training: ``weight * local_losses(...)`` over every layer below the top
    (the top layer has the model's own trained readout and the task loss). Readouts are made on the first call."""

    def __init__(self, weight: float, classes: int, seed: int = 0):
        if not (weight >= 0.0 and math.isfinite(weight)):
            raise ValueError(f"local_loss must be a weight >= 0, got {weight}")
        self.weight, self.classes, self.seed = float(weight), int(classes), int(seed)
        self.readouts: list[Tensor] | None = None

    def __call__(self, layer_outputs: Sequence[Tensor], y: Tensor, info: TaskInfo, seq_loss: str = "mean_logits"
                 ) -> Tensor:
        below = list(layer_outputs[:-1])
        if self.readouts is None:
            ref = below[0] if below else y
            dtype = ref.dtype if ref.is_floating_point() else None
            self.readouts = local_readouts([o.shape[-1] for o in below], self.classes, self.seed,
                                           device=ref.device, dtype=dtype)
        return self.weight * local_losses(below, self.readouts, y, info, seq_loss)
