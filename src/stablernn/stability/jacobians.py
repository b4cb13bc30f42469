"""Per-sample one-step Jacobians of every transition family, and their radii (spec §1.2–1.3).

A *transition* is a one-sample function ``fn(source [d_in], *context) -> target [d_out]`` plus a batch of sources
``[B, d_in]`` and per-sample context tensors ``[B, ...]`` (the layer's input, the other state pieces). The same
function serves both engines:

- **exact**: ``vmap(jacrev(fn))`` gives ``J [B, d_out, d_in]``; the radius is ``max |eig|`` of ``J`` (a non-square
  ``J`` is made square by keeping a random sorted subset of its longer axis, as in the papers' code), the norm its
  top singular value. Everything stays on the autograd graph, so a loss on the radius trains the weights.
- **matrix-free**: Arnoldi iterations on Jacobian-vector products (``vjp`` of the batched function, and ``J v`` as
  the pullback of that linear pullback, far faster here than ``jvp`` through ``vmap``), run
  without gradient; the converged eigen/singular vectors are then plugged into one differentiable product
  (``λ = uᵀJv / uᵀv`` with left and right Ritz vectors, ``σ = uᵀJv``), whose gradient is the exact first-order
  gradient of a simple top eigenvalue / singular value.

Transitions of a stack (``DeepRNN`` or anything with ``cells``, ``encode``, ``layer_input``, ``layer_output``,
``decode``), of a single cell, and of an ``FFN`` are built by :func:`rnn_transitions` and :func:`ffn_transitions`.
Families: ``time`` ``s[t-1,l] -> s[t,l]``; ``depth`` ``s[t,l-1] -> s[t,l]`` (through the lower cell's ``output(state)``
when it has one, else from layer l's input); ``encoder`` ``x[t] -> s[t,1]`` (from the embedding vector for token
inputs); ``decoder`` ``s[t,L] -> logits[t]``. For an FFN: encoder = first layer, depth = layer l-1 -> l, decoder =
readout.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import jacrev, vjp, vmap

from .lsc_config import FAMILIES

Measure = Literal["radius", "norm", "probe"]
Engine = Literal["auto", "exact", "matrix_free"]
MEASURES: tuple[str, ...] = ("radius", "norm", "probe")
ENGINES: tuple[str, ...] = ("auto", "exact", "matrix_free")
EXACT_MAX_DIM = 256  # "auto" uses the exact engine up to this (square) size; see benchmarks/jacobian_engines.py


@dataclass
class Transition:
    """One transition family at one layer, for one batch.

    ``fn`` maps one sample (no batch axis) ``source [d_in], *context -> target [d_out]``; ``source`` is ``[B, d_in]``
    and every context tensor ``[B, ...]``.
    """

    family: str
    layer: int
    fn: Callable[..., Tensor]
    source: Tensor
    context: tuple[Tensor, ...] = ()
    out_size: int | None = None  # d_out when known (saves a forward pass); computed on demand otherwise

    @property
    def batch_size(self) -> int:
        return int(self.source.shape[0])

    def batched(self) -> Callable[[Tensor], Tensor]:
        """``source [B, d_in] -> target [B, d_out]`` (samples independent, context fixed)."""
        ctx = self.context
        f = vmap(self.fn)
        return lambda s: f(s, *ctx)

    def jacobian(self) -> Tensor:
        """Per-sample Jacobians ``[B, d_out, d_in]`` (differentiable w.r.t. the weights)."""
        return batch_jacobian(self.fn, self.source, *self.context)

    def subset(self, index: Tensor | slice) -> Transition:
        """The same transition on a subset of the batch."""
        return replace(self, source=self.source[index], context=tuple(c[index] for c in self.context))

    def out_dim(self) -> int:
        """``d_out`` (from ``out_size``, else one forward pass of one sample, then cached)."""
        if self.out_size is None:
            with torch.no_grad():
                one = replace(self, source=self.source[:1], context=tuple(c[:1] for c in self.context))
                self.out_size = int(one.batched()(one.source).shape[-1])
        return self.out_size


def batch_jacobian(fn: Callable[..., Tensor], source: Tensor, *context: Tensor) -> Tensor:
    """``vmap(jacrev(fn))``: per-sample Jacobians ``[B, d_out, d_in]`` of a one-sample function w.r.t. its first
    argument; the result stays on the autograd graph of any weights ``fn`` uses."""
    return vmap(jacrev(fn))(source, *context)


# --- measures on materialised Jacobians ------------------------------------------------------------------------
def square_indices(rows: int, cols: int, generator: torch.Generator | None = None,
                   device: Any = None) -> tuple[Tensor | None, Tensor | None]:
    """Indices making a ``rows x cols`` matrix square: ``min(rows, cols)`` sorted indices drawn without replacement
    from the longer axis (``None`` for the axis kept whole). Drawn once per call, shared across the batch."""
    if rows == cols:
        return None, None
    k = min(rows, cols)
    idx = torch.randperm(max(rows, cols), generator=generator)[:k].sort().values.to(device)
    return (idx, None) if rows > cols else (None, idx)


def square(J: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``J [B, m, n]`` made square ``[B, k, k]`` (``k = min(m, n)``) by random subsampling of the longer axis."""
    r, c = square_indices(J.shape[-2], J.shape[-1], generator, J.device)
    if r is not None:
        J = J.index_select(-2, r)
    if c is not None:
        J = J.index_select(-1, c)
    return J


def spectral_radius(J: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``max_i |λ_i(J_b)|`` per sample, ``[B]``, after :func:`square`; differentiable (through ``eigvals``)."""
    return torch.linalg.eigvals(square(J, generator)).abs().amax(-1)


def spectral_norm(J: Tensor) -> Tensor:
    """Top singular value per sample, ``[B]`` (well defined for non-square ``J``)."""
    return torch.linalg.svdvals(J)[..., 0]


def probe_norm(J: Tensor, n_probes: int = 8, generator: torch.Generator | None = None) -> Tensor:
    """Randomised lower bound of the spectral norm: ``max_k |J x_k| / |x_k|`` over Gaussian probes, ``[B]``."""
    x = torch.randn(J.shape[-1], n_probes, generator=generator).to(J)
    return ((J @ x).norm(dim=-2) / x.norm(dim=0)).amax(-1)


def measure_jacobian(J: Tensor, measure: Measure = "radius", generator: torch.Generator | None = None) -> Tensor:
    """Apply ``measure`` (``radius`` | ``norm`` | ``probe``) to ``J [B, m, n]`` -> ``[B]``."""
    if measure == "radius":
        return spectral_radius(J, generator)
    if measure == "norm":
        return spectral_norm(J)
    if measure == "probe":
        return probe_norm(J, generator=generator)
    raise ValueError(f"unknown measure {measure!r}; choose one of {', '.join(MEASURES)}")


# --- matrix-free engine ------------------------------------------------------------------------------------------
@dataclass
class ArnoldiResult:
    """Batched Arnoldi factorisation: ``Q [B, n, k]`` orthonormal, ``H [B, k, k]`` Hessenberg, ``iterations = k``."""

    Q: Tensor
    H: Tensor
    iterations: int


def arnoldi(matvec: Callable[[Tensor], Tensor], v0: Tensor, max_iter: int, tol: float = 1e-4,
            check_every: int = 4, generator: torch.Generator | None = None) -> ArnoldiResult:
    """Arnoldi with full re-orthogonalisation on a batch of operators: ``matvec(V [B, n]) -> [B, n]``.

    Stops when the largest-modulus Ritz value of every sample changed by less than ``tol`` (relative) between two
    checks (after ``check_every`` iterations, then at sizes growing by 25 %), or after ``min(max_iter, n)``
    iterations. A breakdown (invariant subspace found) is
    continued from a fresh random vector, which keeps every Ritz value a valid eigenvalue estimate.
    """
    B, n = v0.shape
    k_max = max(1, min(int(max_iter), n))
    Q = torch.zeros(B, n, k_max + 1, dtype=v0.dtype, device=v0.device)
    H = torch.zeros(B, k_max + 1, k_max, dtype=v0.dtype, device=v0.device)
    Q[:, :, 0] = v0 / v0.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    prev: Tensor | None = None
    k = k_max
    next_check = check_every
    for j in range(k_max):
        w = matvec(Q[:, :, j])
        basis = Q[:, :, : j + 1]
        h = torch.einsum("bnk,bn->bk", basis, w)
        w = w - torch.einsum("bnk,bk->bn", basis, h)
        h2 = torch.einsum("bnk,bn->bk", basis, w)  # second pass: classical Gram-Schmidt loses orthogonality
        w = w - torch.einsum("bnk,bk->bn", basis, h2)
        H[:, : j + 1, j] = h + h2
        hn = w.norm(dim=-1)
        H[:, j + 1, j] = hn
        broke = hn <= 1e-10 * H[:, : j + 2, j].abs().amax(-1).clamp_min(1e-30)
        if broke.any():
            fresh = torch.randn(B, n, generator=generator).to(w)
            fresh = fresh - torch.einsum("bnk,bk->bn", basis, torch.einsum("bnk,bn->bk", basis, fresh))
            w = torch.where(broke[:, None], fresh, w)
            H[:, j + 1, j] = torch.where(broke, torch.zeros_like(hn), hn)
            hn = w.norm(dim=-1)
        Q[:, :, j + 1] = w / hn[:, None].clamp_min(1e-30)
        if j + 1 >= next_check or j + 1 == k_max:
            # checks at geometrically spaced sizes: an eig of the k x k Hessenberg costs k^3, so checking every few
            # iterations would cost more than the products themselves
            next_check = max(j + 1 + check_every, int(1.25 * (j + 1)))
            top = torch.linalg.eigvals(H[:, : j + 1, : j + 1]).abs().amax(-1)
            if prev is not None and bool(((top - prev).abs() <= tol * top.clamp_min(1e-12)).all()):
                k = j + 1
                break
            prev = top
    return ArnoldiResult(Q[:, :, :k], H[:, :k, :k], k)


def _top_ritz(res: ArnoldiResult, near: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Largest-modulus Ritz value ``[B]`` (or the one nearest ``near``) and its Ritz vector ``[B, n]`` (complex)."""
    vals, vecs = torch.linalg.eig(res.H)
    i = vals.abs().argmax(-1) if near is None else (vals - near[:, None]).abs().argmin(-1)
    theta = vals.gather(-1, i[:, None])[:, 0]
    y = vecs.gather(-1, i[:, None, None].expand(-1, vecs.shape[1], 1))[..., 0]
    v = torch.einsum("bnk,bk->bn", res.Q.to(y.dtype), y)
    return theta, v


def _forward_products(pullback: Callable[[Tensor], tuple[Tensor, ...]], n_out: int, like: Tensor
                      ) -> Callable[[Tensor], Tensor]:
    """``v -> J v`` as the pullback of the (linear) pullback ``u -> Jᵀ u``: one linearisation, then every product
    is a plain reverse pass. Measured ~100x faster than ``torch.func.jvp`` of the vmapped step (1.7 ms vs 177 ms
    for a batch of 8 GRU steps at width 256), and exact."""
    u0 = like.new_zeros(like.shape[0], n_out)
    _, back = vjp(lambda u: pullback(u)[0], u0)
    return lambda v: back(v)[0]


def _selectors(tr: Transition, generator: torch.Generator | None):
    """Operators of the square-subsampled Jacobian ``P_r J P_c`` for the radius: (matvec, rmatvec, n, value fn)."""
    n_in = tr.source.shape[-1]
    n_out = tr.out_dim()
    rows, cols = square_indices(n_out, n_in, generator, tr.source.device)
    f = tr.batched()

    def embed_in(v: Tensor) -> Tensor:
        if cols is None:
            return v
        z = v.new_zeros(v.shape[0], n_in)
        return z.index_copy(1, cols, v)

    def embed_out(u: Tensor) -> Tensor:
        if rows is None:
            return u
        z = u.new_zeros(u.shape[0], n_out)
        return z.index_copy(1, rows, u)

    def pick_out(y: Tensor) -> Tensor:
        return y if rows is None else y.index_select(1, rows)

    def pick_in(g: Tensor) -> Tensor:
        return g if cols is None else g.index_select(1, cols)

    src = tr.source.detach()
    _, pullback = vjp(f, src)
    forward = _forward_products(pullback, n_out, src)

    def matvec(v: Tensor) -> Tensor:
        return pick_out(forward(embed_in(v)))

    def rmatvec(u: Tensor) -> Tensor:
        return pick_in(pullback(embed_out(u))[0])

    return matvec, rmatvec, min(n_in, n_out), f, embed_in, embed_out, pick_in, pick_out


def matrix_free_radius(tr: Transition, max_iter: int = 64, tol: float = 1e-4,
                       generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """Spectral radius ``[B]`` of the (square-subsampled) Jacobian from Arnoldi on ``J`` and ``Jᵀ``; the result is
    differentiable w.r.t. the weights (and the source) through ``λ = uᵀJv / uᵀv``. Returns ``(radius, iterations)``.
    """
    with torch.no_grad():
        matvec, rmatvec, n, f, _embed_in, embed_out, pick_in, _ = _selectors(tr, generator)
        dtype = tr.source.dtype
        v0 = torch.randn(tr.batch_size, n, generator=generator).to(tr.source)
        right = arnoldi(matvec, v0, max_iter, tol, generator=generator)
        theta, v = _top_ritz(right)
        left = arnoldi(rmatvec, torch.randn(tr.batch_size, n, generator=generator).to(tr.source), max_iter, tol,
                       generator=generator)
        _, u = _top_ritz(left, near=theta)
        denom = (u * v).sum(-1)
    # differentiable re-evaluation: Jᵀu for u = a + ib through one vjp on the graph of the weights
    _, pullback = vjp(f, tr.source)
    ga = pick_in(pullback(embed_out(u.real.to(dtype)))[0])
    gb = pick_in(pullback(embed_out(u.imag.to(dtype)))[0])
    vr, vi = v.real.to(dtype), v.imag.to(dtype)
    num_re = (ga * vr).sum(-1) - (gb * vi).sum(-1)
    num_im = (ga * vi).sum(-1) + (gb * vr).sum(-1)
    lam = torch.complex(num_re, num_im) / denom
    return lam.abs(), right.iterations + left.iterations


def matrix_free_norm(tr: Transition, max_iter: int = 64, tol: float = 1e-4,
                     generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """Top singular value ``[B]`` from Lanczos (Arnoldi on the symmetric ``JᵀJ``); differentiable through
    ``σ = uᵀJv`` with the converged singular vectors. Returns ``(norm, iterations)``."""
    f = tr.batched()
    with torch.no_grad():
        src = tr.source.detach()
        _, pullback = vjp(f, src)
        forward = _forward_products(pullback, tr.out_dim(), src)

        def gram(v: Tensor) -> Tensor:
            return pullback(forward(v))[0]

        v0 = torch.randn(tr.batch_size, src.shape[-1], generator=generator).to(src)
        res = arnoldi(gram, v0, max_iter, tol, generator=generator)
        _vals, vecs = torch.linalg.eigh(0.5 * (res.H + res.H.transpose(-1, -2)))
        v = torch.einsum("bnk,bk->bn", res.Q, vecs[..., -1])
        u = forward(v)
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    _, pullback = vjp(f, tr.source)
    sigma = (pullback(u)[0] * v).sum(-1)
    return sigma.abs(), res.iterations


def choose_engine(tr: Transition, engine: Engine = "auto", exact_max_dim: int = EXACT_MAX_DIM,
                  measure: str = "radius") -> str:
    """``exact`` or ``matrix_free``: ``auto`` picks exact while the (square) Jacobian is at most ``exact_max_dim``.

    A norm is matrix-free as soon as either side is larger: materialising a decoder Jacobian over a 10k vocabulary
    costs one backward pass per row, where power iteration needs a few."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    dims = (tr.source.shape[-1], tr.out_dim())
    size = max(dims) if measure == "norm" else min(dims)
    return "exact" if size <= exact_max_dim else "matrix_free"


def transition_measure(tr: Transition, measure: Measure = "radius", engine: Engine = "auto", *,
                       generator: torch.Generator | None = None, exact_max_dim: int = EXACT_MAX_DIM,
                       max_iter: int = 64, tol: float = 1e-4, rectangular: str = "subsample") -> Tensor:
    """Per-sample radius / norm ``[B]`` of one transition, by the chosen engine (differentiable).

    ``rectangular="norm"`` measures a non-square Jacobian by its top singular value instead of the radius of a
    random square submatrix."""
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose one of {', '.join(MEASURES)}")
    if rectangular not in ("subsample", "norm"):
        raise ValueError(f"rectangular must be 'subsample' or 'norm', got {rectangular!r}")
    if measure == "radius" and rectangular == "norm" and tr.source.shape[-1] != tr.out_dim():
        measure = "norm"
    eng = choose_engine(tr, engine, exact_max_dim, measure)
    if eng == "exact" or measure == "probe":
        return measure_jacobian(tr.jacobian(), measure, generator)
    if measure == "radius":
        return matrix_free_radius(tr, max_iter, tol, generator)[0]
    return matrix_free_norm(tr, max_iter, tol, generator)[0]


# --- building the transitions of a model -----------------------------------------------------------------------
class CellStack:
    """A single cell seen as a one-layer stack (identity encoder, no decoder), so LSC works on a bare cell."""

    def __init__(self, cell: nn.Module):
        self.cells = [cell]
        self.encoder = None
        self.decode = None

    def encode(self, x: Tensor) -> Tensor:
        return x

    def layer_input(self, l: int, inp: Tensor) -> Tensor:
        return inp

    def layer_output(self, l: int, out: Tensor, inp: Tensor) -> Tensor:
        return out

    def initial_states(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> list[Any]:
        return [self.cells[0].initial_state(batch_size, device=device, dtype=dtype)]


STACK_METHODS = ("encode", "layer_input", "layer_output", "decode", "initial_states")


def is_cell(obj: Any) -> bool:
    return all(callable(getattr(obj, m, None)) for m in ("initial_state", "stability_state", "with_stability_state"))


def is_ffn(model: Any) -> bool:
    return hasattr(model, "layers") and callable(getattr(model, "layer_forward", None)) and hasattr(model, "out")


def as_stack(model: Any) -> Any:
    """The stack view of ``model``: a ``DeepRNN``-like object as is, or a bare cell wrapped in :class:`CellStack`."""
    if hasattr(model, "cells") and all(callable(getattr(model, m, None)) for m in STACK_METHODS[:3]):
        return model
    if is_cell(model):
        return CellStack(model)
    raise TypeError(f"{type(model).__name__} is neither a stack of cells (DeepRNN-like: cells, encode, layer_input, "
                    "layer_output, decode, initial_states), a cell (initial_state, stability_state, "
                    "with_stability_state), nor an FFN (layers, layer_forward, out)")


def _rebuild(state_type: type, pieces: Sequence[Tensor]) -> Any:
    """One sample's state pieces -> a batch-of-one state."""
    return state_type(*[p[None] for p in pieces])


def _time_fn(cell: nn.Module, state_type: type) -> Callable[..., Tensor]:
    def fn(s: Tensor, inp: Tensor, *pieces: Tensor) -> Tensor:
        state = cell.with_stability_state(_rebuild(state_type, pieces), s[None])
        return cell.stability_state(cell(inp[None], state)[1])[0]
    return fn


def _from_input_fn(stack: Any, l: int, cell: nn.Module, state_type: type,
                   pre: Callable[[Tensor], Tensor] | None = None) -> Callable[..., Tensor]:
    """``u -> s[t,l]`` where ``u`` is what layer ``l`` receives from below (or, with ``pre``, the raw input)."""
    def fn(u: Tensor, *pieces: Tensor) -> Tensor:
        h = u[None] if pre is None else pre(u[None])
        out = cell(stack.layer_input(l, h), _rebuild(state_type, pieces))
        return cell.stability_state(out[1])[0]
    return fn


def _depth_fn(stack: Any, l: int, below: nn.Module, below_type: type, n_below: int, cell: nn.Module,
              state_type: type) -> Callable[..., Tensor]:
    """``s[t,l-1] -> s[t,l]`` through the lower cell's ``output(state)``."""
    def fn(s: Tensor, inp_below: Tensor, *pieces: Tensor) -> Tensor:
        nb = below.with_stability_state(_rebuild(below_type, pieces[:n_below]), s[None])
        h = stack.layer_output(l - 1, below.output(nb), inp_below[None])
        out = cell(stack.layer_input(l, h), _rebuild(state_type, pieces[n_below:]))
        return cell.stability_state(out[1])[0]
    return fn


def _decoder_fn(stack: Any, last: nn.Module, last_type: type, L: int) -> Callable[..., Tensor]:
    def fn(s: Tensor, inp: Tensor, *pieces: Tensor) -> Tensor:
        ns = last.with_stability_state(_rebuild(last_type, pieces), s[None])
        return stack.decode(stack.layer_output(L - 1, last.output(ns), inp[None]))[0]
    return fn


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
    """One step of a stack on ``x_t [B, F]`` (or ``[B]`` token ids) from ``states``, with the transitions of
    ``families`` at every layer. Take Jacobians in eval mode (dropout off): see :func:`eval_mode`."""
    bad = set(families) - set(FAMILIES)
    if bad:
        raise ValueError(f"unknown transition families {sorted(bad)}; choose from {', '.join(FAMILIES)}")
    stack = as_stack(model)
    cells = list(stack.cells)
    L = len(cells)
    if len(states) != L:
        raise ValueError(f"got {len(states)} layer states for a stack of {L} layers")
    enc = stack.encode(x_t)
    h = enc
    inputs, new_states, outputs = [], [], []
    for l, cell in enumerate(cells):
        inp = stack.layer_input(l, h)
        out, st = cell(inp, states[l])
        h = stack.layer_output(l, out, inp)
        inputs.append(inp)
        new_states.append(st)
        outputs.append(h)
    decode = getattr(stack, "decode", None)
    logits = decode(h) if decode is not None else None

    sdim = [int(c.stability_state(st).shape[-1]) for c, st in zip(cells, new_states, strict=True)]
    trs: list[Transition] = []
    for l, cell in enumerate(cells):
        stype = type(states[l])
        if "encoder" in families and l == 0:
            if isinstance(getattr(stack, "encoder", None), nn.Embedding) or not x_t.is_floating_point():
                trs.append(Transition("encoder", 0, _from_input_fn(stack, 0, cell, stype), enc, tuple(states[0]),
                                      sdim[0]))
            else:
                trs.append(Transition("encoder", 0, _from_input_fn(stack, 0, cell, stype, pre=stack.encode), x_t,
                                      tuple(states[0]), sdim[0]))
        if "depth" in families and l > 0:
            below = cells[l - 1]
            if callable(getattr(below, "output", None)):
                fn = _depth_fn(stack, l, below, type(new_states[l - 1]), len(new_states[l - 1]), cell, stype)
                trs.append(Transition("depth", l, fn, below.stability_state(new_states[l - 1]),
                                      (inputs[l - 1], *new_states[l - 1], *states[l]), sdim[l]))
            else:
                trs.append(Transition("depth", l, _from_input_fn(stack, l, cell, stype), outputs[l - 1],
                                      tuple(states[l]), sdim[l]))
        if "time" in families:
            trs.append(Transition("time", l, _time_fn(cell, stype), cell.stability_state(states[l]),
                                  (inputs[l], *states[l]), sdim[l]))
    if "decoder" in families and decode is not None:
        last = cells[-1]
        if callable(getattr(last, "output", None)):
            trs.append(Transition("decoder", L - 1, _decoder_fn(stack, last, type(new_states[-1]), L),
                                  last.stability_state(new_states[-1]), (inputs[-1], *new_states[-1]),
                                  logits.shape[-1]))
        else:
            trs.append(Transition("decoder", L - 1, lambda u: decode(u[None])[0], outputs[-1],
                                  out_size=logits.shape[-1]))
    return StepResult(trs, new_states, logits, outputs)


def ffn_transitions(model: Any, x: Tensor, families: Sequence[str] = FAMILIES,
                    layers: Sequence[int] | None = None) -> list[Transition]:
    """Transitions of a deep FFN on ``x [B, F]`` (or ``[B, T, F]``, flattened): ``encoder`` = first layer
    (input -> h_0, layer 0), ``depth`` = h_{l-1} -> h_l (layers 1..depth-1), ``decoder`` = h_last -> logits.
    ``layers`` restricts the depth family to those layer indices (the rest of the net is still run)."""
    bad = set(families) - set(FAMILIES)
    if bad:
        raise ValueError(f"unknown transition families {sorted(bad)}; choose from {', '.join(FAMILIES)}")
    h0 = model.flatten(x) if callable(getattr(model, "flatten", None)) else x
    hs = [h0]
    for l in range(len(model.layers)):
        hs.append(model.layer_forward(l, hs[-1]))
    trs = []
    if "encoder" in families:
        trs.append(Transition("encoder", 0, _ffn_layer_fn(model, 0), h0, out_size=hs[1].shape[-1]))
    if "depth" in families:
        chosen = range(1, len(model.layers)) if layers is None else layers
        for l in chosen:
            trs.append(Transition("depth", l, _ffn_layer_fn(model, l), hs[l], out_size=hs[l + 1].shape[-1]))
    if "decoder" in families:
        out = model.out
        trs.append(Transition("decoder", len(model.layers) - 1, lambda h: out(h[None])[0], hs[-1],
                              out_size=out.out_features if hasattr(out, "out_features") else None))
    return trs


def _ffn_layer_fn(model: Any, l: int) -> Callable[[Tensor], Tensor]:
    return lambda h: model.layer_forward(l, h[None])[0]


def layer_counts(model: Any) -> dict[str, int]:
    """How many transitions of each family the model has (the length of each report list)."""
    if is_ffn(model):
        return {"time": 0, "depth": len(model.layers) - 1, "encoder": 1, "decoder": 1}
    stack = as_stack(model)
    L = len(stack.cells)
    return {"time": L, "depth": L - 1, "encoder": 1, "decoder": 1 if getattr(stack, "decode", None) else 0}


def report_index(model: Any, family: str, layer: int) -> int:
    """Position of a transition in its family's per-layer list (depth of a stack starts at layer 1)."""
    if family == "depth":
        return layer - 1
    if family in ("encoder", "decoder"):
        return 0
    return layer


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Dropout off while Jacobians are taken (random ops cannot run under ``vmap``); restores the mode."""
    was = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    try:
        yield
    finally:
        if isinstance(model, nn.Module):
            model.train(was)


__all__ = [
    "ENGINES",
    "EXACT_MAX_DIM",
    "MEASURES",
    "ArnoldiResult",
    "CellStack",
    "StepResult",
    "Transition",
    "arnoldi",
    "as_stack",
    "batch_jacobian",
    "choose_engine",
    "eval_mode",
    "ffn_transitions",
    "is_cell",
    "is_ffn",
    "layer_counts",
    "matrix_free_norm",
    "matrix_free_radius",
    "measure_jacobian",
    "probe_norm",
    "report_index",
    "rnn_transitions",
    "spectral_norm",
    "spectral_radius",
    "square",
    "square_indices",
]
