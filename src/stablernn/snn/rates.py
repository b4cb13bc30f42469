"""Firing-rate control for spiking layers (arXiv:2202.00282, Fig. 3): the initial rate fitted through the per-neuron
bias before training, and a sparsity loss switched in gradually during training.

- :func:`fit_initial_rate` — the code's ``adjfi:x``: freeze everything but each spiking layer's ``bias`` and fit it
  so every layer's mean firing rate hits ``target`` (the paper suggests a *high* initial rate, e.g. 0.5).
- :func:`sparsity_loss` — the code's ``adjff:y``: ``mean_l (rate_l − target)²`` over spiking layers.
- :func:`ramp` — the switch in front of it: 0 before ``start``, 1 after ``end`` (fractions of training), linear or
  cosine in between (the code's ``annealing``: start 1/5, end 3/5 of the nominal epochs).

``fit`` wires these through ``TrainConfig.init_rate / final_rate / rate_weight / rate_ramp / rate_schedule``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..cells.base import HasBias, HasCells, is_spiking

RampKind = Literal["linear", "cosine"]


def spiking_mask(model: nn.Module) -> list[bool]:
    """For each layer of a ``DeepRNN`` (``model.cells``), whether it is a spiking layer with a trainable bias."""
    if not isinstance(model, HasCells):
        raise ValueError("firing-rate control needs a model with .cells (a DeepRNN)")
    return [is_spiking(c) and isinstance(c, HasBias) and isinstance(c.bias, nn.Parameter) for c in model.cells]


def layer_rates(layer_outputs: Sequence[Tensor], mask: Sequence[bool]) -> list[Tensor]:
    """Mean firing rate (over batch, time, neurons) of each spiking layer's output ``[B, T, n]``."""
    if len(layer_outputs) != len(mask):
        raise ValueError(f"{len(layer_outputs)} layer outputs but a mask of {len(mask)} layers")
    return [out.mean() for out, m in zip(layer_outputs, mask, strict=True) if m]


def sparsity_loss(layer_outputs: Sequence[Tensor], spiking_mask: Sequence[bool], target: float) -> Tensor:
    """``mean over spiking layers of (mean rate − target)²``; each output ``[B, T, n]`` (spikes, whose surrogate
    gradient carries this loss back). Zero (a scalar) when no layer is spiking."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target firing rate must lie in [0, 1], got {target}")
    rates = layer_rates(layer_outputs, spiking_mask)
    if not rates:
        ref = layer_outputs[0] if len(layer_outputs) else torch.zeros(())
        return torch.zeros((), dtype=ref.dtype, device=ref.device)
    return torch.stack([(r - target) ** 2 for r in rates]).mean()


def ramp(progress: float, start: float, end: float, kind: RampKind = "linear") -> float:
    """The sparsity-loss switch at ``progress`` (fraction of training done, in [0, 1]): 0 before ``start``, 1 after
    ``end``, linear or cosine (``(1 − cos(π u)) / 2``) in between. ``start == end`` is a step."""
    if kind not in ("linear", "cosine"):
        raise ValueError(f"unknown ramp kind {kind!r}; choose linear or cosine")
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"ramp needs 0 <= start <= end <= 1, got start={start}, end={end}")
    if not math.isfinite(progress):
        raise ValueError(f"progress must be finite, got {progress}")
    if progress < start:
        return 0.0
    if progress >= end:
        return 1.0
    u = (progress - start) / (end - start)
    return u if kind == "linear" else 0.5 * (1.0 - math.cos(math.pi * u))


def parse_ramp(text: str) -> tuple[float, float]:
    """``"0.2:0.6"`` -> ``(0.2, 0.6)`` (the CLI's ``--rate-ramp``), validated."""
    parts = text.split(":")
    try:
        start, end = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--rate-ramp must be START:END fractions of training, e.g. 0.2:0.6; got {text!r}") from None
    ramp(0.0, start, end)  # validates
    return start, end


@dataclass
class RateFitReport:
    """Rates per spiking layer before and after :func:`fit_initial_rate`, and how the fit ended."""

    target: float
    before: list[float]
    after: list[float]
    steps: int
    converged: bool
    losses: list[float] = field(default_factory=list)

    def __float__(self) -> float:
        """The mean rate over spiking layers after the fit."""
        return sum(self.after) / len(self.after)

    def summary(self) -> str:
        fmt = lambda xs: "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"  # noqa: E731
        return (f"initial firing rate fit to {self.target:g}: {fmt(self.before)} -> {fmt(self.after)} in "
                f"{self.steps} steps ({'converged' if self.converged else 'not converged'})")


def _inputs(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _cycle(batches: Iterable[Any]):
    """Batches again and again (a DataLoader is re-iterated; a one-shot iterator is used once)."""
    while True:
        got = False
        for b in batches:
            got = True
            yield b
        if not got:
            return


def fit_initial_rate(model: nn.Module, batches: Iterable[Any], target: float, steps: int = 200, *,
                     lr: float = 0.05, tol: float = 0.01, device: torch.device | str | None = None) -> RateFitReport:
    """Fit the per-neuron ``bias`` of every spiking layer so each layer's mean firing rate hits ``target``.

    Everything else is frozen during the fit; every parameter's ``requires_grad`` is restored afterwards (also on
    error). Minimises ``Σ_l (rate_l − target)²`` with Adam(``lr``) over up to ``steps`` batches (inputs ``x [B, T, F]``
    or ``(x, y)`` pairs; ``batches`` is cycled when it can be re-iterated, e.g. a DataLoader), stopping once every
    layer's rate is within ``tol`` of the target on a batch. The model's train/eval mode is left as is (dropout
    changes rates; fit in the mode you train in). Returns a :class:`RateFitReport` (rates measured on the first
    batch; ``float(report)`` is the mean rate after the fit).
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target firing rate must lie in (0, 1), got {target}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    mask = spiking_mask(model)
    if not any(mask):
        raise ValueError("the model has no spiking layer with a bias to fit")
    biases = [c.bias for c, m in zip(model.cells, mask, strict=True) if m]
    stream = _cycle(batches)
    first = next(stream, None)
    if first is None:
        raise ValueError("no batches to fit the initial firing rate on")
    if device is None:
        device = biases[0].device

    def rates_of(x: Tensor) -> list[Tensor]:
        return layer_rates(model.run(x.to(device)).layer_outputs, mask)

    with only_trainable(model, biases):
        opt = torch.optim.Adam(biases, lr=lr)
        with torch.no_grad():
            before = [float(r) for r in rates_of(_inputs(first))]
        losses: list[float] = []
        converged, step, batch = False, 0, first
        for step in range(1, steps + 1):
            if step > 1:
                batch = next(stream, None)
                if batch is None:  # a one-shot iterator ran out
                    break
            rates = rates_of(_inputs(batch))
            if all(abs(float(r.detach()) - target) <= tol for r in rates):
                converged = True
                break
            loss = torch.stack([(r - target) ** 2 for r in rates]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        with torch.no_grad():
            after = [float(r) for r in rates_of(_inputs(first))]
    return RateFitReport(target, before, after, step, converged, losses)


@contextmanager
def only_trainable(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Freeze every parameter of ``model`` but ``params`` (the rate fits move the biases alone); each parameter's
    ``requires_grad`` comes back as it was, also on error."""
    saved = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)


__all__ = [
    "RateFitReport",
    "fit_initial_rate",
    "layer_rates",
    "only_trainable",
    "parse_ramp",
    "ramp",
    "sparsity_loss",
    "spiking_mask",
]
