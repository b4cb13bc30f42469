"""The initialisations users reach for today to keep recurrent nets trainable, as options next to LSC.

- :func:`recurrent_init_` — the recurrent matrix of Elman / GRU / LSTM layers set ``orthogonal`` (per gate block)
  or ``identity`` (IRNN: Le, Jaitly & Hinton 2015, arXiv:1504.00941, Sec. 2: identity recurrent matrix, zero
  biases, ReLU units); ``default`` leaves the cell's own init.
- :func:`chrono_init_` — chrono initialisation of LSTM / GRU gate biases (Tallec & Ollivier 2018,
  arXiv:1804.11188, Sec. 5): forget-gate bias ``log U(1, T_max - 1)``, input-gate bias its negative, so the
  characteristic forgetting times spread over ``[1, T_max]``.
- :func:`lsuv_init_` — LSUV-style data-dependent scaling (Mishkin & Matas 2015, arXiv:1511.06422, Alg. 1): layer
  by layer, bottom up, the input weights of each layer are scaled so that its input pre-activation ``x W_ih^T`` has
  variance 1 on a batch, the layer's inputs coming from the stack's own step (so layers below are already scaled).
- :func:`init_model_` — what ``build_model`` calls: the config's ``rec_init`` and ``chrono`` on every layer.

Layer norm in the cell is a cell option (``ElmanCell/GRUCell/LSTMCell(layer_norm=True)``, ``ModelConfig.layer_norm``).
This module reads cells only (it sits between ``cells``/``snn`` and ``models``, so the one builder can call it);
stacks are used through their ``cells`` and ``step``.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from .cells import ElmanCell, GRUCell, LSTMCell
from .cells.base import HasCells

RecInit = Literal["default", "orthogonal", "identity"]
REC_INITS: tuple[str, ...] = ("default", "orthogonal", "identity")


class InitOptions(Protocol):
    """The fields of ``ModelConfig`` this module reads."""

    rec_init: str
    chrono: bool
    chrono_t_max: float | None


def _gates(cell: nn.Module) -> int:
    return 4 if isinstance(cell, LSTMCell) else 3 if isinstance(cell, GRUCell) else 1


def recurrent_init_(cell: nn.Module, kind: str = "orthogonal", *, gain: float = 1.0) -> bool:
    """Set the recurrent matrix of an Elman / GRU / LSTM cell in place: ``orthogonal`` (each ``[H, H]`` gate block
    an orthogonal matrix times ``gain``), ``identity`` (each block ``gain · I``; for an Elman cell also zero bias, the
    IRNN recipe) or ``default`` (nothing). Returns whether the cell was changed; other cells are left alone
    (``False``)."""
    if kind not in REC_INITS:
        raise ValueError(f"unknown rec_init {kind!r}; choose one of {', '.join(REC_INITS)}")
    if kind == "default" or not isinstance(cell, (ElmanCell, GRUCell, LSTMCell)):
        return False
    w, blocks = cell.weight_hh, _gates(cell)
    H = w.shape[1]
    with torch.no_grad():
        for k in range(blocks):
            block = w[k * H:(k + 1) * H]
            if kind == "orthogonal":
                nn.init.orthogonal_(block, gain=gain)
            else:
                block.copy_(gain * torch.eye(H, dtype=w.dtype, device=w.device))
        if kind == "identity" and isinstance(cell, ElmanCell):
            cell.bias.zero_()
    return True


def chrono_init_(cell: nn.Module, t_max: float, *, generator: torch.Generator | None = None) -> bool:
    """Chrono initialisation of a GRU / LSTM cell's gate biases for memories up to ``t_max`` steps.

    LSTM: ``b_f ~ log U(1, t_max - 1)``, ``b_i = -b_f`` (on ``bias_ih``; the ``bias_hh`` parts zeroed). GRU
    (PyTorch form, ``h' = (1 - z) n + z h``): the update gate ``z`` keeps the state, so ``b_z ~ log U(1, t_max - 1)``
    (the paper's forget-gate rule on the keep gate). Returns whether the cell was changed (other cells: ``False``).
    """
    if not (isinstance(t_max, (int, float)) and math.isfinite(t_max) and t_max > 2):
        raise ValueError(f"chrono init needs the longest expected memory t_max > 2 steps, got {t_max!r}")
    if not isinstance(cell, (GRUCell, LSTMCell)):
        return False
    H = cell.hidden_size
    u = torch.rand(H, generator=generator, dtype=torch.float64) * (t_max - 2.0) + 1.0  # U(1, t_max - 1)
    b = torch.log(u).to(cell.bias_ih.dtype).to(cell.bias_ih.device)
    with torch.no_grad():
        if isinstance(cell, LSTMCell):  # gate order i, f, g, o
            cell.bias_ih[H:2 * H] = b
            cell.bias_ih[:H] = -b
            cell.bias_hh[:2 * H] = 0.0
        else:  # gate order r, z, n
            cell.bias_ih[H:2 * H] = b
            cell.bias_hh[H:2 * H] = 0.0
    return True


def init_model_(model: nn.Module, options: InitOptions, seq_len: int) -> nn.Module:
    """Apply ``options.rec_init`` and ``options.chrono`` (``t_max = options.chrono_t_max`` or ``seq_len``) to every
    layer of a stack (``model.cells``); anything else is returned untouched. What ``build_model`` calls."""
    if not isinstance(model, HasCells):
        return model
    t_max = float(options.chrono_t_max if options.chrono_t_max is not None else seq_len)
    for cell in model.cells:
        recurrent_init_(cell, options.rec_init)
        if options.chrono:
            chrono_init_(cell, t_max)
    return model


# --- LSUV -------------------------------------------------------------------------------------------------------
def _input_weight(cell: nn.Module) -> Tensor | None:
    """The weight that maps a layer's input to its pre-activation (``weight_ih``), if the cell has one."""
    w = getattr(cell, "weight_ih", None)
    return w if isinstance(w, Tensor) and w.dim() == 2 else None


def lsuv_init_(model: nn.Module, x: Tensor, *, target_var: float = 1.0, max_steps: int | None = 64) -> list[float]:
    """LSUV-style data-dependent scaling of a stack's input weights, layer by layer from the bottom.

    For layer ``l``: step the stack over ``x [B, T, F]`` (at most ``max_steps`` steps) through ``model.step``,
    collect the layer's inputs ``u [B, in_l]``, and multiply ``weight_ih`` by ``sqrt(target_var / Var(u W_ih^T))``.
    The pre-activation is linear in ``weight_ih``, so one pass per layer meets the target exactly on this batch (the
    paper iterates because its layers' inputs are not fixed; ours are, bottom up). Spiking layers are scaled like
    any other (their input current); cells without ``weight_ih`` (LRU) are skipped. Returns the input
    pre-activation variance of every layer before its scaling (``nan`` for a skipped layer).
    """
    if not isinstance(model, HasCells) or not callable(getattr(model, "step", None)):
        raise TypeError(f"lsuv_init_ needs a stack with .cells and .step (a DeepRNN), got {type(model).__name__}")
    if not target_var > 0:
        raise ValueError(f"lsuv target_var must be > 0, got {target_var}")
    if x.dim() < 2:
        raise ValueError(f"lsuv_init_ expects x [batch, time, features] (or [batch, time] ids), got {list(x.shape)}")
    steps = x.unbind(1)[: max_steps] if max_steps else x.unbind(1)
    before: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for l, cell in enumerate(model.cells):
            w = _input_weight(cell)
            if w is None:
                before.append(float("nan"))
                continue
            inputs: list[Tensor] = []

            def hook(layer: int, inp: Tensor, out: Tensor, state: Any, _l: int = l,
                     _seen: list[Tensor] = inputs) -> tuple[Tensor, Any]:
                if layer == _l:
                    _seen.append(inp.detach())
                return out, state

            with torch.no_grad():
                states = model.initial_states(x.shape[0], device=x.device, dtype=w.dtype)
                for x_t in steps:
                    states = model.step(x_t, states, hook=hook, decode=False).states
                u = torch.cat(inputs, 0)
                var = float((u @ w.t()).var())
                before.append(var)
                if var > 0 and math.isfinite(var):
                    w.mul_(math.sqrt(target_var / var))
    finally:
        model.train(was_training)
    return before


__all__ = ["REC_INITS", "InitOptions", "RecInit", "chrono_init_", "init_model_", "lsuv_init_",
           "recurrent_init_"]
