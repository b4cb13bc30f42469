"""Surrogate-gradient (SG) spike functions (spec §3).

Forward: the Heaviside step ``z = H(v) = 1[v > 0]``. Backward: ``dz/dv = f(v) = dampening * g(sharpness * v)``
where every shape ``g`` has ``g(0) = 1`` and ``∫ g = 1``, so ``f(0) = dampening`` and ``∫ f = dampening / sharpness``
for every shape: shapes differ only in how fat their tails are, which is what the stability conditions read.

The backward is made of differentiable torch ops and the Function has a ``jvp`` and ``generate_vmap_rule``, so
``torch.func`` transforms (vmap, jacrev, jvp) and double backward work through spikes.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

ShapeFn = Callable[[Tensor, float], Tensor]  # g(u, tail) with g(0) = 1, ∫ g du = 1


def _rectangular(u: Tensor, q: float) -> Tensor:
    return (u.abs() < 0.5).to(u.dtype)


def _triangular(u: Tensor, q: float) -> Tensor:
    return (1.0 - u.abs()).clamp(min=0.0)


def _exponential(u: Tensor, q: float) -> Tensor:
    return torch.exp(-2.0 * u.abs())


def _gaussian(u: Tensor, q: float) -> Tensor:
    return torch.exp(-math.pi * u * u)


def _sigmoid(u: Tensor, q: float) -> Tensor:
    sig = torch.sigmoid(4.0 * u)
    return 4.0 * sig * (1.0 - sig)


def _fast_sigmoid(u: Tensor, q: float) -> Tensor:
    return (1.0 + 2.0 * u.abs()).pow(-2)


def _q_pseudospike(u: Tensor, q: float) -> Tensor:
    return (1.0 + 2.0 * u.abs() / (q - 1.0)).pow(-q)


def _cauchy(u: Tensor, q: float) -> Tensor:
    return 1.0 / (1.0 + (math.pi * u) ** 2)


# Primitives G with G' = g, G(-inf) = 0, G(+inf) = 1 (None where G is not smooth): used by tests and docs.
def _p_exponential(u: Tensor, q: float) -> Tensor:
    return 0.5 + 0.5 * torch.sign(u) * (1.0 - torch.exp(-2.0 * u.abs()))


def _p_gaussian(u: Tensor, q: float) -> Tensor:
    return 0.5 * (1.0 + torch.erf(math.sqrt(math.pi) * u))


def _p_sigmoid(u: Tensor, q: float) -> Tensor:
    return torch.sigmoid(4.0 * u)


def _p_fast_sigmoid(u: Tensor, q: float) -> Tensor:
    return 0.5 + u / (1.0 + 2.0 * u.abs())


def _p_q_pseudospike(u: Tensor, q: float) -> Tensor:
    return 0.5 + 0.5 * torch.sign(u) * (1.0 - (1.0 + 2.0 * u.abs() / (q - 1.0)).pow(1.0 - q))


def _p_cauchy(u: Tensor, q: float) -> Tensor:
    return 0.5 + torch.atan(math.pi * u) / math.pi


@dataclass(frozen=True)
class Shape:
    """One SG shape: ``g`` (peak 1, area 1), its smooth primitive if any, and whether it reads the tail ``q``."""

    name: str
    g: ShapeFn
    primitive: ShapeFn | None
    uses_tail: bool = False
    default_tail: float | None = None


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("rectangular", _rectangular, None),
        Shape("triangular", _triangular, None),
        Shape("exponential", _exponential, _p_exponential),
        Shape("gaussian", _gaussian, _p_gaussian),
        Shape("sigmoid", _sigmoid, _p_sigmoid),
        Shape("fast_sigmoid", _fast_sigmoid, _p_fast_sigmoid),
        Shape("q_pseudospike", _q_pseudospike, _p_q_pseudospike, uses_tail=True, default_tail=1.56),
        Shape("cauchy", _cauchy, _p_cauchy),
    )
}


class _HeavisideSG(torch.autograd.Function):
    """H(v) forward; ``grad * dampening * g(sharpness * v)`` backward (no gradient to dampening/sharpness)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(v: Tensor, dampening: Tensor, sharpness: Tensor, shape: Shape, tail: float) -> Tensor:
        return (v > 0).to(v.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        v, dampening, sharpness, shape, tail = inputs
        ctx.save_for_backward(v, dampening, sharpness)
        ctx.save_for_forward(v, dampening, sharpness)  # for jvp (forward-mode AD)
        ctx.shape, ctx.tail = shape, tail

    @staticmethod
    def _slope(ctx) -> Tensor:
        v, dampening, sharpness = ctx.saved_tensors
        return dampening * ctx.shape.g(sharpness * v, ctx.tail)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * _HeavisideSG._slope(ctx), None, None, None, None

    @staticmethod
    def jvp(ctx, v_t: Tensor, *_):
        return v_t * _HeavisideSG._slope(ctx)


class SpikeFunction(torch.nn.Module):
    """A callable spike function ``z = spike(v)`` with a surrogate gradient.

    ``dampening`` and ``sharpness`` may be floats or per-neuron tensors ``[n]`` (broadcast over the last axis).
    """

    def __init__(self, shape: str, dampening: float | Tensor = 1.0, sharpness: float | Tensor = 1.0,
                 tail: float | None = None):
        super().__init__()
        if shape not in SHAPES:
            raise ValueError(f"unknown surrogate shape {shape!r}; choose one of {', '.join(names())}")
        self.shape = SHAPES[shape]
        if tail is None:
            tail = self.shape.default_tail
        if self.shape.uses_tail and (tail is None or tail <= 1.0):
            raise ValueError(f"surrogate {shape!r} needs tail q > 1 (tail fatness), got {tail}")
        self.tail = float(tail) if tail is not None else 0.0
        damp = torch.as_tensor(dampening, dtype=torch.get_default_dtype())
        sharp = torch.as_tensor(sharpness, dtype=torch.get_default_dtype())
        if torch.any(sharp <= 0):
            raise ValueError(f"surrogate sharpness must be > 0, got {sharpness}")
        if torch.any(damp < 0):
            raise ValueError(f"surrogate dampening must be >= 0, got {dampening}")
        self.register_buffer("dampening", damp)
        self.register_buffer("sharpness", sharp)

    def forward(self, v: Tensor) -> Tensor:
        damp = self.dampening.to(v.dtype)
        sharp = self.sharpness.to(v.dtype)
        return _HeavisideSG.apply(v, damp, sharp, self.shape, self.tail)

    def derivative(self, v: Tensor) -> Tensor:
        """The surrogate derivative f(v) itself (same shape as ``v``)."""
        return self.dampening.to(v.dtype) * self.shape.g(self.sharpness.to(v.dtype) * v, self.tail)

    def extra_repr(self) -> str:
        tail = f", tail={self.tail}" if self.shape.uses_tail else ""
        return f"{self.shape.name}, dampening={self.dampening.tolist()}, sharpness={self.sharpness.tolist()}{tail}"


def names() -> list[str]:
    """Names accepted by :func:`get`."""
    return list(SHAPES)


def get(name: str, dampening: float | Tensor = 1.0, sharpness: float | Tensor = 1.0,
        tail: float | None = None) -> SpikeFunction:
    """The spike function of SG shape ``name`` (see :func:`names`), normalised to ``f(0) = dampening`` and
    ``∫ f = dampening / sharpness``; ``tail`` is q of ``q_pseudospike`` (heavier tails as q -> 1)."""
    return SpikeFunction(name, dampening, sharpness, tail)


def resolve(spike: str | Callable[[Tensor], Tensor] | None) -> Callable[[Tensor], Tensor]:
    """A spike function from a name (default shape and scale) or a callable (returned as is)."""
    if spike is None:
        return get("fast_sigmoid")
    if isinstance(spike, str):
        return get(spike)
    if not callable(spike):
        raise TypeError(f"spike must be a surrogate name or a callable, got {type(spike).__name__}")
    return spike
