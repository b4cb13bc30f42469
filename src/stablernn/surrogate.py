"""Surrogate-gradient (SG) spike functions (paper B, arXiv:2202.00282; docs/surrogates.md).

Why one module of ~480 lines: eight shapes, each with its derivative, integral and second moment in closed
form, plus the one autograd Function and the aliases of other libraries: one table of formulas.

Forward: the Heaviside step ``z = H(v) = 1[v > 0]``. Backward: ``dz/dv = f(v) = dampening * g(sharpness * v)``
where every shape ``g`` has ``g(0) = 1`` and ``∫ g = 1``, so ``f(0) = dampening`` (γ) and ``∫ f = dampening /
sharpness`` (γ/s) for every shape: shapes differ only in how fat their tails are, which is what the stability
conditions read (``stablernn.snn.conditions``).

The backward is made of differentiable torch ops and the Function has a ``jvp`` and ``generate_vmap_rule``, so
``torch.func`` transforms (vmap, jacrev, jvp) and double backward work through spikes.

Besides the eight shapes (:data:`SHAPES`) there are aliases (:data:`ALIASES`) that reproduce other libraries'
surrogates in *their own* parametrisation (``get("snntorch_atan", alpha=2.0)``), mapped onto (shape, γ, s).

Learnable γ and s (``get(..., learnable=True, size=n)``): the forward is a step, so the true gradient of the loss
with respect to γ and s is zero. We give them the gradient of the *surrogate model* the backward already assumes:
the spike behaves, to first order, like ``ẑ(v) = H(v) + (γ/s)·R(s v)`` with ``R(u) = G(u) − H(u)``, ``G`` the
shape's CDF (``G' = g``). Its v-derivative is exactly the surrogate ``γ g(s v)`` (a.e.), its value is the step
plus a residual that vanishes away from threshold, and its parameter derivatives are

    ∂ẑ/∂γ = R(s v) / s,        ∂ẑ/∂s = γ v g(s v) / s − γ R(s v) / s²,

both zero far from threshold: a neuron just below threshold asks for a wider SG (larger γ/s) to "count" as
spiking, one just above asks for a narrower one. The forward value stays exactly the step (straight-through).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

ShapeFn = Callable[[Tensor, float], Tensor]  # g(u, tail) with g(0) = 1, ∫ g du = 1


# --- shapes g(u): peak 1, area 1 ----------------------------------------------------------------------------------
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


# --- CDFs G(u) = ∫_{-inf}^u g, G(-inf) = 0, G(+inf) = 1 (every shape; smooth ones double as "primitive") ---------
def _c_rectangular(u: Tensor, q: float) -> Tensor:
    return (u + 0.5).clamp(0.0, 1.0)


def _c_triangular(u: Tensor, q: float) -> Tensor:
    w = u.abs().clamp(max=1.0)
    return 0.5 + torch.sign(u) * (w - 0.5 * w * w)


def _c_exponential(u: Tensor, q: float) -> Tensor:
    return 0.5 + 0.5 * torch.sign(u) * (1.0 - torch.exp(-2.0 * u.abs()))


def _c_gaussian(u: Tensor, q: float) -> Tensor:
    return 0.5 * (1.0 + torch.erf(math.sqrt(math.pi) * u))


def _c_sigmoid(u: Tensor, q: float) -> Tensor:
    return torch.sigmoid(4.0 * u)


def _c_fast_sigmoid(u: Tensor, q: float) -> Tensor:
    return 0.5 + u / (1.0 + 2.0 * u.abs())


def _c_q_pseudospike(u: Tensor, q: float) -> Tensor:
    return 0.5 + 0.5 * torch.sign(u) * (1.0 - (1.0 + 2.0 * u.abs() / (q - 1.0)).pow(1.0 - q))


def _c_cauchy(u: Tensor, q: float) -> Tensor:
    return 0.5 + torch.atan(math.pi * u) / math.pi


# --- P2(u) = ∫_0^u g(t)² dt (odd): the second moment the stability conditions need -------------------------------
def _s_rectangular(u: Tensor, q: float) -> Tensor:
    return u.clamp(-0.5, 0.5)


def _s_triangular(u: Tensor, q: float) -> Tensor:
    w = u.abs().clamp(max=1.0)
    return torch.sign(u) * (1.0 - (1.0 - w) ** 3) / 3.0


def _s_exponential(u: Tensor, q: float) -> Tensor:
    return torch.sign(u) * (1.0 - torch.exp(-4.0 * u.abs())) / 4.0


def _s_gaussian(u: Tensor, q: float) -> Tensor:
    return torch.erf(math.sqrt(2.0 * math.pi) * u) / (2.0 * math.sqrt(2.0))


def _s_sigmoid(u: Tensor, q: float) -> Tensor:
    # with σ = sigmoid(4u): ∫ 16 σ²(1-σ)² du = 4 ∫ σ(1-σ) dσ = 4 (σ²/2 - σ³/3); centred so P2(0) = 0
    sig = torch.sigmoid(4.0 * u)
    return 4.0 * (sig * sig / 2.0 - sig ** 3 / 3.0) - 1.0 / 3.0


def _s_fast_sigmoid(u: Tensor, q: float) -> Tensor:
    return torch.sign(u) * (1.0 - (1.0 + 2.0 * u.abs()).pow(-3)) / 6.0


def _s_q_pseudospike(u: Tensor, q: float) -> Tensor:
    k = (q - 1.0) / (2.0 * (2.0 * q - 1.0))
    return torch.sign(u) * k * (1.0 - (1.0 + 2.0 * u.abs() / (q - 1.0)).pow(1.0 - 2.0 * q))


def _s_cauchy(u: Tensor, q: float) -> Tensor:
    a = math.pi * u
    return (a / (1.0 + a * a) + torch.atan(a)) / (2.0 * math.pi)


@dataclass(frozen=True)
class Shape:
    """One SG shape ``g`` (peak 1, area 1).

    ``primitive``: the CDF where it is smooth (the "smooth primitive" the backward is the derivative of), else None;
    ``cdf``: ``G(u) = ∫_{-inf}^u g`` for every shape; ``sq_integral``: ``∫_0^u g²`` (odd); ``uses_tail``: whether
    it reads q (``q_pseudospike``).
    """

    name: str
    g: ShapeFn
    primitive: ShapeFn | None
    cdf: ShapeFn
    sq_integral: ShapeFn
    uses_tail: bool = False
    default_tail: float | None = None
    formula: str = ""


ShapeName = Literal["rectangular", "triangular", "exponential", "gaussian", "sigmoid", "fast_sigmoid", "q_pseudospike",
                    "cauchy"]
AliasName = Literal["snntorch_atan", "snntorch_fast_sigmoid", "snntorch_sigmoid", "superspike", "norse_super",
                    "spikingjelly_sigmoid", "spikingjelly_atan"]
SurrogateName = Literal[ShapeName, AliasName]  # what :func:`get` accepts; :data:`SHAPES` / :data:`ALIASES` define each

SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("rectangular", _rectangular, None, _c_rectangular, _s_rectangular, formula="γ·1[|s v| < 1/2]"),
        Shape("triangular", _triangular, None, _c_triangular, _s_triangular, formula="γ·max(0, 1 − |s v|)"),
        Shape("exponential", _exponential, _c_exponential, _c_exponential, _s_exponential,
              formula="γ·exp(−2 s|v|)"),
        Shape("gaussian", _gaussian, _c_gaussian, _c_gaussian, _s_gaussian, formula="γ·exp(−π (s v)²)"),
        Shape("sigmoid", _sigmoid, _c_sigmoid, _c_sigmoid, _s_sigmoid, formula="4γ·σ(4 s v)(1 − σ(4 s v))"),
        Shape("fast_sigmoid", _fast_sigmoid, _c_fast_sigmoid, _c_fast_sigmoid, _s_fast_sigmoid,
              formula="γ / (1 + 2 s|v|)²"),
        Shape("q_pseudospike", _q_pseudospike, _c_q_pseudospike, _c_q_pseudospike, _s_q_pseudospike,
              uses_tail=True, default_tail=1.56, formula="γ / (1 + 2 s|v|/(q − 1))^q"),
        Shape("cauchy", _cauchy, _c_cauchy, _c_cauchy, _s_cauchy, formula="γ / (1 + (π s v)²)"),
    )
}


# --- aliases: other libraries' surrogates in their own parametrisation --------------------------------------------
@dataclass(frozen=True)
class Alias:
    """Another library's surrogate, ``f(x; alpha)`` in its own parametrisation, as one of our shapes.

    ``scale(alpha) -> (dampening, sharpness)`` maps their parameter onto γ and s of ``shape``.
    """

    name: str
    shape: str
    param: str  # the parameter's name in that library
    default: float
    scale: Callable[[float], tuple[float, float]]
    formula: str
    source: str


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        # snnTorch surrogate.atan(alpha=2.0): f = (α/2) / (1 + (π α U / 2)²): peak α/2, area 1 -> cauchy, γ = s = α/2
        Alias("snntorch_atan", "cauchy", "alpha", 2.0, lambda a: (a / 2.0, a / 2.0),
              "(α/2) / (1 + (π α U/2)²)", "snnTorch surrogate.atan (ATan)"),
        # snnTorch surrogate.fast_sigmoid(slope=25): f = 1 / (1 + k|U|)²: peak 1, area 2/k -> fast_sigmoid γ=1, s=k/2
        Alias("snntorch_fast_sigmoid", "fast_sigmoid", "slope", 25.0, lambda k: (1.0, k / 2.0),
              "1 / (1 + k|U|)²", "snnTorch surrogate.fast_sigmoid (FastSigmoid)"),
        # snnTorch surrogate.sigmoid(slope=25): f = k σ(kU)(1 − σ(kU)): peak k/4, area 1 -> sigmoid, γ = s = k/4
        Alias("snntorch_sigmoid", "sigmoid", "slope", 25.0, lambda k: (k / 4.0, k / 4.0),
              "k σ(k U)(1 − σ(k U))", "snnTorch surrogate.sigmoid (Sigmoid)"),
        # SuperSpike as published (Zenke & Ganguli 2018, Neural Comput. 30:1514, §3.3.2) and in Norse < 1.1:
        # f = 1 / (α|x| + 1)² -> fast_sigmoid γ = 1, s = α/2.
        Alias("superspike", "fast_sigmoid", "alpha", 100.0, lambda a: (1.0, a / 2.0),
              "1 / (α|x| + 1)²", "SuperSpike (Zenke & Ganguli 2018); Norse < 1.1 functional.superspike"),
        # Norse 1.1 SuperSpike (LIFParameters(method="super")): its backward is 1 / (|x| + 1)² and ignores α, so
        # this alias does too (α is checked, then unused): fast_sigmoid γ = 1, s = 1/2. The α form is "superspike".
        Alias("norse_super", "fast_sigmoid", "alpha", 100.0, lambda a: (1.0, 0.5),
              "1 / (|x| + 1)² (α ignored)", "Norse 1.1 functional.superspike (SuperSpike.backward)"),
        # SpikingJelly surrogate.Sigmoid(alpha=4): f = α σ(αx)(1 − σ(αx)): peak α/4, area 1 -> sigmoid, γ = s = α/4
        Alias("spikingjelly_sigmoid", "sigmoid", "alpha", 4.0, lambda a: (a / 4.0, a / 4.0),
              "α σ(α x)(1 − σ(α x))", "SpikingJelly surrogate.Sigmoid"),
        # SpikingJelly surrogate.ATan(alpha=2): same formula as snnTorch's atan
        Alias("spikingjelly_atan", "cauchy", "alpha", 2.0, lambda a: (a / 2.0, a / 2.0),
              "(α/2) / (1 + (π α x/2)²)", "SpikingJelly surrogate.ATan"),
    )
}


class _HeavisideSG(torch.autograd.Function):
    """H(v) forward; ``grad * dampening * g(sharpness * v)`` backward (no first-order gradient to dampening and
    sharpness here: :class:`SpikeFunction` adds theirs when they are learnable)."""

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


Learnable = bool | Literal["dampening", "sharpness"]


class SpikeFunction(torch.nn.Module):
    """A callable spike function ``z = spike(v)`` with a surrogate gradient.

    Args:
        shape: one of :data:`SHAPES`.
        dampening: γ = f(0); a float or a per-neuron tensor ``[n]`` (broadcast over the last axis of ``v``).
        sharpness: s; the SG's area is γ/s. Float or per-neuron ``[n]``.
        tail: q of ``q_pseudospike`` (> 1; heavier tails as q -> 1).
        learnable: ``True`` (γ and s), ``"dampening"`` or ``"sharpness"``: make them ``nn.Parameter`` s with the
            surrogate-model gradient described in the module docstring. During training they are clamped to
            γ >= 0 and s >= 1e-6 in the forward (the clamp stops their gradient at the bound).
        size: expand scalar γ and s to per-neuron vectors of this length (for per-neuron learning).
    """

    def __init__(self, shape: str, dampening: float | Tensor = 1.0, sharpness: float | Tensor = 1.0,
                 tail: float | None = None, *, learnable: Learnable = False, size: int | None = None,
                 alias: str | None = None):
        super().__init__()
        if shape not in SHAPES:
            raise ValueError(f"unknown surrogate shape {shape!r}; choose one of {', '.join(names())}")
        self.shape = SHAPES[shape]
        self.alias = alias
        if tail is None:
            tail = self.shape.default_tail
        if self.shape.uses_tail and (tail is None or not tail > 1.0 or not math.isfinite(tail)):
            raise ValueError(f"surrogate {shape!r} needs a finite tail q > 1 (tail fatness), got {tail}")
        # q as a buffer, so checkpoints and rebuilt runs carry the tail a fit chose; the float copy serves the closed
        # forms without a device sync per step
        self.register_buffer("tail_q", torch.tensor(float(tail) if tail is not None else 0.0, dtype=torch.float64))
        self._tail = float(self.tail_q)
        if learnable not in (False, True, "dampening", "sharpness"):
            raise ValueError(f"learnable must be False, True, 'dampening' or 'sharpness', got {learnable!r}")
        damp, sharp = _scale_tensor(dampening), _scale_tensor(sharpness)
        if not (torch.all(torch.isfinite(damp)) and torch.all(torch.isfinite(sharp))):
            raise ValueError(f"surrogate dampening and sharpness must be finite, got {dampening}, {sharpness}")
        if torch.any(sharp <= 0):
            raise ValueError(f"surrogate sharpness must be > 0, got {sharpness}")
        if torch.any(damp < 0):
            raise ValueError(f"surrogate dampening must be >= 0, got {dampening}")
        if size is not None:
            damp, sharp = _expand(damp, size, "dampening"), _expand(sharp, size, "sharpness")
        self._register("dampening", damp, learnable in (True, "dampening"))
        self._register("sharpness", sharp, learnable in (True, "sharpness"))

    def _register(self, name: str, value: Tensor, learn: bool) -> None:
        if learn:
            setattr(self, name, torch.nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    @property
    def learnable(self) -> bool:
        return isinstance(self.dampening, torch.nn.Parameter) or isinstance(self.sharpness, torch.nn.Parameter)

    def _scales(self, v: Tensor) -> tuple[Tensor, Tensor]:
        damp, sharp = self.dampening.to(v.dtype), self.sharpness.to(v.dtype)
        if self.learnable:
            damp, sharp = damp.clamp(min=0.0), sharp.clamp(min=1e-6)
        return damp, sharp

    def forward(self, v: Tensor) -> Tensor:
        damp, sharp = self._scales(v)
        z = _HeavisideSG.apply(v, damp, sharp, self.shape, self.tail)
        if self.learnable:
            # zero in value; carries the surrogate-model gradient to γ and s (module docstring)
            vd = v.detach()
            resid = damp / sharp * (self.shape.cdf(sharp * vd, self.tail) - (vd > 0).to(v.dtype))
            z = z + (resid - resid.detach())
        return z

    def derivative(self, v: Tensor) -> Tensor:
        """The surrogate derivative f(v) itself (same shape as ``v``)."""
        damp, sharp = self._scales(v)
        return damp * self.shape.g(sharp * v, self.tail)

    def describe(self) -> dict[str, object]:
        """Shape, γ and s (mean over neurons when per-neuron), q, and the area γ/s, for reports."""
        damp, sharp = self.dampening.detach(), self.sharpness.detach()
        return {"shape": self.shape.name, "alias": self.alias, "dampening": float(damp.mean()),
                "sharpness": float(sharp.mean()), "tail": self.tail if self.shape.uses_tail else None,
                "area": float((damp / sharp).mean()), "per_neuron": damp.dim() > 0 or sharp.dim() > 0,
                "learnable": self.learnable}

    @property
    def tail(self) -> float:
        """q of ``q_pseudospike`` (0 for shapes without a tail); kept in the buffer ``tail_q`` too."""
        return self._tail

    @tail.setter
    def tail(self, q: float) -> None:
        self._tail = float(q)
        with torch.no_grad():
            self.tail_q.fill_(self._tail)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the tail was saved keep the tail this module was built with
        state_dict.setdefault(prefix + "tail_q", self.tail_q.detach().clone())
        tail = float(state_dict[prefix + "tail_q"])
        if self.shape.uses_tail and not (tail > 1.0 and math.isfinite(tail)):
            raise ValueError(f"the state dict holds an invalid surrogate tail q = {tail} (must be finite and > 1)")
        # a scalar γ/s may be replaced by a per-neuron one (e.g. a stability design saved as a checkpoint)
        for name in ("dampening", "sharpness"):
            key = prefix + name
            current = getattr(self, name)
            if key in state_dict and state_dict[key].shape != current.shape:
                new = torch.empty_like(state_dict[key], dtype=current.dtype, device=current.device)
                if isinstance(current, torch.nn.Parameter):
                    setattr(self, name, torch.nn.Parameter(new))
                else:
                    self.register_buffer(name, new)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._tail = float(self.tail_q)

    def extra_repr(self) -> str:
        tail = f", tail={self.tail}" if self.shape.uses_tail else ""
        alias = f" (alias {self.alias})" if self.alias else ""

        def show(t: Tensor) -> str:
            return f"{t.item():g}" if t.dim() == 0 else f"[{t.numel()}] mean {t.detach().mean().item():.4g}"

        return (f"{self.shape.name}{alias}, dampening={show(self.dampening)}, sharpness={show(self.sharpness)}"
                f"{tail}, learnable={self.learnable}")


def _scale_tensor(x: float | Tensor) -> Tensor:
    """A float tensor copy (a floating tensor keeps its dtype; numbers use the default dtype)."""
    if isinstance(x, Tensor) and x.is_floating_point():
        return x.detach().clone()
    return torch.as_tensor(x, dtype=torch.get_default_dtype()).clone()


def _expand(t: Tensor, size: int, name: str) -> Tensor:
    if t.dim() == 0:
        return t.expand(size).clone()
    if t.shape != (size,):
        raise ValueError(f"{name} must be a scalar or a vector of length size={size}, got shape {list(t.shape)}")
    return t


def names() -> list[str]:
    """Names accepted by :func:`get`: the shapes, then the aliases of other libraries."""
    return [*SHAPES, *ALIASES]


def get(name: str, dampening: float | Tensor = 1.0, sharpness: float | Tensor = 1.0,
        tail: float | None = None, *, alpha: float | None = None, learnable: Learnable = False,
        size: int | None = None) -> SpikeFunction:
    """The spike function ``name`` (see :func:`names`).

    For a shape: normalised to ``f(0) = dampening`` and ``∫ f = dampening / sharpness``; ``tail`` is q of
    ``q_pseudospike`` (heavier tails as q -> 1). For an alias (:data:`ALIASES`): ``alpha`` is that library's own
    parameter (snnTorch's ``alpha`` / ``slope``, Norse's and SpikingJelly's ``alpha``; default theirs), and
    dampening / sharpness must be left at 1 (use the shape's own name to set them). ``learnable`` / ``size``: see
    :class:`SpikeFunction`.
    """
    if name in ALIASES:
        a = ALIASES[name]
        if not _is_one(dampening) or not _is_one(sharpness) or tail is not None:
            raise ValueError(f"surrogate alias {name!r} is set by its own parameter {a.param!r} (pass alpha=...); "
                             f"to choose dampening/sharpness directly use the shape {a.shape!r}")
        value = a.default if alpha is None else float(alpha)
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{name}: {a.param} must be a finite number > 0, got {alpha}")
        damp, sharp = a.scale(value)
        return SpikeFunction(a.shape, damp, sharp, learnable=learnable, size=size, alias=name)
    if alpha is not None:
        raise ValueError(f"alpha is the parameter of the other libraries' aliases ({', '.join(ALIASES)}); shape "
                         f"{name!r} takes dampening and sharpness")
    return SpikeFunction(name, dampening, sharpness, tail, learnable=learnable, size=size)


def _is_one(x: float | Tensor) -> bool:
    t = torch.as_tensor(x)
    return t.numel() == 1 and float(t) == 1.0


def resolve(spike: str | Callable[[Tensor], Tensor] | None) -> Callable[[Tensor], Tensor]:
    """A spike function from a name (default shape and scale) or a callable (returned as is)."""
    if spike is None:
        return get("fast_sigmoid")
    if isinstance(spike, str):
        return get(spike)
    if not callable(spike):
        raise TypeError(f"spike must be a surrogate name or a callable, got {type(spike).__name__}")
    return spike


def check_vmappable(spike: Callable[[Tensor], Tensor], name: str = "spike function") -> None:
    """Raise ``TypeError`` naming the stablernn alias to use when ``spike`` cannot run under ``torch.func.vmap``
    (an ``autograd.Function`` without a vmap rule, as snnTorch's and Norse's surrogates): LSC and the diagnostics
    take every Jacobian under ``vmap``."""
    try:
        torch.func.vmap(torch.func.jacrev(lambda v: spike(v)))(torch.zeros(2, 3))
    except Exception as e:  # any failure here is the user's function failing under vmap
        raise TypeError(
            f"{name} {getattr(spike, '__qualname__', type(spike).__name__)} cannot run under torch.func.vmap "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); use the stablernn surrogate of the same "
            f"function instead: stablernn.surrogate.get(name, alpha=...) with name one of {', '.join(ALIASES)} "
            f"(other libraries' surrogates, exact match), or a shape: {', '.join(SHAPES)}") from None


def shape_of(name: str) -> Shape:
    """The :class:`Shape` behind a shape or alias name."""
    if name in ALIASES:
        return SHAPES[ALIASES[name].shape]
    if name not in SHAPES:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {', '.join(names())}")
    return SHAPES[name]


__all__ = ["ALIASES", "SHAPES", "Alias", "AliasName", "Shape", "ShapeName", "SpikeFunction", "SurrogateName",
           "check_vmappable", "get", "names", "resolve", "shape_of"]
