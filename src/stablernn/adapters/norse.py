"""Norse ``LIFRecurrentCell``, ``LSNNRecurrentCell`` and ``LIFCell`` (fed by the ``nn.Linear`` before it),
computed from Norse 1.1's ``lif_step`` / ``lif_feed_forward_step`` (norse/torch/functional/lif.py, one Euler step of
length ``dt``; ``lsnn_step`` for LSNN, below) on the module's own weights and parameters:

    i_jump = i + W_in x (+ W_rec z)
    v_dec  = v + dt τ_mem⁻¹ ((v_leak - v) + i_jump);     i' = i_jump - dt τ_syn⁻¹ i_jump
    z      = H(v_dec - v_th) with SuperSpike's gradient;  v' = (1 - z) v_dec + z v_reset

Norse's state after a step holds the *reset* voltage, from which the spike cannot be recomputed; the view's state
holds ``v_dec`` (the voltage before the reset) and applies the reset at the start of the next step, so the stability
state ``[v_dec, i]`` determines the spike (with its surrogate gradient) and the time Jacobian includes the recurrent
and reset paths. Outputs are the same spikes, step for step.

Leak constants: ``p.tau_mem_inv`` and ``p.tau_syn_inv`` live in the module's ``p`` (a NamedTuple, not a buffer, so
not in its ``state_dict``). The adapter gives the module its own copies (``LIFParameters()`` defaults are one tensor
shared by every instance) and registers those same tensors as buffers of the view cell: LSC's time-constant
rescaling changes them in place (the user's module sees it), and LSC's snapshot and restore (the view's
``state_dict``) include them. :func:`~stablernn.adapters.leak_constants` lists them for saving next to the user's
own ``state_dict``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells.base import MIN_TIME_CONSTANT, check_input
from ..surrogate import get
from .base import LayerAdapter, owned_tensor, refuse_layer, register_layer, zeros


class NorseState(NamedTuple):
    v: Tensor  # membrane before this step's reset [B, n]
    i: Tensor  # synaptic current [B, n]
    z: Tensor  # spikes of the last step [B, n]


def norse_spike(p: Any) -> Any:
    """The stablernn alias of Norse's threshold ``p.method``: ``"super"`` -> ``norse_super`` (Norse 1.1's
    SuperSpike, which ignores ``p.alpha``); other methods raise ``ValueError`` naming the choice."""
    if p.method == "super":
        return get("norse_super")
    raise ValueError(f"Norse threshold method {p.method!r} is not supported by the adapter (its autograd.Function "
                     f"has no vmap rule and no stablernn alias yet); use LIFParameters(method='super'), which maps "
                     f"to stablernn's 'norse_super'")


class NorseLIFCell(nn.Module):
    """A Norse LIF layer as a stablernn cell (recurrent ``LIFRecurrentCell``, or ``Linear -> LIFCell``).

    Stability state ``[v, i]`` (``[B, 2n]``); output: the spikes.
    """

    def __init__(self, module: nn.Module, fc: nn.Linear | None, hidden_size: int):
        super().__init__()
        self.recurrent = hasattr(module, "recurrent_weights")
        self.module_ref = [module]  # the user's Norse module (for p and dt), not a submodule
        self.fc = fc
        if self.recurrent:
            self.input_weights, self.recurrent_weights = module.input_weights, module.recurrent_weights
            n_in = module.input_weights.shape[1]
            mask = torch.ones(hidden_size, hidden_size)
            if not module.autapses:
                mask.fill_diagonal_(0.0)
            self.register_buffer("rec_mask", mask.to(module.recurrent_weights.dtype), persistent=False)
        else:
            n_in = fc.in_features if fc is not None else hidden_size
        self.input_size, self.hidden_size = int(n_in), int(hidden_size)
        self.dt = float(module.dt)
        p = module.p
        tm, ts = owned_tensor(module, "tau_mem_inv", p.tau_mem_inv), owned_tensor(module, "tau_syn_inv", p.tau_syn_inv)
        module.p = p._replace(tau_mem_inv=tm, tau_syn_inv=ts)
        self.register_buffer("tau_mem_inv", tm)  # the same tensors as the module's p: shared, not copied
        self.register_buffer("tau_syn_inv", ts)
        self.spike = norse_spike(p)

    @property
    def p(self) -> Any:
        return self.module_ref[0].p

    @property
    def threshold(self) -> Tensor:
        """``v_th`` per neuron (read by the firing-rate diagnostics). Norse's current-based Euler LIF is not the
        model the spiking stability conditions are derived for, so this cell offers no ``weight_hh`` / ``decay``
        and ``stablernn.snn.design`` leaves it alone."""
        return torch.as_tensor(self.p.v_th).expand(self.hidden_size)

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> NorseState:
        ref = self.input_weights if self.recurrent else (self.fc.weight if self.fc is not None else self.tau_mem_inv)
        z = zeros(ref, batch_size, self.hidden_size, device, dtype)
        return NorseState(z + torch.as_tensor(self.p.v_leak, dtype=z.dtype, device=z.device), z, z)

    def forward(self, x: Tensor, state: NorseState) -> tuple[Tensor, NorseState]:
        check_input(self, x)
        p = self.p
        z = state.z
        if self.recurrent:  # lif_step detaches the reset; lif_feed_forward_step does not
            zr = z.detach()
            v = (1 - zr) * state.v + zr * p.v_reset
            i_jump = state.i + F.linear(x, self.input_weights) + F.linear(z, self.recurrent_weights * self.rec_mask)
        else:
            v = (1 - z) * state.v + z * p.v_reset
            i_jump = state.i + (self.fc(x) if self.fc is not None else x)
        dv = self.dt * self.tau_mem_inv * ((p.v_leak - v) + i_jump)
        v_decayed = v + dv
        di = -self.dt * self.tau_syn_inv * i_jump
        i_decayed = i_jump + di
        z_new = self.spike(v_decayed - p.v_th)
        return z_new, NorseState(v_decayed, i_decayed, z_new)

    def output(self, state: NorseState) -> Tensor:
        return state.z

    def stability_state(self, state: NorseState) -> Tensor:
        return torch.cat([state.v, state.i], -1)

    def with_stability_state(self, state: NorseState, s: Tensor) -> NorseState:
        v, i = s.split(self.hidden_size, -1)
        return NorseState(v, i, self.spike(v - self.p.v_th))

    @torch.no_grad()
    def scale_time_constants(self, m: float, target: float | None = None) -> None:
        """τ → m·τ: ``tau_mem_inv`` and ``tau_syn_inv`` divided by ``m`` in place (the user's ``p`` sees it); the
        Euler decay ``1 - dt/τ`` stays >= 0, i.e. τ no shorter than ``max(dt, MIN_TIME_CONSTANT steps)``."""
        if not m > 0:
            raise ValueError(f"time-constant scale must be > 0, got {m}")
        cap = 1.0 / (self.dt * max(1.0, MIN_TIME_CONSTANT))
        for t in (self.tau_mem_inv, self.tau_syn_inv):
            t.div_(m).clamp_(max=cap)

    def extra_repr(self) -> str:
        kind = "LIFRecurrentCell" if self.recurrent else "LIFCell"
        return f"Norse {kind}, {self.input_size}, {self.hidden_size}, dt={self.dt:g}"


def build_recurrent(module: nn.Module, fc: nn.Linear | None) -> list[nn.Module]:
    if getattr(module.p, "method", "super") == "adjoint":
        raise ValueError("Norse LIFParameters(method='adjoint') is not supported by the adapter")
    return [NorseLIFCell(module, None, int(module.recurrent_weights.shape[0]))]


def build_feed_forward(module: nn.Module, fc: nn.Linear | None) -> list[nn.Module]:
    if fc is None:
        raise ValueError("a Norse LIFCell needs an nn.Linear before it (its input current) for the adapter to know "
                         "its width")
    return [NorseLIFCell(module, fc, fc.out_features)]


class LSNNState(NamedTuple):
    v: Tensor  # membrane before this step's reset [B, n]
    i: Tensor  # synaptic current after this step's jump [B, n]
    b: Tensor  # threshold before this step's spike increment [B, n]
    z: Tensor  # spikes of the last step [B, n]


class NorseLSNNCell(NorseLIFCell):
    """Norse ``LSNNRecurrentCell`` (``lsnn_step``: adaptive threshold ``b``, Bellec et al. 2018, arXiv:1803.09574)
    as a stablernn cell. As for LIF, the view keeps ``v`` and ``b`` before the spike's reset / increment and applies
    them at the start of the next step; Norse adds this step's input and the previous spikes to ``i`` *after* the spike,
    so ``i`` is stored after the jump. Stability state ``[v, i, b]``; ``tau_adapt_inv`` is not rescaled (shortening the
    adaptation raises its feedback; see ``stablernn.ALIFCell.scale_time_constants``)."""

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> LSNNState:
        z = zeros(self.input_weights, batch_size, self.hidden_size, device, dtype)
        p = self.p
        return LSNNState(z + torch.as_tensor(p.v_leak, dtype=z.dtype, device=z.device), z,
                         z + torch.as_tensor(p.v_th, dtype=z.dtype, device=z.device), z)

    def forward(self, x: Tensor, state: LSNNState) -> tuple[Tensor, LSNNState]:
        check_input(self, x)
        p = self.p
        zr = state.z.detach()
        v = (1 - zr) * state.v + zr * p.v_reset
        b = state.b + zr * p.beta
        dv = self.dt * self.tau_mem_inv * ((p.v_leak - v) + state.i)
        v_decayed = v + dv
        di = -self.dt * self.tau_syn_inv * state.i
        i_decayed = state.i + di
        db = self.dt * p.tau_adapt_inv * (p.v_th - b)
        b_decayed = b + db
        z_new = self.spike(v_decayed - b_decayed)
        i_new = i_decayed + F.linear(x, self.input_weights) + F.linear(state.z, self.recurrent_weights * self.rec_mask)
        return z_new, LSNNState(v_decayed, i_new, b_decayed, z_new)

    def stability_state(self, state: LSNNState) -> Tensor:
        return torch.cat([state.v, state.i, state.b], -1)

    def with_stability_state(self, state: LSNNState, s: Tensor) -> LSNNState:
        v, i, b = s.split(self.hidden_size, -1)
        return LSNNState(v, i, b, self.spike(v - b))

    def extra_repr(self) -> str:
        return f"Norse LSNNRecurrentCell, {self.input_size}, {self.hidden_size}, dt={self.dt:g}"


def build_lsnn(module: nn.Module, fc: nn.Linear | None) -> list[nn.Module]:
    return [NorseLSNNCell(module, None, int(module.recurrent_weights.shape[0]))]


register_layer(LayerAdapter("norse.LIFRecurrentCell", build_recurrent, takes_current=False, library="norse"))
register_layer(LayerAdapter("norse.LIFCell", build_feed_forward, takes_current=True, library="norse"))
register_layer(LayerAdapter("norse.LSNNRecurrentCell", build_lsnn, takes_current=False, library="norse"))
for _name in ("LSNNCell", "LIFAdExRecurrentCell", "LIFAdExCell"):
    refuse_layer(f"norse.{_name}", f"Norse {_name} is not supported by the adapter yet (adaptive thresholds); "
                 "write its step with the generic step protocol (docs/your-model.md) or use stablernn.ALIFCell")

__all__ = ["NorseLIFCell", "NorseLSNNCell", "build_feed_forward", "build_lsnn", "build_recurrent", "norse_spike"]
