"""Elman (simple) RNN cell: ``h[t] = act(x[t] W_ih^T + h[t-1] W_hh^T + b)``."""
from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Cell, StructuredJacobian, check_input, same_methods
from .init import glorot_uniform_

Activation = Literal["relu", "sigmoid", "tanh", "swish"]
ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "swish": F.silu}


def activation_fn(name: str):
    """The elementwise activation called ``name`` (relu, sigmoid, tanh, swish)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class HState(NamedTuple):
    h: Tensor  # [B, H]


class HiddenStateCell(Cell):
    """A cell whose whole state is one hidden vector ``h [B, H]`` that is also its output and its stability state
    (Elman, GRU, and cells built like them)."""

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> HState:
        return HState(self._zeros(batch_size, self.hidden_size, device, dtype))

    def output(self, state: HState) -> Tensor:
        return state.h

    def stability_state(self, state: HState) -> Tensor:
        return state.h

    def with_stability_state(self, state: HState, s: Tensor) -> HState:
        return HState(s)


class ElmanCell(HiddenStateCell):
    """Simple RNN with Keras-like init: glorot-uniform input kernel, orthogonal recurrent kernel,
    bias U(±sqrt(3/H)) (the papers' code's `rsimplernn` / `ssimplernn`).

    ``layer_norm``: normalise the summed pre-activation over the H units before the bias and activation,
    ``h' = act(g ⊙ LN(x W_ih^T + h W_hh^T) + b)`` (Ba et al. 2016, arXiv:1607.06450, Sec. 3.1); ``g`` starts at 1.
    """

    def __init__(self, input_size: int, hidden_size: int, activation: Activation = "tanh", *,
                 layer_norm: bool = False):
        super().__init__(input_size, hidden_size)
        self.activation = activation
        self.layer_norm = bool(layer_norm)
        if self.layer_norm:
            self.ln_gain = nn.Parameter(torch.ones(hidden_size))
        self._act = activation_fn(activation)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(hidden_size))
        glorot_uniform_(self.weight_ih, input_size, hidden_size)
        nn.init.orthogonal_(self.weight_hh)
        bound = math.sqrt(3.0 / hidden_size)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, state: HState) -> tuple[Tensor, HState]:
        check_input(self, x)
        if self.layer_norm:
            a = F.linear(x, self.weight_ih) + F.linear(state.h, self.weight_hh)
            h = self._act(F.layer_norm(a, (self.hidden_size,), self.ln_gain, self.bias))
        else:
            h = self._act(F.linear(x, self.weight_ih, self.bias) + F.linear(state.h, self.weight_hh))
        return h, HState(h)

    # --- closed-form Jacobians (cells.base.HasStateJacobian; docs/lsc.md "Closed-form Jacobians") ----------------
    def _slope(self, x: Tensor, h: Tensor) -> Tensor | None:
        """``act'(pre)`` ``[B, H]``; None when not covered (layer norm, or a step or state map not this class's)."""
        if self.layer_norm or not same_methods(self, ElmanCell, ("forward", "output", "stability_state",
                                                                 "with_stability_state")):
            return None
        pre = F.linear(x, self.weight_ih, self.bias) + F.linear(h, self.weight_hh)
        if self.activation == "relu":
            return (pre > 0).to(pre.dtype)  # autograd's relu slope (0 at 0)
        if self.activation == "tanh":
            return 1 - torch.tanh(pre) ** 2
        s = torch.sigmoid(pre)
        return s * (1 - s) if self.activation == "sigmoid" else s * (1 + pre * (1 - s))  # swish: d(p σ(p))/dp

    @torch.no_grad()
    def state_jacobian(self, x: Tensor, state: HState) -> StructuredJacobian | None:
        """``d h'/d h = diag(act'(pre)) W_hh`` ``[B, H, H]``. None with layer norm."""
        d = self._slope(x, state.h)
        return None if d is None else StructuredJacobian(self.weight_hh, torch.ones_like(d)[:, None],
                                                         d[:, None, None])

    @torch.no_grad()
    def input_jacobian(self, x: Tensor, state: HState) -> StructuredJacobian | None:
        """``d h'/d x = diag(act'(pre)) W_ih`` ``[B, H, in]``."""
        d = self._slope(x, state.h)
        return None if d is None else StructuredJacobian.of_input(self.weight_ih, x, d[:, None, None])

    @torch.no_grad()
    def output_jacobian(self, state: HState) -> Tensor | None:
        """``d h / d h`` per block ``[B, 1, H]``: ones."""
        if self.layer_norm or not same_methods(self, ElmanCell, ("output", "stability_state", "with_stability_state")):
            return None
        return torch.ones_like(state.h)[:, None]

    def extra_repr(self) -> str:
        ln = ", layer_norm=True" if self.layer_norm else ""
        return f"{self.input_size}, {self.hidden_size}, activation={self.activation}{ln}"
