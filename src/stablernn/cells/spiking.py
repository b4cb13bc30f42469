"""Recurrent LIF and ALIF spiking cells (paper B, arXiv:2202.00282): a pure step function and two thin modules.

Per neuron j, with decay δ = exp(-1/τ) and δ_a = exp(-1/τ_a):

    i[t]  = x[t] W_ih^T + z[t-1] (M ⊙ W_hh)^T + b          (M removes self-connections unless allowed)
    a[t]  = δ_a a[t-1] + (1 - δ_a) z[t-1]                     (ALIF; LIF keeps a = 0)
    ϑ[t]  = ϑ + β a[t]
    v[t]  = δ v[t-1] + i[t] - ϑ[t] z[t-1]                     reset="subtract"
          = (δ v[t-1] + i[t]) (1 - z[t-1])                    reset="multiplicative"   (spec multreset1)
          = δ v[t-1] (1 - z[t-1]) + i[t]                      reset="mult_leak"        (spec multreset2)
    z[t]  = H(v[t] - ϑ[t])                                    Heaviside forward, surrogate gradient backward

With ``detach_reset`` the z[t-1] of the reset term carries no gradient (it still does through the recurrent current
and the adaptation). Weights are ``[post, pre]`` (PyTorch layout). Time constants are in steps.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..surrogate import SpikeFunction
from .base import MIN_TIME_CONSTANT, Cell, StructuredJacobian, check_input, same_methods, split_state
from .fast_spiking import spiking_sequence
from .init import glorot_uniform_
from .resets import RESETS, Reset

SpikeFn = Callable[[Tensor], Tensor]


def decay_from_tau(tau: Tensor | float) -> Tensor:
    """δ = exp(-1/τ), τ in steps: the one place time constants become decays."""
    tau = torch.as_tensor(tau)
    return torch.exp(-1.0 / tau)


def tau_from_decay(decay: Tensor | float) -> Tensor:
    """τ = -1 / log δ (inverse of :func:`decay_from_tau`)."""
    decay = torch.as_tensor(decay)
    return -1.0 / torch.log(decay)


def spiking_step(
    x: Tensor, v: Tensor, a: Tensor | None, z: Tensor, *,
    weight_ih: Tensor, weight_hh: Tensor, bias: Tensor | None,
    decay: Tensor, decay_a: Tensor | None, threshold: Tensor, beta: Tensor | None,
    reset: Reset, detach_reset: bool, spike: SpikeFn,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """One LIF (``a is None``) or ALIF step. Shapes: x ``[B, in]``, v/a/z ``[B, n]``, per-neuron params ``[n]``.

    Returns ``(z_new, v_new, a_new, thr_new)``; ``weight_hh`` must already have its self-connections masked.
    """
    current = F.linear(x, weight_ih, bias) + F.linear(z, weight_hh)
    if a is not None:
        a = decay_a * a + (1.0 - decay_a) * z
        thr = threshold + beta * a
    else:
        thr = threshold
    zr = z.detach() if detach_reset else z
    if reset == "subtract":
        v = decay * v + current - thr * zr
    elif reset == "multiplicative":
        v = (decay * v + current) * (1.0 - zr)
    elif reset == "mult_leak":
        v = decay * v * (1.0 - zr) + current
    else:
        raise ValueError(f"unknown reset {reset!r}; choose one of {', '.join(RESETS)}")
    return spike(v - thr), v, a, thr


class LIFState(NamedTuple):
    v: Tensor  # membrane potential [B, n]
    z: Tensor  # spikes of the previous step [B, n]


class ALIFState(NamedTuple):
    v: Tensor  # membrane potential [B, n]
    a: Tensor  # threshold adaptation [B, n]
    z: Tensor  # spikes of the previous step [B, n]


def _per_neuron(value: float | Tensor, n: int, name: str, positive: bool = True) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()
    if t.dim() == 0:
        t = t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"{name} must be a scalar or a per-neuron vector of length {n}, got shape {list(t.shape)}")
    if positive and torch.any(t <= 0):
        raise ValueError(f"{name} must be > 0, got min {t.min().item():g}")
    if not torch.all(torch.isfinite(t)):
        raise ValueError(f"{name} must be finite")
    return t


class LIFCell(Cell):
    """Recurrent leaky integrate-and-fire layer; outputs spikes ``z [B, n]``; stability state ``v``.

    Args:
        tau: membrane time constant in steps (scalar or per neuron). The papers' code: 0.1 (δ ≈ 0, docs/surrogates.md);
            pass ``tau=0.1`` to reproduce it.
        threshold: firing threshold ϑ.
        reset: ``subtract`` | ``multiplicative`` | ``mult_leak``.
        detach_reset: cut the gradient of the reset path (always on in the papers' code, docs/surrogates.md 7.1).
        spike: a surrogate name (``stablernn.surrogate.names()``) or a callable spike function.
        self_connections: keep the diagonal of the recurrent matrix.
        learn_tau, learn_threshold: make those per-neuron vectors trainable.
        fast: let :meth:`forward_sequence` use the fused whole-sequence path (``fast_spiking.py``) when the spike
            function is a ``stablernn.surrogate.SpikeFunction``; ``False`` runs the step loop (the reference).
    """

    adaptive = False

    def __init__(self, input_size: int, hidden_size: int, *, tau: float | Tensor = 20.0,
                 threshold: float | Tensor = 1.0, reset: Reset = "subtract", detach_reset: bool = True,
                 spike: str | SpikeFn | None = "fast_sigmoid", self_connections: bool = False,
                 learn_tau: bool = False, learn_threshold: bool = False, recurrent: bool = True,
                 fast: bool = True):
        super().__init__(input_size, hidden_size)
        self.fast = bool(fast)
        from ..surrogate import resolve  # local: surrogate is a sibling package module

        if reset not in RESETS:
            raise ValueError(f"unknown reset {reset!r}; choose one of {', '.join(RESETS)}")
        n = hidden_size
        self.reset, self.detach_reset, self.recurrent = reset, bool(detach_reset), bool(recurrent)
        self.spike = resolve(spike)
        self.weight_ih = nn.Parameter(torch.empty(n, input_size))
        self.weight_hh = nn.Parameter(torch.empty(n, n))
        self.bias = nn.Parameter(torch.zeros(n))
        glorot_uniform_(self.weight_ih, input_size, n)
        glorot_uniform_(self.weight_hh, n, n)
        if not recurrent:
            self.weight_hh.requires_grad_(False)
            with torch.no_grad():
                self.weight_hh.zero_()
        mask = torch.ones(n, n) if self_connections else 1.0 - torch.eye(n)
        self.register_buffer("rec_mask", mask)
        self._register("tau", _per_neuron(tau, n, "tau"), learn_tau)
        self._register("threshold", _per_neuron(threshold, n, "threshold"), learn_threshold)

    def _register(self, name: str, value: Tensor, learn: bool) -> None:
        if learn:
            setattr(self, name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    @property
    def decay(self) -> Tensor:
        return decay_from_tau(self.tau)

    @torch.no_grad()
    def scale_time_constants(self, m: float, target: float | None = None) -> None:
        """τ → m·τ in place (the decay δ becomes δ^(1/m)), never below ``MIN_TIME_CONSTANT``. LSC calls it: with no
        self-connections the time Jacobian ``δ I + W_hh diag(σ')`` has trace n·δ, so its radius is at least δ
        whatever the weights. ``target`` (LSC's time target) is not needed here: a shorter τ raises no eigenvalue."""
        if not m > 0:
            raise ValueError(f"time-constant scale must be > 0, got {m}")
        self.tau.mul_(m).clamp_(min=MIN_TIME_CONSTANT)

    def recurrent_weight(self) -> Tensor:
        """``W_hh`` with self-connections masked, ``[n, n]`` (post, pre)."""
        return self.weight_hh * self.rec_mask

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> LIFState:
        z = self._zeros(batch_size, self.hidden_size, device, dtype)
        return LIFState(z, z)

    def _step(self, x: Tensor, v: Tensor, a: Tensor | None, z: Tensor):
        return spiking_step(
            x, v, a, z, weight_ih=self.weight_ih, weight_hh=self.recurrent_weight(), bias=self.bias,
            decay=self.decay, decay_a=self.decay_a if self.adaptive else None, threshold=self.threshold,
            beta=self.beta if self.adaptive else None, reset=self.reset, detach_reset=self.detach_reset,
            spike=self.spike)

    def forward(self, x: Tensor, state: LIFState) -> tuple[Tensor, LIFState]:
        check_input(self, x)
        z, v, _, _ = self._step(x, state.v, None, state.z)
        return z, LIFState(v, z)

    def forward_sequence(self, x: Tensor, state: LIFState) -> tuple[Tensor, LIFState]:
        """All steps, ``x [B, T, input_size] -> (z [B, T, n], final state)``: the fused path of
        ``fast_spiking.py`` when ``self.fast`` and the spike function allow it, else the step loop. Both give the
        same outputs, final state and gradients (double backward only through the step loop)."""
        if self.fast and fast_path_supported(self):
            return spiking_cell_sequence(self, x, state)
        return super().forward_sequence(x, state)

    def output(self, state: LIFState) -> Tensor:
        return state.z

    def stability_state(self, state: LIFState) -> Tensor:
        return state.v

    def with_stability_state(self, state: LIFState, s: Tensor) -> LIFState:
        """Spikes are recomputed from ``v`` with their surrogate gradient (spec "reoldspike"), so the time Jacobian
        ``v[t-1] -> v[t]`` includes the recurrent and reset paths."""
        return LIFState(s, self.spike(s - self.threshold))

    # --- closed-form Jacobians (cells.base.HasStateJacobian; docs/lsc.md "Closed-form Jacobians") ----------------
    def _closed_form(self) -> bool:
        """Covered: the surrogate is a ``SpikeFunction`` (its slope is known) and the step, the recurrent matrix and
        the state maps are this module's own (a subclass that overrides one, e.g. DECOLLE's forward, is not)."""
        base = ALIFCell if self.adaptive else LIFCell
        return isinstance(self.spike, SpikeFunction) and isinstance(self, base) and same_methods(
            self, base, ("forward", "_step", "recurrent_weight", "with_stability_state", "stability_state", "output"))

    def _spike_slopes(self, state: Any) -> tuple[Tensor, list[Tensor]]:
        """Spikes recomputed from the stability state (as ``with_stability_state`` does) and ``dz/ds`` per block of
        ``s``: ``(z [B, n], [f(u)] | [f(u), -β f(u)])``, ``u = v - ϑ - β a``, f the surrogate derivative."""
        u = state.v - self.threshold - (self.beta * state.a if self.adaptive else 0.0)
        fp = self.spike.derivative(u)
        return self.spike(u), [fp, -self.beta * fp] if self.adaptive else [fp]

    @torch.no_grad()
    def state_jacobian(self, x: Tensor, state: Any) -> StructuredJacobian | None:
        """``d s[t] / d s[t-1]`` ``[B, d, d]`` in closed form (s = v, or [v, a] for ALIF), the spikes z[t-1] recomputed
        from s with their surrogate slope, so the recurrent, reset and adaptation paths through z count; the reset
        path's ``dz`` is dropped when ``detach_reset`` (paper B's step, module docstring). The v rows are
        ``diag(ρ) R diag(dz/ds) + diagonal`` (ρ = 1 - z for the multiplicative reset, else 1), the a rows diagonal.
        None if not covered."""
        if not self._closed_form():
            return None
        n = self.hidden_size
        z, dz = self._spike_slopes(state)
        R = self.recurrent_weight()
        delta = self.decay.expand(n)
        k = len(dz)
        eye = [1.0] + [0.0] * (k - 1)  # block j of s is v itself (j = 0) or a (j = 1)
        if self.adaptive:
            da = self.decay_a.expand(n)
            thr_new = self.threshold + self.beta * (da * state.a + (1.0 - da) * z)
            dan = [(1.0 - da) * dz[0], da + (1.0 - da) * dz[1]]  # d a[t] / d (v, a): diagonal
        else:
            thr_new, dan = self.threshold, [torch.zeros_like(z)]
        live = 0.0 if self.detach_reset else 1.0  # the reset term's own dz
        if self.reset == "subtract":  # v' = δ v + c - ϑ[t] z
            dv = [eye[j] * delta - live * thr_new * dz[j] - (self.beta * z * dan[j] if self.adaptive else 0.0)
                  for j in range(k)]  # the last term: through ϑ[t] = ϑ + β a[t]
        elif self.reset == "multiplicative":  # v' = (δ v + c)(1 - z)
            c = F.linear(x, self.weight_ih, self.bias) + F.linear(z, R)
            dv = [eye[j] * delta * (1.0 - z) - live * (delta * state.v + c) * dz[j] for j in range(k)]
        else:  # mult_leak: v' = δ v (1 - z) + c
            dv = [eye[j] * delta * (1.0 - z) - live * delta * state.v * dz[j] for j in range(k)]
        diag = torch.stack([torch.stack(dv, 1)] + ([torch.stack(dan, 1)] if self.adaptive else []), 1)
        return StructuredJacobian(R, torch.stack(dz, 1), self._row_scale(z, k), diag)

    def _row_scale(self, z: Tensor, k: int) -> Tensor:
        """``rows [B, k, 1, n]`` of the structured Jacobians: the current enters v scaled by 1 - z under the
        multiplicative reset (by 1 otherwise) and does not enter a."""
        rho = 1.0 - z if self.reset == "multiplicative" else torch.ones_like(z)
        return torch.stack([rho] + [torch.zeros_like(z)] * (k - 1), 1)[:, :, None]

    @torch.no_grad()
    def input_jacobian(self, x: Tensor, state: Any) -> StructuredJacobian | None:
        """``d s[t] / d x[t]`` ``[B, d, in]`` at ``state`` (its own z[t-1]): ``diag(ρ) W_ih``; a[t] does not
        depend on x."""
        if not self._closed_form():
            return None
        return StructuredJacobian.of_input(self.weight_ih, x, self._row_scale(state.z, 2 if self.adaptive else 1))

    @torch.no_grad()
    def output_jacobian(self, state: Any) -> Tensor | None:
        """``d z / d s`` per block ``[B, k, n]`` (``output`` is the spike recomputed from s, elementwise)."""
        if not self._closed_form():
            return None
        return torch.stack(self._spike_slopes(state)[1], 1)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, reset={self.reset}, detach_reset={self.detach_reset}, "
                f"tau≈{self.tau.mean().item():.3g}, threshold≈{self.threshold.mean().item():.3g}")


class ALIFCell(LIFCell):
    """Adaptive LIF: the threshold rises by ``β a`` after spikes, ``a`` decaying with ``τ_a`` (arXiv:2202.00282).

    Stability state ``[v, a]`` (``[B, 2n]``). ``beta`` and ``tau_adapt`` may be per-neuron; ``learn_beta`` and
    ``learn_tau_adapt`` make them trainable. A negative β ("ALIF±", spec ``gaussbeta``) is allowed.
    """

    adaptive = True

    def __init__(self, input_size: int, hidden_size: int, *, beta: float | Tensor = 1.8,
                 tau_adapt: float | Tensor = 100.0, learn_beta: bool = False, learn_tau_adapt: bool = False,
                 **lif_options: Any):
        super().__init__(input_size, hidden_size, **lif_options)
        n = hidden_size
        self._register("beta", _per_neuron(beta, n, "beta", positive=False), learn_beta)
        self._register("tau_adapt", _per_neuron(tau_adapt, n, "tau_adapt"), learn_tau_adapt)

    @property
    def decay_a(self) -> Tensor:
        return decay_from_tau(self.tau_adapt)

    @torch.no_grad()
    def scale_time_constants(self, m: float, target: float | None = None) -> None:
        """τ → m·τ as for LIF, and τ_a → m·τ_a: a neuron near silence has a time-Jacobian eigenvalue δ_a, so the
        adaptation decay bounds the radius too. But shortening τ_a also raises the adaptation feedback: a firing
        neuron's eigenvalue is about ``δ_a - (1 - δ_a) β σ'``, which tends to ``-β σ'`` (up to -1.8) as δ_a -> 0.
        So when shrinking, τ_a stops where δ_a reaches ``target`` (a τ_a already shorter is kept); at target >= 1
        it does not shrink at all. Growing (m > 1) is not bounded."""
        super().scale_time_constants(m, target)
        tau_a = self.tau_adapt
        if m < 1.0 and target is not None:
            stop = -1.0 / math.log(target) if 0.0 < target < 1.0 else math.inf  # τ_a whose δ_a is the target
            tau_a.copy_(torch.maximum(tau_a * m, torch.clamp(tau_a, max=stop)))
        else:
            tau_a.mul_(m)
        tau_a.clamp_(min=MIN_TIME_CONSTANT)

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> ALIFState:
        z = self._zeros(batch_size, self.hidden_size, device, dtype)
        return ALIFState(z, z, z)

    def forward(self, x: Tensor, state: ALIFState) -> tuple[Tensor, ALIFState]:
        check_input(self, x)
        z, v, a, _ = self._step(x, state.v, state.a, state.z)
        return z, ALIFState(v, a, z)

    def output(self, state: ALIFState) -> Tensor:
        return state.z

    def stability_state(self, state: ALIFState) -> Tensor:
        return torch.cat([state.v, state.a], dim=-1)

    def with_stability_state(self, state: ALIFState, s: Tensor) -> ALIFState:
        v, a = split_state(s, [self.hidden_size, self.hidden_size])
        return ALIFState(v, a, self.spike(v - self.threshold - self.beta * a))


def default_tau_adapt(seq_len: int) -> float:
    """The papers' adaptation time constant: half the (repeated) sequence length (the papers' code)."""
    return max(1.0, seq_len / 2.0)


def fast_path_supported(cell: Any) -> bool:
    """Whether ``cell`` (an LIFCell/ALIFCell) can use the fast path: its spike function is a
    :class:`stablernn.surrogate.SpikeFunction` (a user's own callable has no known slope) and its step has not been
    overridden by a subclass (the fast path would silently skip the change)."""
    if not isinstance(cell.spike, SpikeFunction):
        return False
    cls = type(cell)
    base = ALIFCell if isinstance(cell, ALIFCell) else LIFCell
    return cls.forward is base.forward and cls._step is base._step and cls.recurrent_weight is base.recurrent_weight


def spiking_cell_sequence(cell: Any, x: Tensor, state: Any) -> tuple[Tensor, Any]:
    """Run an LIFCell/ALIFCell over ``x [batch, time, input_size]`` through the fast path; returns
    ``(z [batch, time, n], final state)`` equal to the step loop's."""
    if x.dim() != 3 or x.shape[-1] != cell.input_size:
        raise ValueError(f"{type(cell).__name__}.forward_sequence expects [batch, time, {cell.input_size}], got "
                         f"{list(x.shape)}")
    # Under autocast the projection may come back in half precision; the dynamics run in the cell's dtype.
    currents = torch.nn.functional.linear(x, cell.weight_ih, cell.bias).to(cell.weight_hh.dtype)
    rec = cell.recurrent_weight() if cell.recurrent else None
    adaptive = isinstance(cell, ALIFCell)
    z, v, a = spiking_sequence(
        currents, state.v, state.a if adaptive else None, state.z, weight_hh=rec, decay=cell.decay,
        decay_a=cell.decay_a if adaptive else None, threshold=cell.threshold,
        beta=cell.beta if adaptive else None, reset=cell.reset, detach_reset=cell.detach_reset,
        derivative=cell.spike.derivative,
        learnable_spike=cell.spike if cell.spike.learnable else None)
    z_last = z[:, -1]
    final = type(state)(v, a, z_last) if adaptive else type(state)(v, z_last)
    return z, final


__all__ = [
    "RESETS",
    "ALIFCell",
    "ALIFState",
    "LIFCell",
    "LIFState",
    "decay_from_tau",
    "default_tau_adapt",
    "fast_path_supported",
    "spiking_cell_sequence",
    "spiking_step",
    "tau_from_decay",
]
