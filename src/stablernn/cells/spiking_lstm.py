"""Spiking LSTM: an LSTM whose input gate, output gate and output are spikes with a surrogate gradient (in the
style of Lotfi Rezaabad & Vishwanath 2020, "Long short-term memory spiking networks and their applications",
arXiv:2007.04779, §3).

    [a_i, a_f, a_g, a_o] = x[t] W_ih^T + h[t-1] W_hh^T + b      h[t-1] ∈ {0, 1}: the layer's own spikes
    c[t] = σ(a_f) ⊙ c[t-1] + H(a_i) ⊙ tanh(a_g)
    h[t] = H(a_o) ⊙ H(c[t] - ϑ)                                  H: Heaviside forward, surrogate backward

The forget gate stays a sigmoid: it is the cell state's leak, and a binary leak would make every eigenvalue of the
time Jacobian's diagonal exactly 0 or 1, which no gradient (LSC's included) could set to a target in between.
The stability state is ``[c, a_o]`` (``[B, 2H]``): the output spike is recomputed from both, with its surrogate
gradient, so the time Jacobian includes the recurrent path through the spikes (as for LIF's ``v``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Cell, check_input, split_state
from .init import glorot_uniform_

SpikeFn = Callable[[Tensor], Tensor]


class SpikingLSTMState(NamedTuple):
    c: Tensor  # cell state [B, H]
    o: Tensor  # output-gate pre-activation a_o of the last step [B, H]
    h: Tensor  # output spikes of the last step [B, H]


def spiking_lstm_step(a: Tensor, c: Tensor, h: Tensor, *, weight_hh: Tensor, threshold: Tensor, spike: SpikeFn
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """One step from the input projection ``a = x W_ih^T + b [B, 4H]`` (gate order i, f, g, o), ``c, h [B, H]``;
    returns ``(h', c', a_o)``."""
    a_i, a_f, a_g, a_o = (a + F.linear(h, weight_hh)).chunk(4, dim=-1)
    c = torch.sigmoid(a_f) * c + spike(a_i) * torch.tanh(a_g)
    return spike(a_o) * spike(c - threshold), c, a_o


class SpikingLSTMCell(Cell):
    """Spiking LSTM layer; outputs spikes ``h [B, H]``.

    Args:
        threshold: the output spike's threshold ϑ on the cell state (scalar or per neuron). Default 0: a neuron
            fires while its cell state is positive and its output gate open. The cell state of an LSTM is O(1) and
            sign-symmetric, so a threshold of 1 (the LIF default) leaves most neurons silent: measured at width 64
            on white-noise input, 0.3% of neurons fire in layer 1 and none in layer 2.
        spike: a surrogate name (``stablernn.surrogate.names()``) or a callable spike function.
        gate_bias: initial bias of the spiking input and output gates. Default 0.01, just above the Heaviside's
            threshold: the gate pre-activations start centred on it, where the gates fire for about half the inputs
            and their surrogate gradient is at its peak (the balance paper B's Condition I asks of a LIF membrane,
            arXiv:2202.00282). With bias 1 they were open for 93-99% of steps at init (2 x 32 on digits), so they
            passed an almost constant 1 and learned little: 2 x 32 test accuracy at lr 0.0316, 3 seeds, bias 1 vs
            0.01: digits 53.4 vs 66.8, MNIST-1D 25.3 vs 35.0 (ALIF 69.2, 36.8; docs/results.md, section 8).
            Not exactly 0: after silent input a neuron's stored output-gate pre-activation is exactly its bias, and
            at ``H(0) = 0`` its output path is shut with no gradient back; a layer on blank digits rows then has a
            time Jacobian of diagonal and zero blocks (repeated eigenvalues), on which LSC's exact-eigenvalue
            gradient failed (a singular solve on a 2 x 8 stack, seed 0; non-finite on seed 2; fine with 0.01 or 0.1).
        forget_bias: initial bias of the (sigmoid) forget gate: σ(1) ≈ 0.73, a leak of about 3 steps, the usual LSTM
            choice.
        fast: :meth:`forward_sequence` computes the input projection of all steps at once (else the step loop).
    """

    def __init__(self, input_size: int, hidden_size: int, *, threshold: float | Tensor = 0.0,
                 spike: str | SpikeFn | None = "fast_sigmoid", gate_bias: float = 0.01, forget_bias: float = 1.0,
                 fast: bool = True):
        super().__init__(input_size, hidden_size)
        from ..surrogate import resolve
        from .spiking import _per_neuron

        H = hidden_size
        self.fast = bool(fast)
        self.spike = resolve(spike)
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * H, H))
        self.bias = nn.Parameter(torch.zeros(4 * H))  # one bias: the firing-rate fit (snn.rates) moves it
        glorot_uniform_(self.weight_ih, input_size, 4 * H)
        glorot_uniform_(self.weight_hh, H, 4 * H)
        with torch.no_grad():  # gate order i, f, g, o
            self.bias[:H] = gate_bias
            self.bias[H:2 * H] = forget_bias
            self.bias[3 * H:] = gate_bias
        self.register_buffer("threshold", _per_neuron(threshold, H, "threshold", positive=False))

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> SpikingLSTMState:
        z = self._zeros(batch_size, self.hidden_size, device, dtype)
        return SpikingLSTMState(z, z, z)

    def _step(self, a: Tensor, state: SpikingLSTMState) -> tuple[Tensor, SpikingLSTMState]:
        h, c, o = spiking_lstm_step(a, state.c, state.h, weight_hh=self.weight_hh, threshold=self.threshold,
                                    spike=self.spike)
        return h, SpikingLSTMState(c, o, h)

    def forward(self, x: Tensor, state: SpikingLSTMState) -> tuple[Tensor, SpikingLSTMState]:
        check_input(self, x)
        return self._step(F.linear(x, self.weight_ih, self.bias), state)

    def forward_sequence(self, x: Tensor, state: SpikingLSTMState) -> tuple[Tensor, SpikingLSTMState]:
        """All steps, ``x [B, T, input_size] -> (h [B, T, H], final state)``; the input projection in one matmul
        when ``self.fast`` (and the step is not overridden), else the step loop."""
        if not (self.fast and type(self).forward is SpikingLSTMCell.forward):
            return super().forward_sequence(x, state)
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}.forward_sequence expects [batch, time, {self.input_size}], "
                             f"got {list(x.shape)}")
        outs = []
        for a_t in F.linear(x, self.weight_ih, self.bias).unbind(1):
            h, state = self._step(a_t, state)
            outs.append(h)
        return torch.stack(outs, 1), state

    def output(self, state: SpikingLSTMState) -> Tensor:
        return state.h

    def stability_state(self, state: SpikingLSTMState) -> Tensor:
        return torch.cat([state.c, state.o], dim=-1)

    def with_stability_state(self, state: SpikingLSTMState, s: Tensor) -> SpikingLSTMState:
        c, o = split_state(s, [self.hidden_size, self.hidden_size])
        return SpikingLSTMState(c, o, self.spike(o) * self.spike(c - self.threshold))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, threshold≈{self.threshold.mean().item():.3g}"


__all__ = ["SpikingLSTMCell", "SpikingLSTMState", "spiking_lstm_step"]
