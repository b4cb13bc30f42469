"""The transitions of a model at one step (paper A, arXiv:2308.12075, §2): time ``s[t-1,l] -> s[t,l]``, depth
``s[t,l-1] -> s[t,l]``, encoder ``x[t] -> s[t,1]`` and decoder ``s[t,L] -> logits[t]`` of a stack, and
encoder / depth / decoder of an ``FFN``; each a :class:`~stablernn.lsc.measures.Transition` the measures take.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..cells.base import HasOutput, HasStateJacobian, StructuredJacobian
from ..models import FFN, DeepRNN, as_stack
from .config import FAMILIES
from .measures import Transition


# --- building the transitions of a model -----------------------------------------------------------------------
def is_ffn(model: Any) -> bool:
    """The deep feed-forward net of paper A (``FFN``): measured layer by layer, without a time axis."""
    return isinstance(model, FFN)


def one_sample(batch_fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """The one-sample function of a batch function: every argument gets a batch axis of one, the result loses it
    (``Transition.fn`` from ``Transition.batch_fn``; the same ops, so ``vmap`` of it equals the batch function)."""
    def fn(*args: Tensor) -> Tensor:
        return batch_fn(*[a[None] for a in args])[0]
    return fn


def _time_fn(cell: nn.Module, state_type: type) -> Callable[..., Tensor]:
    """Batch function ``s [B, d], inp [B, in], *pieces -> s' [B, d]``."""
    def fn(s: Tensor, inp: Tensor, *pieces: Tensor) -> Tensor:
        state = cell.with_stability_state(state_type(*pieces), s)
        return cell.stability_state(cell(inp, state)[1])
    return fn


def _time_closed(cell: nn.Module, state_type: type) -> Callable[..., StructuredJacobian | None] | None:
    """The closed form of :func:`_time_fn` on a batch (``s [B, d], inp [B, in], *pieces -> [B, d, d]``), when the
    cell has one (cells.base.HasStateJacobian; it returns None for a configuration it does not cover)."""
    if not isinstance(cell, HasStateJacobian):
        return None
    return lambda s, inp, *pieces: cell.state_jacobian(inp, cell.with_stability_state(state_type(*pieces), s))


def _plain_stack(stack: Any) -> bool:
    """``layer_input`` / ``layer_output`` are DeepRNN's own, so ``h -> layer_input(layer_output(out, inp))`` has
    Jacobian I in ``out`` (a residual adds ``inp``, which does not depend on the lower state; dropout is off in eval
    mode, checked per call)."""
    return isinstance(stack, DeepRNN) and type(stack).layer_input is DeepRNN.layer_input and \
        type(stack).layer_output is DeepRNN.layer_output


def _depth_closed(stack: Any, l: int, below: nn.Module, below_type: type, n_below: int, cell: nn.Module,
                  state_type: type) -> Callable[..., StructuredJacobian | None] | None:
    """The closed form of :func:`_depth_fn` on a batch: layer l's ``input_jacobian`` times the lower cell's
    ``output_jacobian`` (block diagonals, so the product scales columns), when both cells have closed forms
    and the stack passes outputs up plainly."""
    if not (isinstance(below, HasStateJacobian) and isinstance(cell, HasStateJacobian) and _plain_stack(stack)):
        return None

    def closed(s: Tensor, inp_below: Tensor, *pieces: Tensor) -> StructuredJacobian | None:
        if stack.training and stack.dropout > 0:
            return None
        nb = below.with_stability_state(below_type(*pieces[:n_below]), s)
        D = below.output_jacobian(nb)
        if D is None:
            return None
        h = stack.layer_output(l - 1, below.output(nb), inp_below)
        Ji = cell.input_jacobian(stack.layer_input(l, h), state_type(*pieces[n_below:]))
        if Ji is None:
            return None
        return Ji.scale_columns(D)
    return closed


def _forward_mode_ok(stack: Any, cell: nn.Module, state: Any) -> bool:
    """Whether the encoder transition may be differentiated in forward mode: a built-in cell its closed form covers
    (so every op in its step has a jvp, the surrogate's included), a plain stack and a built-in encoder."""
    if not (isinstance(cell, HasStateJacobian) and _plain_stack(stack)):
        return False
    if not isinstance(stack.encoder, (nn.Identity, nn.Linear, nn.Embedding)):
        return False
    with torch.no_grad():
        return cell.output_jacobian(state) is not None


def _from_input_fn(stack: Any, l: int, cell: nn.Module, state_type: type,
                   pre: Callable[[Tensor], Tensor] | None = None) -> Callable[..., Tensor]:
    """``u -> s[t,l]`` where ``u`` is what layer ``l`` receives from below (or, with ``pre``, the raw input); batch
    function."""
    def fn(u: Tensor, *pieces: Tensor) -> Tensor:
        h = u if pre is None else pre(u)
        out = cell(stack.layer_input(l, h), state_type(*pieces))
        return cell.stability_state(out[1])
    return fn


def _depth_fn(stack: Any, l: int, below: nn.Module, below_type: type, n_below: int, cell: nn.Module,
              state_type: type) -> Callable[..., Tensor]:
    """``s[t,l-1] -> s[t,l]`` through the lower cell's ``output(state)``; batch function."""
    def fn(s: Tensor, inp_below: Tensor, *pieces: Tensor) -> Tensor:
        nb = below.with_stability_state(below_type(*pieces[:n_below]), s)
        h = stack.layer_output(l - 1, below.output(nb), inp_below)
        out = cell(stack.layer_input(l, h), state_type(*pieces[n_below:]))
        return cell.stability_state(out[1])
    return fn


def _decoder_fn(stack: Any, last: nn.Module, last_type: type, L: int) -> Callable[..., Tensor]:
    """``s[t,L] -> logits[t]``; batch function."""
    def fn(s: Tensor, inp: Tensor, *pieces: Tensor) -> Tensor:
        ns = last.with_stability_state(last_type(*pieces), s)
        return stack.decode(stack.layer_output(L - 1, last.output(ns), inp))
    return fn


def _transition(family: str, layer: int, batch_fn: Callable[..., Tensor], source: Tensor,
                context: tuple[Tensor, ...] = (), out_size: int | None = None, **kw: Any) -> Transition:
    """A transition from its batch function (``fn`` is its one-sample version)."""
    return Transition(family, layer, one_sample(batch_fn), source, context, out_size, batch_fn=batch_fn, **kw)


@dataclass
class StepResult:
    """One time step of a stack: the transitions, the new states, the logits ``[B, C]`` (None without decoder),
    and each layer's output passed up ``[B, out_l]``."""

    transitions: list[Transition]
    states: list[Any]
    logits: Tensor | None
    outputs: list[Tensor]


def rnn_transitions(model: Any, x_t: Tensor, states: list[Any],
                    families: Sequence[str] = FAMILIES) -> StepResult:
    """One step of a stack (``DeepRNN``, a bare cell, or any model :func:`~stablernn.models.as_stack` takes) on
    ``x_t [B, F]`` (or ``[B]`` token ids) from ``states``, with the transitions of ``families`` at every layer.
    Take Jacobians in eval mode (dropout off): see :func:`~stablernn.models.eval_mode`."""
    bad = set(families) - set(FAMILIES)
    if bad:
        raise ValueError(f"unknown transition families {sorted(bad)}; choose from {', '.join(FAMILIES)}")
    stack = as_stack(model)
    cells = list(stack.cells)
    L = len(cells)
    inputs: list[Tensor] = []

    def keep_input(l: int, inp: Tensor, out: Tensor, st: Any) -> tuple[Tensor, Any]:
        inputs.append(inp)
        return out, st

    step = stack.step(x_t, states, hook=keep_input)
    new_states, outputs, logits = step.states, step.outputs, step.logits
    sdim = [int(c.stability_state(st).shape[-1]) for c, st in zip(cells, new_states, strict=True)]
    trs: list[Transition] = []
    for l, cell in enumerate(cells):
        stype = type(states[l])
        if "encoder" in families and l == 0:
            fwd = _forward_mode_ok(stack, cell, states[0])
            if isinstance(stack.encoder, nn.Embedding) or not x_t.is_floating_point():
                trs.append(_transition("encoder", 0, _from_input_fn(stack, 0, cell, stype), stack.encode(x_t),
                                       tuple(states[0]), sdim[0], forward_mode=fwd))
            else:
                trs.append(_transition("encoder", 0, _from_input_fn(stack, 0, cell, stype, pre=stack.encode), x_t,
                                       tuple(states[0]), sdim[0], forward_mode=fwd))
        if "depth" in families and l > 0:
            below = cells[l - 1]
            if isinstance(below, HasOutput):
                args = (stack, l, below, type(new_states[l - 1]), len(new_states[l - 1]), cell, stype)
                trs.append(_transition("depth", l, _depth_fn(*args), below.stability_state(new_states[l - 1]),
                                       (inputs[l - 1], *new_states[l - 1], *states[l]), sdim[l],
                                       closed_form=_depth_closed(*args)))
            else:
                trs.append(_transition("depth", l, _from_input_fn(stack, l, cell, stype), outputs[l - 1],
                                       tuple(states[l]), sdim[l]))
        if "time" in families:
            trs.append(_transition("time", l, _time_fn(cell, stype), cell.stability_state(states[l]),
                                   (inputs[l], *states[l]), sdim[l],
                                   closed_form=_time_closed(cell, stype)))
    if "decoder" in families and logits is not None:
        last = cells[-1]
        if isinstance(last, HasOutput):
            trs.append(_transition("decoder", L - 1, _decoder_fn(stack, last, type(new_states[-1]), L),
                                   last.stability_state(new_states[-1]), (inputs[-1], *new_states[-1]),
                                   logits.shape[-1]))
        else:
            trs.append(_transition("decoder", L - 1, stack.decode, outputs[-1], out_size=logits.shape[-1]))
    return StepResult(trs, new_states, logits, outputs)


def ffn_transitions(model: Any, x: Tensor, families: Sequence[str] = FAMILIES,
                    layers: Sequence[int] | None = None) -> list[Transition]:
    """Transitions of a deep FFN on ``x [B, F]`` (or ``[B, T, F]``, flattened): ``encoder`` = first layer
    (input -> h_0, layer 0), ``depth`` = h_{l-1} -> h_l (layers 1..depth-1), ``decoder`` = h_last -> logits.
    ``layers`` restricts the depth family to those layer indices (the rest of the net is still run)."""
    bad = set(families) - set(FAMILIES)
    if bad:
        raise ValueError(f"unknown transition families {sorted(bad)}; choose from {', '.join(FAMILIES)}")
    h0 = model.flatten(x)
    hs = [h0]
    for l in range(len(model.layers)):
        hs.append(model.layer_forward(l, hs[-1]))
    trs = []
    if "encoder" in families:
        trs.append(_transition("encoder", 0, _ffn_layer_fn(model, 0), h0, out_size=hs[1].shape[-1]))
    if "depth" in families:
        chosen = range(1, len(model.layers)) if layers is None else layers
        for l in chosen:
            trs.append(_transition("depth", l, _ffn_layer_fn(model, l), hs[l], out_size=hs[l + 1].shape[-1]))
    if "decoder" in families:
        out = model.out
        trs.append(_transition("decoder", len(model.layers) - 1, out, hs[-1], out_size=out.out_features))
    return trs


def _ffn_layer_fn(model: Any, l: int) -> Callable[[Tensor], Tensor]:
    return lambda h: model.layer_forward(l, h)


def layer_counts(model: Any) -> dict[str, int]:
    """How many transitions of each family the model has (the length of each report list)."""
    if is_ffn(model):
        return {"time": 0, "depth": len(model.layers) - 1, "encoder": 1, "decoder": 1}
    stack = as_stack(model)
    L = len(stack.cells)
    return {"time": L, "depth": L - 1, "encoder": 1, "decoder": 1 if stack.has_readout else 0}


def report_index(model: Any, family: str, layer: int) -> int:
    """Position of a transition in its family's per-layer list (depth of a stack starts at layer 1)."""
    if family == "depth":
        return layer - 1
    if family in ("encoder", "decoder"):
        return 0
    return layer


__all__ = [
    "StepResult",
    "as_stack",
    "ffn_transitions",
    "is_ffn",
    "layer_counts",
    "one_sample",
    "report_index",
    "rnn_transitions",
]
