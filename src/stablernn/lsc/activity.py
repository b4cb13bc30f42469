"""LSC's activity guard: LSC must not reach a radius by silencing a spiking layer (or by driving it to fire at every
step).

A spiking layer's Jacobians pass through its surrogate derivative at ``v - ϑ``; a silent layer sits far below
threshold, where that derivative is small, so "radius at most the target" can be met by silence — measured: a 4-layer
ALIF after LSC to 0.5 on a 100-step memory task fired at rate 0.0 throughout training (issue 16). The guard:

1. :func:`activity_penalty`, a rate term added to the LSC loss on every step, so the radii are fitted while the
   layers keep firing;
2. :func:`spiking_rates` before and after LSC (mean spike rate per spiking layer over the LSC batches);
3. :func:`guard_activity`, the backstop: every spiking layer whose rate after LSC is outside ``(low, high)``
   (default 1% and 90%) gets its per-neuron bias refitted (:func:`refit_rates_`, the initial-rate fit of paper B,
   arXiv:2202.00282, Sec. 4 / Fig. 3, restricted to those layers) to the geometric mean of the bounds, and the
   :class:`ActivityReport` says which layers LSC had silenced or saturated. The radii LSC reports after pre-training
   are measured after the refit, so they are the radii of the network that trains.

The same holds for gated cells (LSTM, GRU, Li-GRU): a time radius can be lowered by driving the sigmoid gates into
saturation (``σ' -> 0`` cuts the gate paths of the Jacobian). :func:`gate_saturation` measures, per gated layer, the
fraction of sigmoid-gate units with ``σ'(z) < 0.01`` (``|z| > 4.58``) over the LSC batches, through the cells'
``gate_preactivations`` capability (:class:`HasGates`); :func:`guard_activity` (given ``gates_before``) reports it
before and after LSC and, for every layer LSC pushed above ``GATE_SATURATION_LIMIT``, recentres each gate unit's
mean pre-activation into ``±SATURATION_Z / 2`` by its bias (:func:`recentre_gates_`) and says so.

``LSCConfig.activity = None`` turns the guard off (the user asked for whatever LSC gives).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..cells.base import HasBias, HasOutput, is_spiking
from ..models import as_stack, eval_mode
from ..snn.rates import only_trainable
from .config import check_activity

SATURATED_DERIVATIVE = 0.01  # a gate unit counts as saturated where σ'(z) = σ(z)(1 - σ(z)) is below this
# |z| where σ'(z) = SATURATED_DERIVATIVE: σ = (1 - sqrt(1 - 4·0.01)) / 2, z = logit(σ) ≈ 4.58
SATURATION_Z = -math.log((1 - math.sqrt(1 - 4 * SATURATED_DERIVATIVE)) / (1 + math.sqrt(1 - 4 * SATURATED_DERIVATIVE)))
GATE_SATURATION_LIMIT = 0.2  # a layer whose saturated fraction LSC raised above this gets its gate biases recentred


@runtime_checkable
class HasGates(Protocol):
    """A gated cell the gate-saturation guard can see and correct (LSTMCell, GRUCell, LiGRUCell)."""

    def gate_preactivations(self, x: Tensor, state: Any) -> Tensor:
        """Sigmoid gates' pre-activations for one step, ``x [B, in]`` -> ``[B, G, H]``."""
        ...

    def shift_gate_biases_(self, delta: Tensor) -> None:
        """Add ``delta [G, H]`` to those gates' biases in place."""
        ...


def _spiking(model: Any) -> list[bool]:
    try:
        stack = as_stack(model)
    except TypeError:
        return []
    return [is_spiking(c) for c in stack.cells]


def spiking_rates(model: Any, xs: Sequence[Tensor]) -> list[float | None]:
    """Mean firing rate of each layer of ``model`` over the inputs ``xs`` (each ``[B, T, F]``), ``None`` for
    non-spiking layers; ``[]`` for models that are not stacks (FFNs)."""
    mask = _spiking(model)
    if not any(mask):
        return [None] * len(mask)
    stack = as_stack(model)
    sums = [0.0] * len(mask)
    with torch.no_grad(), eval_mode(stack):
        for x in xs:
            outs = stack.run(x).layer_outputs
            for l, on in enumerate(mask):
                if on:
                    sums[l] += float(outs[l].float().mean())
    return [s / len(xs) if on else None for s, on in zip(sums, mask, strict=True)]


def _gate_stats(model: Any, xs: Sequence[Tensor]) -> list[tuple[Tensor, Tensor] | None]:
    """Per layer: ``(saturated fraction [G, H], mean pre-activation [G, H])`` of its sigmoid gates over every step
    of ``xs`` (each ``[B, T, F]``), ``None`` for layers without gates; ``[]`` for models that are not stacks."""
    try:
        stack = as_stack(model)
    except TypeError:
        return []
    gated = [isinstance(c, HasGates) for c in stack.cells]
    if not any(gated):
        return [None] * len(gated)
    sat: list[Any] = [0.0] * len(gated)
    mean: list[Any] = [0.0] * len(gated)
    count = 0
    with torch.no_grad(), eval_mode(stack):
        for x in xs:
            h0 = stack.encode(x[:, :1])
            states = stack.initial_states(x.shape[0], device=h0.device,
                                          dtype=h0.dtype if h0.is_floating_point() else None)
            for t in range(x.shape[1]):
                def hook(l: int, inp: Tensor, out: Tensor, st: Any, states: list[Any] = states) -> tuple[Tensor, Any]:
                    if gated[l]:  # the gates of this step see the layer's state before it
                        z = stack.cells[l].gate_preactivations(inp, states[l])
                        sat[l] = sat[l] + (z.abs() > SATURATION_Z).float().sum(0)
                        mean[l] = mean[l] + z.sum(0)
                    return out, st

                states = stack.step(x[:, t], states, hook=hook, decode=False).states
                count += x.shape[0]
    return [(sat[l] / count, mean[l] / count) if on else None for l, on in enumerate(gated)]


def gate_saturation(model: Any, xs: Sequence[Tensor]) -> list[float | None]:
    """Fraction of saturated sigmoid-gate units (``σ'(z) < SATURATED_DERIVATIVE``) of each layer of ``model`` over
    the inputs ``xs`` (each ``[B, T, F]``), averaged over batch, steps, gates and units; ``None`` for layers without
    gates (cells without :class:`HasGates`); ``[]`` for models that are not stacks (FFNs)."""
    return [None if g is None else float(g[0].mean()) for g in _gate_stats(model, xs)]


def recentre_gates_(model: Any, xs: Sequence[Tensor], layers: Sequence[int]) -> None:
    """Shift the gate biases of ``layers`` so each gate unit's mean pre-activation over ``xs`` lies in
    ``[-SATURATION_Z / 2, SATURATION_Z / 2]`` (units already inside are left alone, e.g. the LSTM's forget bias 1);
    the weights, and so the spread around the mean, are untouched."""
    stats = _gate_stats(model, xs)
    cells = as_stack(model).cells
    bound = SATURATION_Z / 2
    for l in layers:
        if stats[l] is None:
            raise ValueError(f"layer {l} has no gates to recentre ({type(cells[l]).__name__})")
        mean = stats[l][1]
        cells[l].shift_gate_biases_(mean.clamp(-bound, bound) - mean)


def refit_rates_(model: Any, xs: Sequence[Tensor], layers: Sequence[int], goal: float, *, steps: int = 200,
                 lr: float = 0.05, tol: float = 0.01) -> int:
    """Fit the per-neuron ``bias`` of the spiking ``layers`` so each one's mean rate over ``xs`` approaches
    ``goal`` (Adam on ``Σ_l (rate_l - goal)²`` through the surrogate gradient; every other parameter untouched and
    every ``requires_grad`` restored). Returns the number of steps taken."""
    if not layers:
        return 0
    if not 0.0 < goal < 1.0:
        raise ValueError(f"goal firing rate must lie in (0, 1), got {goal}")
    stack = as_stack(model)
    biases = [stack.cells[l].bias for l in layers]
    if not all(isinstance(b, nn.Parameter) for b in biases):
        raise ValueError(f"layers {list(layers)} need a trainable per-neuron bias to refit their firing rate")
    step = 0
    with only_trainable(stack, biases):
        opt = torch.optim.Adam(biases, lr=lr)
        with eval_mode(stack):
            for step in range(1, steps + 1):
                x = xs[(step - 1) % len(xs)]
                outs = stack.run(x).layer_outputs
                rates = [outs[l].mean() for l in layers]
                if all(abs(float(r.detach()) - goal) <= tol for r in rates):
                    break
                loss = torch.stack([(r - goal) ** 2 for r in rates]).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return step


def activity_penalty(model: Any, states: Sequence[Any], activity: tuple[float, float] | None) -> Tensor | None:
    """A term for the LSC loss that keeps each spiking layer's firing rate inside ``activity = (low, high)`` while
    the radii are fitted: ``Σ_l relu(1 - r_l / (2·low))² + relu((r_l - high) / (1 - high))²`` over spiking layers,
    ``r_l`` the mean spike of this step's state (``states`` from the LSC step, carrying gradient; the spike's
    surrogate derivative carries it back). Relative, so a silent layer costs 1 whatever ``low`` is. ``None`` when
    the guard is off or no layer spikes."""
    if activity is None:
        return None
    low, high = (float(v) for v in activity)
    stack = as_stack(model)
    terms = []
    for cell, st in zip(stack.cells, states, strict=True):
        if not is_spiking(cell) or not isinstance(cell, HasOutput):
            continue
        r = cell.output(st).mean()
        under = torch.relu(1.0 - r / (2.0 * low)) if low > 0 else r.new_zeros(())
        over = torch.relu((r - high) / (1.0 - high)) if high < 1 else r.new_zeros(())
        terms.append(under**2 + over**2)
    return torch.stack(terms).sum() if terms else None


@dataclass
class ActivityReport:
    """Firing rates of the spiking layers around LSC. ``before``/``after_lsc``/``final``: rate per layer (``None``
    for non-spiking layers) before LSC, after LSC, and after the guard; ``silenced``/``saturated``: the layers LSC
    left below ``low`` / above ``high``; ``refit``: the layers whose bias the guard refitted."""

    low: float
    high: float
    before: list[float | None]
    after_lsc: list[float | None]
    final: list[float | None]
    silenced: list[int] = field(default_factory=list)
    saturated: list[int] = field(default_factory=list)
    refit: list[int] = field(default_factory=list)
    refit_steps: int = 0
    # gated layers (issue 16): {"limit", "before", "after_lsc", "final": saturated gate fraction per layer (None:
    # no gates), "saturated": layers LSC pushed above the limit, "recentred": layers whose gate biases were moved}
    gates: dict[str, Any] | None = None

    @property
    def in_range(self) -> bool:
        """Every spiking layer ends inside ``[low, high]``."""
        return all(self.low <= r <= self.high for r in self.final if r is not None)

    def summary(self) -> str:
        fmt = lambda xs: "[" + ", ".join("-" if r is None else f"{r:.3f}" for r in xs) + "]"  # noqa: E731
        parts = []
        if any(r is not None for r in self.after_lsc):
            parts.append(self._rate_summary(fmt))
        if self.gates is not None:
            g = self.gates
            text = (f"saturated gate units (σ' < {SATURATED_DERIVATIVE:g}) before LSC {fmt(g['before'])}, after LSC "
                    f"{fmt(g['after_lsc'])}")
            if g["saturated"]:
                text += f"; LSC saturated the gates of layer(s) {g['saturated']} (> {g['limit']:g})"
            if g["recentred"]:
                text += f"; gate biases recentred: final {fmt(g['final'])}"
                if any(g["final"][l] > g["limit"] for l in g["recentred"]):
                    text += " (still saturated: the weights, not the biases, saturate them)"
            parts.append(text)
        return "\n".join(parts)

    def _rate_summary(self, fmt: Any) -> str:
        text = f"firing rates before LSC {fmt(self.before)}, after LSC {fmt(self.after_lsc)}"
        if self.silenced:
            text += f"; LSC met its target by silencing layer(s) {self.silenced} (rate < {self.low:g})"
        if self.saturated:
            text += f"; LSC saturated layer(s) {self.saturated} (rate > {self.high:g})"
        if self.refit:
            text += f"; biases refitted ({self.refit_steps} steps): final {fmt(self.final)}"
        if not self.in_range:
            text += "; still out of range after the refit"
        return text

    def to_json(self) -> dict[str, Any]:
        out = {"low": self.low, "high": self.high, "before": self.before, "after_lsc": self.after_lsc,
               "final": self.final, "silenced": self.silenced, "saturated": self.saturated, "refit": self.refit,
               "refit_steps": self.refit_steps}
        if self.gates is not None:
            out["gates"] = self.gates
        return out


def guard_activity(model: Any, xs: Sequence[Tensor], activity: tuple[float, float] | None,
                   before: list[float | None] | None, *, rounds: int = 3,
                   gates_before: list[float | None] | None = None) -> ActivityReport | None:
    """After LSC: measure each spiking layer's rate on ``xs``; refit the bias of every layer outside ``activity =
    (low, high)`` to ``sqrt(low · high)`` (the middle of the range on a log scale; 0.095 for the default), up to
    ``rounds`` times (a refitted lower layer changes the inputs of the layers above). With ``gates_before``
    (:func:`gate_saturation` before LSC): the gated layers' saturation after LSC, and every layer LSC pushed above
    ``GATE_SATURATION_LIMIT`` recentred (:func:`recentre_gates_`, up to ``rounds`` times). ``None`` when the guard
    is off or the model has neither spiking nor (with ``gates_before``) gated layers."""
    if activity is None:
        return None
    check_activity(activity)
    low, high = (float(v) for v in activity)
    after = spiking_rates(model, xs)
    gated = gates_before is not None and any(g is not None for g in gates_before)
    if not any(r is not None for r in after):
        if not gated:
            return None
        after = [None] * len(gates_before or [])
    report = _guard_rates(model, xs, low, high, after, before, rounds)
    if gated:
        report.gates = _guard_gates(model, xs, list(gates_before or []), rounds)
    return report


def _guard_gates(model: Any, xs: Sequence[Tensor], before: list[float | None], rounds: int) -> dict[str, Any]:
    """The gate half of :func:`guard_activity`: saturation after LSC, recentring where LSC raised it above the
    limit (a user's own saturated start, e.g. chrono biases, is left as given)."""
    after = gate_saturation(model, xs)
    limit = GATE_SATURATION_LIMIT
    bad = [l for l, (a, b) in enumerate(zip(after, before, strict=True))
           if a is not None and a > limit and (b is None or a > b)]
    current, recentred = after, []
    for _ in range(rounds):
        todo = [l for l in bad if current[l] is not None and current[l] > limit]
        if not todo:
            break
        recentre_gates_(model, xs, todo)
        recentred = sorted(set(recentred) | set(todo))
        current = gate_saturation(model, xs)
    return {"limit": limit, "before": before, "after_lsc": after, "final": current, "saturated": bad,
            "recentred": recentred}


def refit_goal(low: float, high: float) -> float:
    """The rate a refit aims at inside the activity range ``[low, high]``: their geometric mean (a silenced and a
    saturated layer end equally far, in log rate, from the edges)."""
    return math.sqrt(max(low, 1e-4) * high)


def refittable(cell: Any) -> bool:
    """Whether :func:`refit_rates_` can move this cell's firing rate (a trainable per-neuron bias)."""
    return isinstance(cell, HasBias) and isinstance(cell.bias, nn.Parameter)


def _guard_rates(model: Any, xs: Sequence[Tensor], low: float, high: float, after: list[float | None],
                 before: list[float | None] | None, rounds: int) -> ActivityReport:
    """The spiking half of :func:`guard_activity`."""
    out = [l for l, r in enumerate(after) if r is not None and not low <= r <= high]
    report = ActivityReport(low, high, list(before or [None] * len(after)), after, list(after),
                            silenced=[l for l in out if after[l] < low],
                            saturated=[l for l in out if after[l] > high])
    goal = refit_goal(low, high)
    current = after
    cells = as_stack(model).cells
    # only a trainable per-neuron bias can be refitted (an adapted Norse layer has none: it stays reported)
    can = {l for l, c in enumerate(cells) if refittable(c)}
    for _ in range(rounds):
        bad = [l for l, r in enumerate(current) if r is not None and not low <= r <= high and l in can]
        if not bad:
            break
        report.refit = sorted(set(report.refit) | set(bad))
        report.refit_steps += refit_rates_(model, xs, bad, goal)
        current = spiking_rates(model, xs)
    report.final = current
    return report


__all__ = ["GATE_SATURATION_LIMIT", "SATURATED_DERIVATIVE", "SATURATION_Z", "ActivityReport", "HasGates",
           "activity_penalty", "check_activity", "gate_saturation", "guard_activity", "recentre_gates_",
           "refit_goal", "refit_rates_", "refittable", "spiking_rates"]
