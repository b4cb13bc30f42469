"""What the stability conditions read of a layer's input (paper B, arXiv:2202.00282, Condition II): the mean and
variance of its entries. One definition of the first layer's statistics, :func:`task_stats`, for the builder, the
design command and the sweep predictions alike."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data.base import TaskInfo

_DT = torch.float64


def check_rate(rate: float) -> None:
    if not 0.0 < rate < 1.0:
        raise ValueError(f"the assumed firing rate must lie in (0, 1), got {rate}")


@dataclass(frozen=True)
class TaskStats:
    """Mean and variance of a layer's input entries (over batch, time and features): the papers' code's ``taskmean`` /
    ``taskvar`` for layer 0, Bernoulli(rate) spikes for deeper layers (:meth:`spikes`)."""

    mean: float
    var: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.var)) or self.var < 0:
            raise ValueError(f"task statistics need a finite mean and a variance >= 0, got mean={self.mean}, "
                             f"var={self.var}")

    @property
    def second_moment(self) -> float:
        """E[x²] = σ_x² + μ_x²."""
        return self.var + self.mean ** 2

    @classmethod
    def spikes(cls, rate: float = 0.5) -> TaskStats:
        """Statistics of Bernoulli(rate) spike inputs (deeper layers; the code assumes rate 1/2)."""
        check_rate(rate)
        return cls(rate, rate * (1.0 - rate))

    @classmethod
    def from_batches(cls, batches, max_batches: int = 50) -> TaskStats:
        """Mean and variance of every input entry over (up to ``max_batches``) batches ``x [B, T, F]`` or
        ``(x, y)`` pairs."""
        total, sq, count = 0.0, 0.0, 0
        for k, batch in enumerate(batches):
            if k >= max_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = torch.as_tensor(x, dtype=_DT)
            total += float(x.sum())
            sq += float((x * x).sum())
            count += x.numel()
        if count == 0:
            raise ValueError("no input batches to compute task statistics from")
        mean = total / count
        return cls(mean, max(sq / count - mean * mean, 0.0))


def task_stats(info: TaskInfo) -> TaskStats:
    """The first layer's input statistics: the task's per-entry input mean and variance on its training split
    (``TaskInfo.input_mean`` / ``input_var``, computed by the task's loader). Exact for the identity encoder; for a
    learned encoder it is the statistics of the raw input, the same value wherever a network is built."""
    return TaskStats(float(info.input_mean), float(info.input_var))
