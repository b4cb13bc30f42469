"""Gated cells: LSTM and GRU, with parameters in PyTorch's ``nn.LSTM`` / ``nn.GRU`` layout so a fused sequence
kernel can run on exactly the weights LSC pre-trained (gate order i, f, g, o for LSTM; r, z, n for GRU)."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import MIN_TIME_CONSTANT, Cell, StructuredJacobian, check_input, run_steps, same_methods, split_state
from .fast_gated import gru_cell_sequence, lstm_cell_sequence
from .init import glorot_uniform_, orthogonal_blocks_
from .rnn import HiddenStateCell, HState


class LSTMState(NamedTuple):
    h: Tensor  # [B, H]
    c: Tensor  # [B, H]


class LSTMCell(Cell):
    """LSTM step (the papers' Keras code): glorot input kernel, orthogonal recurrent blocks, forget-gate bias 1.

    i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh); c' = σ(f) c + σ(i) tanh(g); h' = σ(o) tanh(c').
    The stability state is ``[h, c]`` (``[B, 2H]``): the cell state is part of the time transition.

    ``layer_norm``: the input and recurrent contributions of each gate are normalised separately over the H units,
    and so is ``c'`` before its tanh (Ba et al. 2016, arXiv:1607.06450, Sec. 3.1 / A.1); the step loop then runs
    (PyTorch's fused kernel has no layer norm).
    """

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0, *, fast: bool = True,
                 layer_norm: bool = False):
        super().__init__(input_size, hidden_size)
        self.fast = bool(fast)  # forward_sequence through PyTorch's fused kernel (fast_gated.py)
        H = hidden_size
        _gate_parameters(self, 4)
        _layer_norm_parameters(self, 4, layer_norm)
        if self.layer_norm:
            self.ln_c_gain = nn.Parameter(torch.ones(H))
            self.ln_c_bias = nn.Parameter(torch.zeros(H))
        with torch.no_grad():
            self.bias_ih[H:2 * H] = forget_bias

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> LSTMState:
        z = self._zeros(batch_size, self.hidden_size, device, dtype)
        return LSTMState(z, z)

    def forward(self, x: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        check_input(self, x)
        gi, gh = _gate_inputs(self, x, state.h, 4)
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * state.c + torch.sigmoid(i) * torch.tanh(g)
        c_out = F.layer_norm(c, (self.hidden_size,), self.ln_c_gain, self.ln_c_bias) if self.layer_norm else c
        h = torch.sigmoid(o) * torch.tanh(c_out)
        return h, LSTMState(h, c)

    def forward_sequence(self, x: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """All steps, ``x [B, T, input_size] -> (h [B, T, H], final state)``: PyTorch's fused LSTM kernel on this
        cell's own parameters when ``self.fast`` (and the step is not overridden), else the step loop."""
        return _fused_or_loop(self, LSTMCell, lstm_cell_sequence, x, state)

    def output(self, state: LSTMState) -> Tensor:
        return state.h

    @torch.no_grad()
    def scale_time_constants(self, m: float, target: float | None = None) -> None:
        """The forget gate as a leak: its time constant τ = -1/log f → m·τ at the bias (f → f^(1/m) at zero
        input), for every unit at once (:func:`scale_gate_leak`). LSC calls it: ``dc'/dc = diag(f)`` is a block of
        the time Jacobian, so the top of its spectrum is a cluster of forget-gate values that the radius's gradient
        moves one at a time (docs/lsc.md)."""
        H = self.hidden_size
        scale_gate_leak(self.bias_ih[H:2 * H], self.bias_hh[H:2 * H], m, target)

    # --- closed-form Jacobians (cells.base.HasStateJacobian; docs/lsc.md "Closed-form Jacobians") ----------------
    def _closed_form(self) -> bool:
        """Covered: no layer norm, and the step and state maps are this class's own."""
        return not self.layer_norm and same_methods(self, LSTMCell, ("forward", "output", "stability_state",
                                                                     "with_stability_state"))

    def _gate_slopes(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(d c'/d pre [B, 4, H], d h'/d pre [B, 4, H], f [B, H], d h'/d c' [B, H])``: slopes of c' and h' w.r.t.
        each gate's pre-activation (gate order i, f, g, o), so that ``d c'/d h = Σ_k (d c'/d pre_k) W_hh,k``."""
        gi, gh = _gate_inputs(self, x, h, 4)  # no layer norm here (_closed_form)
        i, f, g, o = (gi + gh).chunk(4, -1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        tc = torch.tanh(f * c + i * g)
        h_per_c = o * (1 - tc * tc)
        dc = torch.stack([i * (1 - i) * g, f * (1 - f) * c, i * (1 - g * g), torch.zeros_like(i)], 1)
        dh = h_per_c[:, None] * dc
        dh[:, 3] = o * (1 - o) * tc
        return dc, dh, f, h_per_c

    @torch.no_grad()
    def state_jacobian(self, x: Tensor, state: LSTMState) -> StructuredJacobian | None:
        """``d [h', c'] / d [h, c]`` ``[B, 2H, 2H]``: the gates' slopes times ``W_hh`` for the h columns,
        ``diag(o (1 - tanh² c') f)`` and ``diag(f)`` for the c columns. None with layer norm."""
        if not self._closed_form():
            return None
        dc, dh, f, h_per_c = self._gate_slopes(x, state.h, state.c)
        ones, zeros = torch.ones_like(f), torch.zeros_like(f)
        diag = torch.stack([torch.stack([zeros, h_per_c * f], 1), torch.stack([zeros, f], 1)], 1)
        return StructuredJacobian(self.weight_hh, torch.stack([ones, zeros], 1), torch.stack([dh, dc], 1), diag)

    @torch.no_grad()
    def input_jacobian(self, x: Tensor, state: LSTMState) -> StructuredJacobian | None:
        """``d [h', c'] / d x`` ``[B, 2H, in]``: the gates' slopes times ``W_ih``."""
        if not self._closed_form():
            return None
        dc, dh, _, _ = self._gate_slopes(x, state.h, state.c)
        return StructuredJacobian.of_input(self.weight_ih, x, torch.stack([dh, dc], 1))

    @torch.no_grad()
    def output_jacobian(self, state: LSTMState) -> Tensor | None:
        """``d h / d [h, c]`` per block ``[B, 2, H]``: ones, zeros (the output is h)."""
        if not self._closed_form():
            return None
        return torch.stack([torch.ones_like(state.h), torch.zeros_like(state.h)], 1)

    def stability_state(self, state: LSTMState) -> Tensor:
        return torch.cat([state.h, state.c], dim=-1)

    def with_stability_state(self, state: LSTMState, s: Tensor) -> LSTMState:
        h, c = split_state(s, [self.hidden_size, self.hidden_size])
        return LSTMState(h, c)

    # the gate-saturation guard's capability (lsc/activity.py, issue 16): the sigmoid gates i, f, o
    SIGMOID_GATES = (0, 1, 3)

    def gate_preactivations(self, x: Tensor, state: LSTMState) -> Tensor:
        """Pre-activations of the sigmoid gates (i, f, o) for one step, ``x [B, in]`` -> ``[B, 3, H]``."""
        return _sigmoid_gate_preactivations(self, x, state.h, 4, self.SIGMOID_GATES)

    @torch.no_grad()
    def shift_gate_biases_(self, delta: Tensor) -> None:
        """Add ``delta [3, H]`` to the biases of the sigmoid gates (i, f, o), in place (through ``bias_ih``)."""
        _shift_gate_biases(self, delta, self.SIGMOID_GATES)


class GRUCell(HiddenStateCell):
    """GRU step in PyTorch's (= Keras ``reset_after=True``) form, glorot input / orthogonal recurrent init.

    r = σ(x W_ir + b_ir + h W_hr + b_hr); z = σ(x W_iz + b_iz + h W_hz + b_hz);
    n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn)); h' = (1 - z) ⊙ n + z ⊙ h.

    ``layer_norm``: the input and recurrent contributions of each gate are normalised separately over the H units
    before their biases (Ba et al. 2016, arXiv:1607.06450, Sec. 3.1); the step loop then runs.
    """

    def __init__(self, input_size: int, hidden_size: int, *, fast: bool = True, layer_norm: bool = False):
        super().__init__(input_size, hidden_size)
        self.fast = bool(fast)  # forward_sequence through PyTorch's fused kernel (fast_gated.py)
        _gate_parameters(self, 3)
        _layer_norm_parameters(self, 3, layer_norm)

    def forward(self, x: Tensor, state: HState) -> tuple[Tensor, HState]:
        check_input(self, x)
        gi, gh = _gate_inputs(self, x, state.h, 3)
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1.0 - z) * n + z * state.h
        return h, HState(h)

    # --- closed-form Jacobians (cells.base.HasStateJacobian; docs/lsc.md "Closed-form Jacobians") ----------------
    def _slopes(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(d h'/d [h W_r, h W_z, h W_n] [B, 3, H], d h'/d [x W_ir, x W_iz, x W_in] [B, 3, H], z [B, H])``; None
        when not covered (layer norm, or a step or state map not this class's own)."""
        if self.layer_norm or not same_methods(self, GRUCell, ("forward", "output", "stability_state",
                                                               "with_stability_state")):
            return None
        gi, gh = _gate_inputs(self, x, h, 3)
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        dn = (1 - z) * (1 - n * n)  # d h' / d (pre-activation of n)
        dr = dn * h_n * r * (1 - r)
        dz = (h - n) * z * (1 - z)
        return torch.stack([dr, dz, dn * r], 1), torch.stack([dr, dz, dn], 1), z

    @torch.no_grad()
    def state_jacobian(self, x: Tensor, state: HState) -> StructuredJacobian | None:
        """``d h' / d h`` ``[B, H, H]`` = ``Σ_k diag(slope_k) W_hh,k + diag(z)``. None with layer norm."""
        got = self._slopes(x, state.h)
        if got is None:
            return None
        ones = torch.ones_like(got[2])[:, None]
        return StructuredJacobian(self.weight_hh, ones, got[0][:, None], got[2][:, None, None])

    @torch.no_grad()
    def input_jacobian(self, x: Tensor, state: HState) -> StructuredJacobian | None:
        """``d h' / d x`` ``[B, H, in]`` = ``Σ_k diag(slope_k) W_ih,k``."""
        got = self._slopes(x, state.h)
        if got is None:
            return None
        return StructuredJacobian.of_input(self.weight_ih, x, got[1][:, None])

    @torch.no_grad()
    def output_jacobian(self, state: HState) -> Tensor | None:
        """``d h / d h`` per block ``[B, 1, H]``: ones."""
        if self.layer_norm or not same_methods(self, GRUCell, ("output", "stability_state", "with_stability_state")):
            return None
        return torch.ones_like(state.h)[:, None]

    def forward_sequence(self, x: Tensor, state: HState) -> tuple[Tensor, HState]:
        """All steps, ``x [B, T, input_size] -> (h [B, T, H], final state)``: PyTorch's fused GRU kernel on this
        cell's own parameters when ``self.fast`` (and the step is not overridden), else the step loop."""
        return _fused_or_loop(self, GRUCell, gru_cell_sequence, x, state)

    # the gate-saturation guard's capability (lsc/activity.py, issue 16): the sigmoid gates r, z
    SIGMOID_GATES = (0, 1)

    def gate_preactivations(self, x: Tensor, state: HState) -> Tensor:
        """Pre-activations of the sigmoid gates (r, z) for one step, ``x [B, in]`` -> ``[B, 2, H]``."""
        return _sigmoid_gate_preactivations(self, x, state.h, 3, self.SIGMOID_GATES)

    @torch.no_grad()
    def shift_gate_biases_(self, delta: Tensor) -> None:
        """Add ``delta [2, H]`` to the biases of the sigmoid gates (r, z), in place (through ``bias_ih``)."""
        _shift_gate_biases(self, delta, self.SIGMOID_GATES)


def scale_gate_leak(bias_ih: Tensor, bias_hh: Tensor, m: float, target: float | None = None) -> None:
    """Scale the time constant of a sigmoid leak gate ``g = σ(b_ih + b_hh + ...)`` by ``m`` in place: at zero input
    the gate becomes ``g^(1/m)`` (τ = -1/log g → m·τ), by shifting ``b_ih`` (views ``[H]`` into the cell's biases).

    ``target`` is not used: the LSTM's time radius couples the forget gates with the ``h`` block, so it sits above
    ``max f``, and stopping f at the target took LSC longer (2x128 on digits: 134 vs 117 steps; docs/lsc.md); LSC's
    loop grows τ again (m > 1) once the radius is below target. Shrinking never goes below τ =
    ``MIN_TIME_CONSTANT``; the gate stays below 1 by the sigmoid."""
    if not m > 0:
        raise ValueError(f"time-constant scale must be > 0, got {m}")
    b = bias_ih + bias_hh
    log_g = F.logsigmoid(b)  # log g < 0; τ = -1/log g
    new = log_g / m  # log(g^(1/m))
    new = new.clamp(min=-1.0 / MIN_TIME_CONSTANT)
    new = new.clamp(max=-1e-6)  # g < 1: a finite logit
    logit = new - torch.log(-torch.expm1(new))  # logit(g) = log g - log(1 - g)
    bias_ih.add_(logit - b)


def _gate_parameters(cell: Cell, gates: int) -> None:
    """``weight_ih [gates*H, in]`` (glorot), ``weight_hh [gates*H, H]`` (orthogonal per gate), zero biases: the
    layout of PyTorch's fused kernels, so the fast paths run on these very tensors."""
    H, n_in = cell.hidden_size, cell.input_size
    cell.weight_ih = nn.Parameter(torch.empty(gates * H, n_in))
    cell.weight_hh = nn.Parameter(torch.empty(gates * H, H))
    cell.bias_ih = nn.Parameter(torch.zeros(gates * H))
    cell.bias_hh = nn.Parameter(torch.zeros(gates * H))
    glorot_uniform_(cell.weight_ih, n_in, gates * H)
    orthogonal_blocks_(cell.weight_hh, gates)


def _layer_norm_parameters(cell: Cell, gates: int, on: bool) -> None:
    """Per-gate gains (start 1) of the input and recurrent contributions when ``on``; none otherwise, so a cell
    without layer norm keeps exactly the fused kernel's parameters."""
    cell.layer_norm = bool(on)
    if cell.layer_norm:
        cell.ln_ih_gain = nn.Parameter(torch.ones(gates * cell.hidden_size))
        cell.ln_hh_gain = nn.Parameter(torch.ones(gates * cell.hidden_size))


def _gate_norm(a: Tensor, gain: Tensor, gates: int) -> Tensor:
    """Layer norm of each gate's block of ``a [B, gates*H]`` over its H units, times the gain."""
    blocks = a.unflatten(-1, (gates, -1))
    return F.layer_norm(blocks, blocks.shape[-1:]).flatten(-2) * gain


def _gate_inputs(cell: Any, x: Tensor, h: Tensor, gates: int) -> tuple[Tensor, Tensor]:
    """``(x W_ih^T + b_ih, h W_hh^T + b_hh)`` ``[B, gates*H]`` each, each contribution layer-normed per gate
    before its bias when the cell has ``layer_norm``."""
    if not cell.layer_norm:
        return F.linear(x, cell.weight_ih, cell.bias_ih), F.linear(h, cell.weight_hh, cell.bias_hh)
    gi = _gate_norm(F.linear(x, cell.weight_ih), cell.ln_ih_gain, gates) + cell.bias_ih
    gh = _gate_norm(F.linear(h, cell.weight_hh), cell.ln_hh_gain, gates) + cell.bias_hh
    return gi, gh


def _sigmoid_gate_preactivations(cell: Any, x: Tensor, h: Tensor, gates: int, which: tuple[int, ...]) -> Tensor:
    """The pre-activations ``[B, len(which), H]`` of the gate blocks ``which`` (input plus recurrent part)."""
    check_input(cell, x)
    gi, gh = _gate_inputs(cell, x, h, gates)
    blocks = (gi + gh).unflatten(-1, (gates, -1))
    return blocks[:, list(which)]


def _shift_gate_biases(cell: Any, delta: Tensor, which: tuple[int, ...]) -> None:
    """``bias_ih`` of gate block ``which[k]`` += ``delta[k]`` (``delta [len(which), H]``)."""
    H = cell.hidden_size
    if tuple(delta.shape) != (len(which), H):
        raise ValueError(f"gate bias shift must have shape {[len(which), H]}, got {list(delta.shape)}")
    for k, g in enumerate(which):
        cell.bias_ih[g * H:(g + 1) * H] += delta[k].to(cell.bias_ih)


def _fused_or_loop(cell: Cell, owner: type, fused: Any, x: Tensor, state: Any) -> tuple[Tensor, Any]:
    """The fused kernel when the cell allows it (``fast``), has no layer norm (the kernel has none) and its step is
    ``owner``'s own (a subclass that changes the step must not be run through a kernel that ignores the change);
    else the step loop."""
    if cell.fast and not cell.layer_norm and type(cell).forward is owner.forward:
        return fused(cell, x, state)
    return run_steps(cell, x, state)
