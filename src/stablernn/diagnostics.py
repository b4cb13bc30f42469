"""Why a run is unstable: per-transition radii over time, the gradient-norm grid over depth x time, firing rates.

- :func:`radii_over_time`: the batch-mean radius of every transition family at every layer, at each measured time
  step of a batch ``x [B, T, F]`` (states carried from zero);
- :func:`gradient_grid`: ``|dL/ds[t, l]|`` for every layer ``l`` and step ``t``, the gradient that reaches each node
  of the depth x time grid of paper A, arXiv:2308.12075 (per-sample norms, averaged over the batch);
- :func:`firing_rates`: mean spike output of every spiking layer;
- :func:`plot_gradient_grid`, :func:`plot_radii_over_time`: the figures ``stablernn diagnose`` writes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .cells.base import HasOutput, is_spiking
from .figures import save_figure
from .lsc.pretrain import check_lsc_inputs
from .lsc.radii import RadiiTrace, batch_x, measured_steps, radii_over_time
from .lsc.transitions import is_ffn
from .models import as_stack, detach_states, eval_mode, param_dtype


# --- gradient grid ------------------------------------------------------------------------------------------------
@dataclass
class GradientGrid:
    """``norms [T, L]``: mean over the batch of ``|dL_b / ds_b[t, l]|``; ``node[l]`` says what was differentiated:
    ``"state"`` (the stability state, output re-derived from it through the cell's ``output``) or ``"output"`` (the
    layer's output, for cells without ``output(state)``, e.g. the LRU). An FFN gives ``T = 1``."""

    norms: Tensor
    node: list[str]
    loss: float


def default_sequence_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample losses ``[B]``: cross-entropy of the time-averaged logits for labels ``y [B]``; per-step
    cross-entropy (``-100`` ignored) averaged over steps for ``y [B, T]``; MSE of the last step for float ``y``."""
    if logits.dim() == 2:  # FFN: [B, C]
        return F.cross_entropy(logits, y, reduction="none")
    if y.is_floating_point():
        return ((logits[:, -1] - y.reshape(logits.shape[0], -1)) ** 2).mean(-1)
    if y.dim() == 1:
        return F.cross_entropy(logits.mean(1), y, reduction="none")
    per = F.cross_entropy(logits.transpose(1, 2), y, reduction="none", ignore_index=-100)
    valid = (y != -100).to(per.dtype)
    return (per * valid).sum(1) / valid.sum(1).clamp_min(1.0)


def gradient_grid(model: Any, x: Tensor, y: Tensor,
                  loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> GradientGrid:
    """The measured gradient-norm grid ``|dL/ds[t, l]|`` of a batch (``x [B, T, F]``, labels ``y``).

    ``loss_fn(logits [B, T, C], y) -> [B]`` per-sample losses (default :func:`default_sequence_loss`). The step loop
    re-routes every layer's state through ``with_stability_state`` so ``s[t, l]`` is a node every later use goes
    through (the next step, and the output passed up when the cell has ``output(state)``). Dropout off.
    """
    check_lsc_inputs([x], is_ffn(model), "gradient_grid")  # issue 17: empty / zero-length / NaN batches
    loss_fn = loss_fn or default_sequence_loss
    model = model if is_ffn(model) else as_stack(model)
    with torch.enable_grad(), eval_mode(model):
        if is_ffn(model):
            hs = [model.flatten(x)]
            for l in range(len(model.layers)):
                hs.append(model.layer_forward(l, hs[-1]))
            loss = loss_fn(model.out(hs[-1]), y)
            grads = torch.autograd.grad(loss.sum(), hs[1:], allow_unused=True)
            norms = torch.tensor([[_norm(g) for g in grads]])
            return GradientGrid(norms, ["output"] * len(model.layers), float(loss.detach().mean()))
        stack = model
        if not stack.has_readout:
            raise ValueError("gradient_grid needs a model with a readout; wrap the cell in a DeepRNN")
        cells = list(stack.cells)
        has_out = [isinstance(c, HasOutput) for c in cells]
        states = stack.initial_states(x.shape[0], device=x.device, dtype=param_dtype(stack))
        row: list[Tensor] = []

        def node(l: int, inp: Tensor, out: Tensor, st: Any) -> tuple[Tensor, Any]:
            # re-route the state through s[t, l] so every later use (next step, output passed up) goes through it
            if has_out[l]:
                s = cells[l].stability_state(st)
                st = cells[l].with_stability_state(st, s)
                out = cells[l].output(st)
                row.append(s)
            else:
                row.append(out)
            return out, st

        nodes: list[list[Tensor]] = []
        logits = []
        for x_t in x.unbind(1):
            row = []
            step = stack.step(x_t, states, hook=node)
            states = step.states
            nodes.append(row)
            logits.append(step.logits)
        loss = loss_fn(torch.stack(logits, 1), y)
        flat = [n for r in nodes for n in r]
        # autograd.grad w.r.t. the nodes only: the parameters' .grad is left as it was
        grads = torch.autograd.grad(loss.sum(), flat, allow_unused=True)
        L = len(cells)
        norms = torch.tensor([[_norm(grads[t * L + l]) for l in range(L)] for t in range(len(nodes))])
        return GradientGrid(norms, ["state" if o else "output" for o in has_out], float(loss.detach().mean()))


def _norm(g: Tensor | None) -> float:
    """Mean over the batch of the per-sample gradient norm (0 where no path reaches the node)."""
    return 0.0 if g is None else float(g.norm(dim=-1).mean())


# --- firing rates -------------------------------------------------------------------------------------------------
def firing_rates(model: Any, x: Tensor) -> list[float | None]:
    """Mean spike output of each layer over ``x [B, T, F]`` (``None`` for non-spiking layers); dropout off."""
    check_lsc_inputs([x], False, "firing_rates")  # issue 17: empty / zero-length / NaN batches
    stack = as_stack(model)
    spiking = [is_spiking(c) for c in stack.cells]
    sums = [0.0] * len(spiking)

    def count(l: int, inp: Tensor, out: Tensor, st: Any) -> tuple[Tensor, Any]:
        if spiking[l]:
            sums[l] += float(out.float().mean())
        return out, st

    with torch.no_grad(), eval_mode(stack):
        states = stack.initial_states(x.shape[0], device=x.device, dtype=param_dtype(stack))
        for x_t in x.unbind(1):
            states = stack.step(x_t, states, hook=count, decode=False).states
    T = max(1, x.shape[1])
    return [sums[l] / T if spiking[l] else None for l in range(len(spiking))]


# --- figures ------------------------------------------------------------------------------------------------------
def plot_gradient_grid(grids: dict[str, GradientGrid] | GradientGrid, path: str | Path, *,
                       title: str = "|dL/ds[t, l]|") -> Path:
    """Heat-map(s) of ``log10 |dL/ds[t, l]|`` (time on x, layer on y; one panel per entry, shared colour scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if isinstance(grids, GradientGrid):
        grids = {"": grids}
    logs = {k: np.log10(np.maximum(g.norms.numpy().T, 1e-30)) for k, g in grids.items()}
    finite = np.concatenate([v[np.isfinite(v) & (v > -30)].ravel() for v in logs.values()])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 0.0)
    fig, axes = plt.subplots(1, len(logs), figsize=(4.2 * len(logs), 3.2), squeeze=False)
    im = None
    for ax, (name, v) in zip(axes[0], logs.items(), strict=True):
        im = ax.imshow(v, aspect="auto", origin="lower", cmap="viridis", vmin=vmin, vmax=vmax,
                       extent=(-0.5, v.shape[1] - 0.5, 0.5, v.shape[0] + 0.5))
        ax.set_xlabel("time step t")
        ax.set_ylabel("layer l")
        ax.set_title(f"{name}" if name else title)
    fig.colorbar(im, ax=list(axes[0]), label="log10 " + title)
    return save_figure(fig, path)


def plot_radii_over_time(trace: RadiiTrace, path: str | Path, targets: dict[str, float] | None = None) -> Path:
    """One panel per family: each layer's radius against the time step (dashed line: the target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(trace.radii)
    fig, axes = plt.subplots(1, len(fams), figsize=(3.6 * len(fams), 3.0), squeeze=False)
    for ax, f in zip(axes[0], fams, strict=True):
        r = trace.radii[f]
        for l in range(r.shape[1]):
            ax.plot(trace.times, r[:, l].numpy(), marker=".", label=f"layer {l + (2 if f == 'depth' else 1)}")
        if targets and f in targets:
            ax.axhline(targets[f], color="k", ls="--", lw=1)
        ax.set_title(f)
        ax.set_xlabel("time step")
        ax.set_ylabel("radius")
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path)


__all__ = [
    "GradientGrid",
    "RadiiTrace",
    "batch_x",
    "default_sequence_loss",
    "detach_states",
    "firing_rates",
    "gradient_grid",
    "is_spiking",
    "measured_steps",
    "plot_gradient_grid",
    "plot_radii_over_time",
    "radii_over_time",
]
