"""The task interface: what every dataset gives the training loop.

A task is built from a :class:`DataConfig` by a builder registered under its name (see ``registry.py``) and returns
a :class:`TaskData`: three loaders and a :class:`TaskInfo`. Every loader yields ``(x, y)`` batches, batch-first:

- ``x``: ``[B, T, F]`` float frames, or ``[B, T]`` int64 token ids when ``info.input_kind == "tokens"``;
- ``y``: ``[B]`` int64 class labels (``kind == "classify"``), ``[B, T]`` int64 per-step labels with ``-100`` where
  there is no target (``kind == "per_step"`` and ``kind == "lm"``), or float targets ``[B]`` / ``[B, k]``
  (``kind == "regress"``).

``kind == "lm"`` loaders are *contiguous*: batch ``i + 1`` continues the ``B`` streams of batch ``i``, so the
training loop carries recurrent state across batches (``info.stateful``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

TaskKind = Literal["classify", "per_step", "lm", "regress"]
InputKind = Literal["dense", "tokens"]


@dataclass(frozen=True)
class TaskInfo:
    """What a model needs to know about a task."""

    name: str
    input_size: int  # features per step; for token inputs the vocabulary size
    output_size: int  # classes, vocabulary size, or regression targets
    seq_len: int  # steps per example (BPTT window for "lm")
    kind: TaskKind = "classify"
    input_kind: InputKind = "dense"
    stateful: bool = False  # carry state across consecutive batches ("lm")
    # input statistics for the stability conditions (paper B's Condition II): mean and variance of the input entries
    input_mean: float = 0.0
    input_var: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskData:
    """Loaders for train / validation / test (validation is carved from train, never from test)."""

    info: TaskInfo
    train: Iterable[tuple[Tensor, Tensor]]
    val: Iterable[tuple[Tensor, Tensor]]
    test: Iterable[tuple[Tensor, Tensor]]


class DataError(ValueError):
    """A dataset could not be read or built: the message names the file or option and the fix."""
