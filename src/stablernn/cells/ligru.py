"""Light gated recurrent units: the Li-GRU and its stabilised form.

Li-GRU (Ravanelli et al. 2018, "Light gated recurrent units for speech recognition", arXiv:1803.10225, §3): a GRU
without reset gate, with a ReLU candidate and batch-normalised input projections:

    z[t] = σ(BN(W_z x[t]) + U_z h[t-1])
    ĥ[t] = ReLU(BN(W_h x[t]) + U_h h[t-1])
    h[t] = z[t] ⊙ h[t-1] + (1 - z[t]) ⊙ ĥ[t]

The unbounded ReLU candidate lets ``U_h`` amplify ``h`` step after step: the time Jacobian contains
``(1 - z) ⊙ 1[ĥ > 0] ⊙ U_h`` and nothing bounds it, so activations and gradients explode once U_h's gain on the
active units exceeds 1. The stabilised Li-GRU (Moumen & Parcollet 2023, "Stabilising and accelerating light gated
recurrent units for automatic speech recognition", arXiv:2302.10144, §3) normalises the recurrent term:

    [a_z, a_h] = BN(W x[t]) + LN(U h[t-1])          (LN over the 2H recurrent pre-activations)

so the recurrent contribution has unit scale whatever |h| is, and its Jacobian shrinks as 1/|U h|.

The layer norm's epsilon is 1 here, not PyTorch's 1e-5 (``LN_EPS``; ``ln_eps`` to change it). LN is scale-invariant,
so its Jacobian is ``(γ/s) (I - 11ᵀ/n - ŷŷᵀ/n)`` with ``s = sqrt(var(U h) + eps)``: of norm ``γ/s ≤ γ/sqrt(eps)``,
i.e. it grows as ``1/|h|`` when ``h`` is small. With eps = 1e-5 the time Jacobian's radius at init measured 118 at
the zero initial state and 7.4 at t = 1 (one 64-unit layer on digits rows; docs/cells.md), so LSC could not bring it
to 0.5 (it ended at 3.9 / 38 at depth 2 / 5). eps = 1 sets the crossover at the unit scale of the batch-normalised
input term: for ``var(U h) ≫ 1`` the term is normalised as in the paper (its RMS is at most γ whatever |h| is, the
cure for the explosion); for small ``h`` it is ``≈ γ U h`` with the Jacobian bounded by ``γ ‖U‖``, the Li-GRU's own.
Measured radius at init: 0.84-0.86 at every step; LSC then converges at depth 2 and 5 (tests/test_lsc_new_cells.py).

Batch normalisation of the input projection uses the batch statistics of each time step in training mode and running
statistics in eval mode. The step (:meth:`LiGRUCell.forward`) is pure: the running statistics are updated by
:meth:`LiGRUCell.forward_sequence` (the path ``DeepRNN.run`` takes), as if each step had been a ``BatchNorm1d`` call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import check_input
from .init import glorot_uniform_, orthogonal_blocks_
from .rnn import HiddenStateCell, HState

BN_MOMENTUM = 0.1  # as torch.nn.BatchNorm1d
NORM_EPS = 1e-5
LN_EPS = 1.0  # the recurrent layer norm's epsilon: bounds its Jacobian by 1/sqrt(LN_EPS) (module docstring)


def batch_normalise(p: Tensor, *, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                    training: bool, eps: float = NORM_EPS) -> Tensor:
    """Batch-normalise ``p [B, F]`` (one step) or ``p [B, T, F]`` (each time step over its own batch statistics
    in training mode; the running statistics in eval mode)."""
    if training:
        mean, var = p.mean(0), p.var(0, unbiased=False)
    else:
        mean, var = running_mean, running_var
    return (p - mean) * torch.rsqrt(var + eps) * weight + bias


@torch.no_grad()
def update_running_stats_(p: Tensor, running_mean: Tensor, running_var: Tensor, momentum: float = BN_MOMENTUM
                          ) -> None:
    """The running statistics after one ``BatchNorm1d``-style update per time step of ``p [B, T, F]`` (closed form:
    ``r_T = (1-m)^T r_0 + Σ_t m (1-m)^(T-1-t) μ_t``; the variance unbiased, as in PyTorch)."""
    B, T = p.shape[0], p.shape[1]
    mean = p.mean(0)  # [T, F]
    var = p.var(0, unbiased=B > 1)
    w = momentum * (1.0 - momentum) ** torch.arange(T - 1, -1, -1, dtype=p.dtype, device=p.device)  # [T]
    keep = (1.0 - momentum) ** T
    running_mean.mul_(keep).add_((w[:, None] * mean).sum(0).to(running_mean.dtype))
    running_var.mul_(keep).add_((w[:, None] * var).sum(0).to(running_var.dtype))


def ligru_step(a: Tensor, h: Tensor, *, weight_hh: Tensor, ln_weight: Tensor | None = None,
               ln_bias: Tensor | None = None, eps: float = NORM_EPS) -> Tensor:
    """One Li-GRU step from the normalised input projection ``a [B, 2H]`` (z then ĥ) and ``h [B, H]``; returns
    ``h' [B, H]``. With ``ln_weight`` the recurrent term is layer-normalised (the stabilised Li-GRU)."""
    rec = F.linear(h, weight_hh)
    if ln_weight is not None:
        rec = F.layer_norm(rec, rec.shape[-1:], ln_weight, ln_bias, eps)
    a_z, a_h = (a + rec).chunk(2, dim=-1)
    z = torch.sigmoid(a_z)
    return z * h + (1.0 - z) * torch.relu(a_h)


class LiGRUCell(HiddenStateCell):
    """Li-GRU layer (``stable=False``) or stabilised Li-GRU (``stable=True``); output and stability state ``h``.

    Parameters: ``weight_ih [2H, in]`` (glorot), ``weight_hh [2H, H]`` (orthogonal blocks; gate order z, ĥ), the
    input batch-norm affine ``bn_weight, bn_bias [2H]`` and, if stable, the recurrent layer-norm affine
    ``ln_weight, ln_bias [2H]`` with epsilon ``ln_eps`` (module docstring: why 1).
    """

    def __init__(self, input_size: int, hidden_size: int, *, stable: bool = False, fast: bool = True,
                 ln_eps: float = LN_EPS):
        super().__init__(input_size, hidden_size)
        if not ln_eps > 0:
            raise ValueError(f"LiGRUCell: ln_eps must be > 0 (it bounds the recurrent Jacobian), got {ln_eps}")
        self.stable, self.fast, self.ln_eps = bool(stable), bool(fast), float(ln_eps)
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(2 * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(2 * H, H))
        glorot_uniform_(self.weight_ih, input_size, 2 * H)
        orthogonal_blocks_(self.weight_hh, 2)
        self.bn_weight = nn.Parameter(torch.ones(2 * H))
        self.bn_bias = nn.Parameter(torch.zeros(2 * H))
        self.register_buffer("running_mean", torch.zeros(2 * H))
        self.register_buffer("running_var", torch.ones(2 * H))
        if self.stable:
            self.ln_weight = nn.Parameter(torch.ones(2 * H))
            self.ln_bias = nn.Parameter(torch.zeros(2 * H))
        else:
            self.ln_weight = self.ln_bias = None

    def _normalise(self, p: Tensor) -> Tensor:
        return batch_normalise(p, weight=self.bn_weight, bias=self.bn_bias, running_mean=self.running_mean,
                               running_var=self.running_var, training=self.training)

    def _step(self, a: Tensor, h: Tensor) -> Tensor:
        return ligru_step(a, h, weight_hh=self.weight_hh, ln_weight=self.ln_weight, ln_bias=self.ln_bias,
                          eps=self.ln_eps)

    def forward(self, x: Tensor, state: HState) -> tuple[Tensor, HState]:
        check_input(self, x)
        h = self._step(self._normalise(F.linear(x, self.weight_ih)), state.h)
        return h, HState(h)

    def forward_sequence(self, x: Tensor, state: HState) -> tuple[Tensor, HState]:
        """All steps, ``x [B, T, input_size] -> (h [B, T, H], final state)``. When ``self.fast`` (and the step is not
        overridden) the input projection and its normalisation run once over the whole sequence and only the
        recurrence loops; else the step loop. Both update the running statistics in training mode."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}.forward_sequence expects [batch, time, {self.input_size}], "
                             f"got {list(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("forward_sequence needs at least one time step, got T = 0")
        p = F.linear(x, self.weight_ih)  # [B, T, 2H]
        if self.fast and type(self).forward is LiGRUCell.forward:
            a = self._normalise(p)
            h, outs = state.h, []
            for a_t in a.unbind(1):
                h = self._step(a_t, h)
                outs.append(h)
            out, final = torch.stack(outs, 1), HState(h)
        else:
            out, final = super().forward_sequence(x, state)
        if self.training:
            update_running_stats_(p.detach(), self.running_mean, self.running_var)
        return out, final

    def extra_repr(self) -> str:
        extra = f", ln_eps={self.ln_eps:g}" if self.stable else ""
        return f"{self.input_size}, {self.hidden_size}, stable={self.stable}{extra}"

    def gate_preactivations(self, x: Tensor, state: HState) -> Tensor:
        """Pre-activation of the update gate z for one step (the gate-saturation guard, lsc/activity.py):
        ``x [B, in]`` -> ``[B, 1, H]``."""
        check_input(self, x)
        rec = F.linear(state.h, self.weight_hh)
        if self.ln_weight is not None:
            rec = F.layer_norm(rec, rec.shape[-1:], self.ln_weight, self.ln_bias, self.ln_eps)
        a = self._normalise(F.linear(x, self.weight_ih)) + rec
        return a[:, : self.hidden_size].unsqueeze(1)

    @torch.no_grad()
    def shift_gate_biases_(self, delta: Tensor) -> None:
        """Add ``delta [1, H]`` to the update gate's bias (the z half of the input batch norm's ``bn_bias``)."""
        H = self.hidden_size
        if tuple(delta.shape) != (1, H):
            raise ValueError(f"gate bias shift must have shape {[1, H]}, got {list(delta.shape)}")
        self.bn_bias[:H] += delta[0].to(self.bn_bias)


__all__ = ["LN_EPS", "LiGRUCell", "batch_normalise", "ligru_step", "update_running_stats_"]
