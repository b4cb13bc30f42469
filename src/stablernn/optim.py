"""Optimizer and learning-rate schedule factories for :func:`stablernn.train.fit`."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def make_optimizer(params: Iterable[nn.Parameter], name: str, lr: float, weight_decay: float = 0.0
                   ) -> torch.optim.Optimizer:
    """``adamw``, ``adam``, ``sgd``, ``adabelief`` or ``adabelief_lookahead`` (pytorch-optimizer's AdaBelief with
    decoupled weight decay and RAdam-style rectification as in the papers' TF code, wrapped in Lookahead(6, 0.5))."""
    params = [p for p in params if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name in ("adabelief", "adabelief_lookahead"):
        from pytorch_optimizer import AdaBelief, Lookahead

        opt = AdaBelief(params, lr=lr, weight_decay=weight_decay, weight_decouple=True, rectify=True, eps=1e-14)
        return Lookahead(opt, k=6, alpha=0.5) if name == "adabelief_lookahead" else opt
    raise ValueError(f"unknown optimizer {name!r}; choose adamw, adam, sgd, adabelief or adabelief_lookahead")


def lr_factor(step: int, total: int, schedule: str, warmup: int = 0) -> float:
    """Multiplier of the base learning rate at optimisation step ``step`` of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown schedule {schedule!r}; choose constant, cosine or linear")


def base_optimizer(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer whose ``param_groups`` carry the learning rate (unwraps Lookahead)."""
    inner = getattr(opt, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else opt


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in base_optimizer(opt).param_groups:
        group["lr"] = lr
