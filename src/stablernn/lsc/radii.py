"""Radii of every transition family per layer, over the time steps of a batch: what LSC reports before and after,
and what ``stablernn diagnose`` plots."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from ..models import as_stack, detach_states, eval_mode, param_dtype
from .config import FAMILIES, LSCConfig
from .measures import EXACT_MAX_DIM, Engine, Measure, WarmState, transition_measure
from .transitions import ffn_transitions, is_ffn, layer_counts, report_index, rnn_transitions


@dataclass
class RadiiTrace:
    """Batch-mean radii ``radii[family]`` shaped ``[len(times), n_layers]`` (NaN where a layer was not measured)."""

    times: list[int]
    radii: dict[str, Tensor] = field(default_factory=dict)

    def mean(self) -> dict[str, list[float]]:
        """Mean over the measured steps, per family and layer."""
        return {f: [float(v) for v in r.nanmean(0)] for f, r in self.radii.items()}


def measured_steps(T: int, steps: int | None) -> list[int]:
    """``steps`` time indices spread evenly over ``0..T-1`` (all of them if ``steps`` is None or >= T)."""
    if steps is None or steps >= T:
        return list(range(T))
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return sorted({round(i * (T - 1) / max(1, steps - 1)) for i in range(steps)})


def batch_x(batch: Any) -> Tensor:
    """The input of a batch given as ``x`` or ``(x, y, ...)``."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(f"a batch must be a tensor x or a tuple (x, y), got {type(batch).__name__}")


def radii_over_time(model: Any, x: Tensor, *, families: Sequence[str] = FAMILIES, measure: Measure = "radius",
                    engine: Engine = "auto", steps: int | None = None, generator: torch.Generator | None = None,
                    exact_max_dim: int = EXACT_MAX_DIM, max_iter: int = 64, tol: float = 1e-4,
                    rectangular: Literal["subsample", "norm"] = LSCConfig.rectangular,
                    state: WarmState | None = None, warm_cycles: int = 1, warm_blocks: int | None = None,
                    warm_min_dim: int = LSCConfig.warm_min_dim) -> RadiiTrace:
    """Radii of every transition family per layer at ``steps`` evenly spread time steps of ``x [B, T, F]`` (or
    ``[B, T]`` ids); an FFN has one "step" on ``x [B, F]``. No gradient; dropout off. The options are those of
    :func:`~stablernn.lsc.measures.transition_measure`; ``rectangular`` defaults to what LSC optimises.

    ``engine="warm"``: one :class:`~stablernn.lsc.measures.WarmState` (``state``, a fresh one when None) is carried
    from each measured step to the next, so every step after the first starts from the previous step's bases
    (``warm_cycles`` cycles of ``warm_blocks`` Krylov blocks each; cold starts use 3 cycles)."""
    state = state if state is not None or engine != "warm" else WarmState()
    kw = {"exact_max_dim": exact_max_dim, "max_iter": max_iter, "tol": tol, "rectangular": rectangular,
          "state": state, "warm_cycles": warm_cycles, "warm_blocks": warm_blocks, "warm_min_dim": warm_min_dim}
    model = model if is_ffn(model) else as_stack(model)
    counts = layer_counts(model)
    fams = [f for f in families if counts.get(f, 0) > 0]
    with torch.no_grad(), eval_mode(model):
        if is_ffn(model):
            trs = ffn_transitions(model, x, fams)
            out = {f: torch.full((1, counts[f]), float("nan")) for f in fams}
            for tr in trs:
                r = transition_measure(tr, measure, engine, generator=generator, **kw)
                out[tr.family][0, report_index(model, tr.family, tr.layer)] = r.mean().item()
            return RadiiTrace([0], out)
        stack = model
        if x.dim() < 2:
            raise ValueError(f"expected a batch of sequences [batch, time, features], got {list(x.shape)}")
        T = x.shape[1]
        when = measured_steps(T, steps)
        out = {f: torch.full((len(when), counts[f]), float("nan")) for f in fams}
        dtype = param_dtype(stack, x.dtype if x.is_floating_point() else None)
        states = stack.initial_states(x.shape[0], device=x.device, dtype=dtype)
        row = 0
        for t, x_t in enumerate(x.unbind(1)):
            if t in when:
                res = rnn_transitions(model, x_t, states, fams)
                for tr in res.transitions:
                    r = transition_measure(tr, measure, engine, generator=generator, **kw)
                    out[tr.family][row, report_index(model, tr.family, tr.layer)] = r.mean().item()
                row += 1
                states = detach_states(res.states)
            else:
                states = detach_states(stack.step(x_t, states, decode=False).states)
        return RadiiTrace(when, out)


__all__ = [
    "RadiiTrace",
    "batch_x",
    "measured_steps",
    "radii_over_time",
]
