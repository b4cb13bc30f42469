"""A user's own cell, written only against the cell interface (no library base class): the tests use it to show that
everything (stacks, training, LSC) works for cells the library does not know."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn


class LeakyState(NamedTuple):
    h: Tensor


class LeakyTanhCell(nn.Module):
    """A user's own cell (defined here, no library base class): h' = (1-a) h + a tanh(W x + U h + b)."""

    def __init__(self, input_size: int, hidden_size: int, alpha: float = 0.5):
        super().__init__()
        self.input_size, self.hidden_size, self.alpha = input_size, hidden_size, alpha
        self.inp = nn.Linear(input_size, hidden_size)
        self.rec = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.orthogonal_(self.rec.weight)

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> LeakyState:
        return LeakyState(torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype))

    def forward(self, x: Tensor, state: LeakyState) -> tuple[Tensor, LeakyState]:
        h = (1 - self.alpha) * state.h + self.alpha * torch.tanh(self.inp(x) + self.rec(state.h))
        return h, LeakyState(h)

    def stability_state(self, state: LeakyState) -> Tensor:
        return state.h

    def with_stability_state(self, state: LeakyState, s: Tensor) -> LeakyState:
        return LeakyState(s)
