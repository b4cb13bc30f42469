"""Fused whole-sequence LSTM/GRU on the step cells' own parameters.

``LSTMCell`` and ``GRUCell`` keep their weights in PyTorch's ``nn.LSTM`` / ``nn.GRU`` layout, so PyTorch's fused
sequence kernels (native C++ loop on CPU, cuDNN on CUDA) can run on exactly those ``Parameter`` objects: no copies,
so LSC pre-training on the step cell and task training on the fused path see one and the same network, and the
gradients land on the cell's parameters. We call ``torch._VF.lstm`` / ``torch._VF.gru``, the functional kernels
``nn.LSTM.forward`` itself calls, with a single layer, no dropout, batch-first.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor


def _check(cell: Any, x: Tensor, gates: int) -> None:
    if x.dim() != 3 or x.shape[-1] != cell.input_size:
        raise ValueError(f"{type(cell).__name__}.forward_sequence expects [batch, time, {cell.input_size}], got "
                         f"{list(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError("forward_sequence needs at least one time step, got T = 0")
    if cell.weight_ih.shape[0] != gates * cell.hidden_size:
        raise ValueError(f"{type(cell).__name__} weights are not in the fused layout ({gates} gates)")


def _params(cell: Any) -> list[Tensor]:
    return [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]


@contextmanager
def _quiet_cudnn() -> Iterator[None]:
    """cuDNN warns that per-cell weights are not one flat buffer (it compacts them per call); that is the price of
    sharing the step cell's parameters, so the warning is expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not part of single contiguous chunk of memory.*")
        yield


def lstm_sequence(x: Tensor, h0: Tensor, c0: Tensor, *, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor,
                  bias_hh: Tensor, training: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Fused LSTM over ``x [batch, time, in]`` from ``h0, c0 [batch, H]``; gate order i, f, g, o.

    Returns ``(h [batch, time, H], h_T [batch, H], c_T [batch, H])``.
    """
    with _quiet_cudnn():
        out, h_n, c_n = torch._VF.lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)),
                                      [weight_ih, weight_hh, bias_ih, bias_hh], True, 1, 0.0, training, False, True)
    return out, h_n[0], c_n[0]


def gru_sequence(x: Tensor, h0: Tensor, *, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor,
                 bias_hh: Tensor, training: bool = True) -> tuple[Tensor, Tensor]:
    """Fused GRU (PyTorch form, gate order r, z, n) over ``x [batch, time, in]`` from ``h0 [batch, H]``.

    Returns ``(h [batch, time, H], h_T [batch, H])``.
    """
    with _quiet_cudnn():
        out, h_n = torch._VF.gru(x, h0.unsqueeze(0), [weight_ih, weight_hh, bias_ih, bias_hh], True, 1, 0.0,
                                 training, False, True)
    return out, h_n[0]


def lstm_cell_sequence(cell: Any, x: Tensor, state: Any) -> tuple[Tensor, Any]:
    """An ``LSTMCell`` over ``x [batch, time, in]`` through the fused kernel: ``(h [B, T, H], LSTMState)``."""
    _check(cell, x, 4)
    out, h, c = lstm_sequence(x, state.h, state.c, weight_ih=cell.weight_ih, weight_hh=cell.weight_hh,
                              bias_ih=cell.bias_ih, bias_hh=cell.bias_hh, training=cell.training)
    return out, type(state)(h, c)


def gru_cell_sequence(cell: Any, x: Tensor, state: Any) -> tuple[Tensor, Any]:
    """A ``GRUCell`` over ``x [batch, time, in]`` through the fused kernel: ``(h [B, T, H], HState)``."""
    _check(cell, x, 3)
    out, h = gru_sequence(x, state.h, weight_ih=cell.weight_ih, weight_hh=cell.weight_hh, bias_ih=cell.bias_ih,
                          bias_hh=cell.bias_hh, training=cell.training)
    return out, type(state)(h)


__all__ = ["gru_cell_sequence", "gru_sequence", "lstm_cell_sequence", "lstm_sequence"]
