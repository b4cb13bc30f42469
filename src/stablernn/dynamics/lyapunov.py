"""Lyapunov spectrum of a network's state dynamics, and the gradient-flossing regulariser (Engelken 2023).

A network is seen as a map on one flat continuous state ``s [batch, d]`` driven by an input stream: for a cell,
``s`` is its ``stability_state``; for a :class:`~stablernn.models.DeepRNN` (anything with ``cells``, ``step`` and
``initial_states``), the stability states of all layers concatenated, and the map is the joint one-step map
``model.step`` of every layer. The first ``k`` exponents come from the standard QR (Benettin) iteration:

    Q[0] random orthonormal [d, k];   J[t] = d s[t] / d s[t-1];   J[t] Q[t-1] = Q[t] R[t]  (reduced QR, every step)
    lambda_i = mean over the measured steps of log |R[t]_ii|                                   (per step, natural log)

``J[t] Q`` is formed by forward-mode AD of the one-step map (``k`` Jacobian-vector products in one batched pass),
never the full ``d x d`` Jacobian. The first ``transient`` steps drive the state and align ``Q`` without
being counted. Everything is differentiable in the network's parameters (the transient is run without a graph), so
``flossing_loss`` can be added to a training loss.

Why the joint map is the default: a stack's state update is block lower-triangular (layer ``l`` at ``t`` depends on
its own past and on the layers below at ``t``), and the exponents of a block-triangular product are the union of
those of its diagonal blocks. :func:`layer_lyapunov_spectra` computes those blocks, each layer's own recurrent
transition driven by what actually reaches it from below, so each exponent can be attributed to a layer.

For spiking cells the Jacobian runs through the surrogate derivative of the spike (``with_stability_state``
recomputes the spikes from ``v``): the result is the *surrogate* Lyapunov spectrum, the one that governs how
gradients grow or shrink through time. Dropout is switched off while measuring (the map must be deterministic).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from ..cells.base import CellProtocol, State
from ..models import DeepRNN, as_stack, eval_mode, param_dtype


@dataclass(frozen=True)
class StateSystem:
    """A network as a map on one flat continuous state ``s [B, d]`` (see the module docstring).

    ``step(x_t [B, input_size], full) -> full'`` advances the full state (a cell's NamedTuple, or a DeepRNN's list
    of them); ``flatten(full) -> s [B, d]`` and ``unflatten(full, s) -> full`` convert, recomputing what depends on
    ``s`` (spikes); ``blocks`` are the widths of each layer's piece of ``s``.
    """

    module: nn.Module
    input_size: int
    blocks: tuple[int, ...]
    initial: Callable[[int, Any, Any], Any]
    step: Callable[[Tensor, Any], Any]
    flatten: Callable[[Any], Tensor]
    unflatten: Callable[[Any, Tensor], Any]

    @property
    def state_size(self) -> int:
        return int(sum(self.blocks))


def is_stack(net: Any) -> bool:
    """True for a stack (``DeepRNN``), False for a single cell or another model."""
    return isinstance(net, DeepRNN)


def as_system(net: nn.Module) -> StateSystem:
    """The :class:`StateSystem` of a cell, a ``DeepRNN`` or any model :func:`~stablernn.models.as_stack` takes:
    the joint map of every layer's stability state, stepped through ``DeepRNN.step``.

    Raises ``TypeError`` naming what is missing when ``net`` is none of these.
    """
    try:
        stack = as_stack(net)
    except TypeError:
        missing = next(m for m in ("initial_state", "stability_state", "with_stability_state", "forward")
                       if not callable(getattr(net, m, None))) if not isinstance(net, CellProtocol) else "input_size"
        raise TypeError(f"{type(net).__name__} is neither a cell (it lacks {missing}, see stablernn.cells.base) nor "
                        "a DeepRNN-like stack, nor a model stablernn.adapters recognises") from None
    cells = list(stack.cells)
    blocks = tuple(_state_width(c) for c in cells)

    def flatten(states: list[State]) -> Tensor:
        return torch.cat([c.stability_state(st) for c, st in zip(cells, states, strict=True)], dim=-1)

    def unflatten(states: list[State], s: Tensor) -> list[State]:
        parts = torch.split(s, list(blocks), dim=-1)
        return [c.with_stability_state(st, p) for c, st, p in zip(cells, states, parts, strict=True)]

    return StateSystem(
        module=stack, input_size=int(stack.input_size), blocks=blocks,
        initial=lambda b, device, dtype: stack.initial_states(b, device=device, dtype=dtype),
        step=lambda x, states: stack.step(x, states, decode=False).states, flatten=flatten, unflatten=unflatten)


@dataclass
class LyapunovResult:
    """The first ``k`` Lyapunov exponents, per step (natural log; divide by the step length for per-time units).

    ``exponents [k]``: mean over the batch, descending. ``per_sample [B, k]``: each input stream's own estimate
    (descending). ``steps``: the number of measured (post-transient) steps. Tensors keep their graph when computed
    with gradients enabled.
    """

    exponents: Tensor
    per_sample: Tensor
    steps: int
    transient: int

    @property
    def top(self) -> float:
        """The largest exponent (mean over the batch)."""
        return float(self.exponents[0].detach())

    @property
    def spread(self) -> Tensor:
        """Standard deviation over the batch of each exponent ``[k]`` (an error bar for ``exponents``)."""
        if self.per_sample.shape[0] < 2:
            return torch.zeros_like(self.exponents)
        return self.per_sample.std(0)


def lyapunov_spectrum(net: nn.Module, inputs: Tensor, k: int = 10, *, transient: int | None = None,
                      state: Any = None, seed: int = 0) -> LyapunovResult:
    """The first ``k`` Lyapunov exponents of ``net``'s state dynamics under the input stream ``inputs``.

    Args:
        net: a cell (its own interface) or a DeepRNN-like stack (the joint map of all layers; see module docs).
        inputs: ``[B, T, F]`` batch-first; ``F`` is the cell's ``input_size`` or the stack's raw input width (the
            stack's encoder is applied by ``step``), or ``[B, T]`` token ids for a stack with an embedding. Each
            of the ``B`` streams gives its own estimate.
        k: how many exponents (at most the state width ``d``).
        transient: steps run before counting (no graph through them); default ``T // 4``.
        state: the starting full state (default: the network's zero state).
        seed: seeds the random orthonormal starting directions.

    Returns:
        :class:`LyapunovResult`; differentiable in the parameters when gradients are enabled.
    """
    system = as_system(net)
    if state is not None and not isinstance(net, DeepRNN) and not isinstance(state, list):
        state = [state]  # a bare cell's own state: the system steps it as a one-layer stack
    return _spectrum(system, inputs, k, transient=transient, state=state, seed=seed)


def layer_lyapunov_spectra(model: nn.Module, inputs: Tensor, k: int = 10, *, transient: int | None = None,
                           seed: int = 0) -> list[LyapunovResult]:
    """Per-layer spectra of a DeepRNN-like stack: layer ``l``'s own time transition, driven by what reaches it
    from below under ``inputs [B, T, F]``. The joint spectrum (:func:`lyapunov_spectrum`) is the union of these
    (block-triangular structure), so this says which layer an exponent belongs to. ``k`` is capped per layer at
    its state width."""
    if not is_stack(model):
        raise TypeError(f"layer_lyapunov_spectra needs a stack with cells/step/initial_states, got "
                        f"{type(model).__name__}; use lyapunov_spectrum for a single cell")
    _check_inputs(inputs, int(model.input_size))
    with eval_mode(model), torch.no_grad():
        drives = layer_inputs(model, inputs)
    return [lyapunov_spectrum(cell, drive, min(k, _state_width(cell)), transient=transient, seed=seed)
            for cell, drive in zip(model.cells, drives, strict=True)]


def layer_inputs(model: nn.Module, inputs: Tensor) -> list[Tensor]:
    """What each layer of a DeepRNN-like stack receives: ``[B, T, in_l]`` per layer, from ``inputs [B, T, F]``."""
    out = model.run(inputs)
    h = model.encode(inputs)
    drives = []
    for l in range(len(model.cells)):
        drives.append(model.layer_input(l, h))
        h = out.layer_outputs[l]
    return drives


def flossing_loss(net: nn.Module, inputs: Tensor, k: int = 1, *, target: float = 0.0,
                  transient: int | None = None, seed: int = 0) -> Tensor:
    """Gradient-flossing regulariser (Engelken 2023): the mean squared distance of the top ``k`` Lyapunov exponents
    (each input stream's own estimate) from ``target`` (typically 0, the edge of chaos). A scalar tensor with a
    graph to the parameters; add ``weight * flossing_loss(model, x, k)`` to a task loss. ``inputs [B, T, F]``
    as in :func:`lyapunov_spectrum`; short streams (``T`` of tens of steps) and small ``k`` keep it cheap."""
    res = lyapunov_spectrum(net, inputs, k, transient=transient, seed=seed)
    return (res.per_sample - target).pow(2).mean()


# --- the QR iteration ------------------------------------------------------------------------------------------
def _spectrum(system: StateSystem, inputs: Tensor, k: int, *, transient: int | None, state: Any,
              seed: int) -> LyapunovResult:
    _check_inputs(inputs, system.input_size)
    d = system.state_size
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= d:
        raise ValueError(f"k must be an integer in [1, {d}] (the state width), got {k!r}")
    B, T = inputs.shape[0], inputs.shape[1]
    transient = T // 4 if transient is None else int(transient)
    if not 0 <= transient < T:
        raise ValueError(f"transient must be in [0, T) with T = {T} input steps, got {transient}; give a longer "
                         f"input stream or a shorter transient")
    dtype = inputs.dtype if inputs.is_floating_point() else param_dtype(system.module, torch.get_default_dtype())
    device = inputs.device
    full = system.initial(B, device, dtype) if state is None else state
    gen = torch.Generator().manual_seed(seed)
    q0 = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))[0]
    Q = q0.to(device=device, dtype=dtype).expand(B, d, k).contiguous()
    tiny = torch.finfo(dtype).tiny
    log_sum = torch.zeros(B, k, device=device, dtype=dtype)
    with eval_mode(system.module):
        for t, x_t in enumerate(inputs.unbind(1)):
            counted = t >= transient
            ctx = contextlib.nullcontext() if counted else torch.no_grad()
            with ctx:
                JQ = _jvp_columns(system, x_t, full, Q)
                full = system.step(x_t, full)
                Q, R = torch.linalg.qr(JQ)
                if counted:
                    log_sum = log_sum + torch.diagonal(R, dim1=-2, dim2=-1).abs().clamp_min(tiny).log()
    steps = T - transient
    per_sample = (log_sum / steps).sort(dim=-1, descending=True).values
    return LyapunovResult(per_sample.mean(0), per_sample, steps, transient)


def _jvp_columns(system: StateSystem, x_t: Tensor, full: Any, Q: Tensor) -> Tensor:
    """``J Q`` for the one-step Jacobian ``J = d flatten(step(x_t, unflatten(full, s))) / d s`` at
    ``s = flatten(full)``: ``Q [B, d, k] -> [B, d, k]``.

    One forward-mode pass over the batch repeated ``k`` times (sample ``b``'s ``k`` copies carry its ``k``
    directions): samples never mix in a step, and this measured about 1.5x faster than ``vmap`` over ``jvp``.
    """
    B, d, k = Q.shape
    full_k = _map_tensors(lambda t: t.repeat_interleave(k, 0), full)
    x_k = x_t.repeat_interleave(k, 0)
    tangents = Q.transpose(1, 2).reshape(B * k, d)
    with fwAD.dual_level():
        s = fwAD.make_dual(system.flatten(full_k), tangents)
        out = system.flatten(system.step(x_k, system.unflatten(full_k, s)))
        JQ = fwAD.unpack_dual(out).tangent
    if JQ is None:  # the new state does not depend on the old one at all
        JQ = torch.zeros_like(tangents)
    return JQ.reshape(B, k, d).transpose(1, 2)


# --- helpers -----------------------------------------------------------------------------------------------------
def _map_tensors(fn: Callable[[Tensor], Tensor], obj: Any) -> Any:
    """Apply ``fn`` to every tensor of a state (a NamedTuple, or a list/tuple of them); other leaves unchanged."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_map_tensors(fn, v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(fn, v) for v in obj)
    return obj


def _state_width(cell: Any) -> int:
    """Width of a cell's stability state (from a one-sample zero state)."""
    dtype = param_dtype(cell, torch.get_default_dtype())
    return int(cell.stability_state(cell.initial_state(1, dtype=dtype)).shape[-1])


def _check_inputs(inputs: Tensor, input_size: int) -> None:
    if isinstance(inputs, Tensor) and inputs.dim() == 2 and not inputs.is_floating_point():
        return  # token ids [B, T] for a stack with an embedding encoder (its encode() checks the rest)
    if not isinstance(inputs, Tensor) or inputs.dim() != 3 or inputs.shape[-1] != input_size:
        shape = list(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be [batch, time, {input_size}] (batch-first), got {shape}")


__all__ = [
    "LyapunovResult",
    "StateSystem",
    "as_system",
    "flossing_loss",
    "is_stack",
    "layer_inputs",
    "layer_lyapunov_spectra",
    "lyapunov_spectrum",
]
