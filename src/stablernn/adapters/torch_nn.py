"""``torch.nn`` recurrent layers: ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (one view cell per layer) and
``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell``, computed with PyTorch's documented equations
(https://pytorch.org/docs/stable/generated/torch.nn.LSTM.html; gate order i, f, g, o; GRU r, z, n) on the module's
own parameters."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells.base import check_input, split_state
from .base import LayerAdapter, register_layer, zeros


class HState(NamedTuple):
    h: Tensor  # [B, H]


class HCState(NamedTuple):
    h: Tensor  # [B, H]
    c: Tensor  # [B, H]


def torch_rnn_step(mode: str, x: Tensor, h: Tensor, c: Tensor | None, w_ih: Tensor, w_hh: Tensor,
                   b_ih: Tensor | None, b_hh: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """One step of PyTorch's ``mode`` layer (``LSTM``, ``GRU``, ``RNN_TANH``, ``RNN_RELU``): ``x [B, in]``,
    ``h, c [B, H]`` -> ``(h', c')`` (``c'`` None but for LSTM)."""
    gi, gh = F.linear(x, w_ih, b_ih), F.linear(h, w_hh, b_hh)
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if mode == "GRU":
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1.0 - z) * n + z * h, None
    pre = gi + gh
    return (torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)), None


class TorchRNNLayerCell(nn.Module):
    """One layer of a PyTorch RNN as a stablernn cell, holding that layer's ``Parameter`` objects (shared).

    State ``(h, c)`` for LSTM, ``(h,)`` otherwise; stability state ``[h, c]`` / ``h``; output ``h``.
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, weight_ih: nn.Parameter,
                 weight_hh: nn.Parameter, bias_ih: nn.Parameter | None, bias_hh: nn.Parameter | None):
        super().__init__()
        self.mode, self.input_size, self.hidden_size = mode, int(input_size), int(hidden_size)
        self.weight_ih, self.weight_hh = weight_ih, weight_hh
        self.bias_ih, self.bias_hh = bias_ih, bias_hh

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> HState | HCState:
        z = zeros(self.weight_ih, batch_size, self.hidden_size, device, dtype)
        return HCState(z, z) if self.mode == "LSTM" else HState(z)

    def forward(self, x: Tensor, state: HState | HCState) -> tuple[Tensor, HState | HCState]:
        check_input(self, x)
        h, c = torch_rnn_step(self.mode, x, state.h, getattr(state, "c", None), self.weight_ih, self.weight_hh,
                              self.bias_ih, self.bias_hh)
        return h, (HCState(h, c) if self.mode == "LSTM" else HState(h))

    def output(self, state: HState | HCState) -> Tensor:
        return state.h

    def stability_state(self, state: HState | HCState) -> Tensor:
        return torch.cat([state.h, state.c], -1) if self.mode == "LSTM" else state.h

    def with_stability_state(self, state: HState | HCState, s: Tensor) -> HState | HCState:
        if self.mode == "LSTM":
            return HCState(*split_state(s, [self.hidden_size, self.hidden_size]))
        return HState(s)

    def extra_repr(self) -> str:
        return f"{self.mode}, {self.input_size}, {self.hidden_size}"


def _mode(module: nn.Module) -> str:
    if isinstance(module, (nn.LSTM, nn.LSTMCell)):
        return "LSTM"
    if isinstance(module, (nn.GRU, nn.GRUCell)):
        return "GRU"
    nl = getattr(module, "nonlinearity", "tanh")
    return "RNN_TANH" if nl == "tanh" else "RNN_RELU"


def build_rnn(module: nn.Module, fc: nn.Linear | None) -> list[nn.Module]:
    """The view cells of an ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``: one per layer."""
    if fc is not None:
        raise AssertionError("nn.RNN layers map their input themselves")
    name = type(module).__name__
    if getattr(module, "proj_size", 0):
        raise ValueError(f"nn.{name}(proj_size={module.proj_size}) is not supported: the projected h makes the "
                         f"state [h, c] of unequal widths; use proj_size=0 or the generic step protocol "
                         f"(docs/your-model.md)")
    if module.bidirectional:
        raise ValueError(f"nn.{name}(bidirectional=True) is not supported: a backward-in-time layer has no "
                         f"one-step time transition; LSC needs causal layers (use bidirectional=False)")
    cells = []
    for k in range(module.num_layers):
        bias = (getattr(module, f"bias_ih_l{k}"), getattr(module, f"bias_hh_l{k}")) if module.bias else (None, None)
        cells.append(TorchRNNLayerCell(_mode(module), module.input_size if k == 0 else module.hidden_size,
                                       module.hidden_size, getattr(module, f"weight_ih_l{k}"),
                                       getattr(module, f"weight_hh_l{k}"), *bias))
    return cells


def build_rnn_cell(module: nn.Module, fc: nn.Linear | None) -> list[nn.Module]:
    """The view cell of an ``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell``."""
    return [TorchRNNLayerCell(_mode(module), module.input_size, module.hidden_size, module.weight_ih,
                              module.weight_hh, module.bias_ih, module.bias_hh)]


def layer_dropout(module: nn.Module) -> list[float]:
    """``nn.LSTM(dropout=p)``: dropout on the outputs of every layer but the last, i.e. before layers 1..L-1."""
    p = float(getattr(module, "dropout", 0.0) or 0.0)
    return [0.0] + [p] * (getattr(module, "num_layers", 1) - 1)


for _name in ("LSTM", "GRU", "RNN"):
    register_layer(LayerAdapter(f"torch.{_name}", build_rnn, takes_current=False, library="torch",
                                dropout=layer_dropout))
for _name in ("LSTMCell", "GRUCell", "RNNCell"):
    register_layer(LayerAdapter(f"torch.{_name}", build_rnn_cell, takes_current=False, library="torch"))

__all__ = ["TorchRNNLayerCell", "build_rnn", "build_rnn_cell", "torch_rnn_step"]
