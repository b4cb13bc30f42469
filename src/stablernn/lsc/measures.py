"""Per-sample one-step Jacobians of every transition family, and their radii (paper A; docs/lsc.md).

Why one module of ~1100 lines: the three engines (exact, matrix-free, warm-started) share the transition type,
the square subsampling and the product helpers, and :func:`transition_measure` / :func:`transition_measures`
dispatch between them; a split would make the engines import each other.

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
- **warm**: the same differentiable product at the top eigen/singular pair, but the pair comes from a few
  Rayleigh-Ritz cycles on a small block Krylov space seeded with the basis kept from the previous call on the same
  (family, layer, sample slot) (:class:`WarmState`); a pair that does not converge is restarted cold, then measured
  by the exact engine. See :func:`warm_radius`. Its products come from the cells' closed-form Jacobians where they
  have them (``Transition.closed_form``, ``WARM_CLOSED_FORM_MAX``), else from autograd. :func:`warm_radii` measures
  all transitions of one size in one Krylov call (LSC's step, through :func:`transition_measures`).

Transitions of a stack (``DeepRNN`` or anything with ``cells``, ``encode``, ``layer_input``, ``layer_output``,
``decode``), of a single cell, and of an ``FFN`` are built by :func:`rnn_transitions` and :func:`ffn_transitions`.
Families: ``time`` ``s[t-1,l] -> s[t,l]``; ``depth`` ``s[t,l-1] -> s[t,l]`` (through the lower cell's ``output(state)``
when it has one, else from layer l's input); ``encoder`` ``x[t] -> s[t,1]`` (from the embedding vector for token
inputs); ``decoder`` ``s[t,L] -> logits[t]``. For an FFN: encoder = first layer, depth = layer l-1 -> l, decoder =
readout.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from torch.func import jacfwd, jacrev, jvp, vjp, vmap

from ..cells.base import StructuredJacobian
from .config import ENGINES, MEASURES, Engine, Measure, Rectangular

# Transition.jacobian() in forward mode where the transition allows it (``forward_mode``) and d_out > d_in; False:
# always reverse mode (benchmarks/lsc_cost.py's "warm autograd", the engine before closed forms)
FORWARD_MODE = True
# Transition.jacobian() from the closed form (no autograd) when no gradient is needed; False: always autograd (the
# reference in tests and benchmarks)
CLOSED_FORM_NOGRAD = True
EXACT_MAX_DIM = 256  # "auto" uses the exact engine up to this (square) size; see benchmarks/jacobian_engines.py
# "warm" uses the exact engine below this size: measured per LSC step (2-layer nets, batch 8, one thread), exact
# was faster for GRU 16-64 (40 vs 87 ms at 16, 159 vs 237 ms at 64) and LIF 32-64, warm from 128 on (LSTM 64, whose
# Jacobians are 128 x 128: 297 vs 412 ms; 2x128 nets: 2-4x)
WARM_MIN_DIM = 128
# Transition.batched() and the warm engine's gradient pullback use Transition.batch_fn where a transition has one;
# False: always vmap(fn) and torch.func.vjp (benchmarks/lsc_cost.py's "warm before" variant)
BATCH_FN = True


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
    # closed-form Jacobians ``closed_form(source, *context) -> StructuredJacobian`` (products and ``dense()``, no
    # gradient), or None where the cell's configuration is not covered (cells.base.HasStateJacobian); only the warm
    # engine's no-grad part uses it
    closed_form: Callable[..., StructuredJacobian | None] | None = None
    # ``jacobian()`` may use forward mode (``jacfwd``: d_in products instead of d_out) when d_out > d_in: set for
    # functions known to support it (the built-in cells with closed forms; a user's autograd.Function may lack jvp)
    forward_mode: bool = False
    # the same map on a whole batch, ``batch_fn(source [B, d_in], *context) -> [B, d_out]`` (equal to ``vmap(fn)``,
    # samples independent), or None; the warm engine's products and gradient pullbacks then skip vmap (measured 7x
    # cheaper for an ALIF step's pullback at width 256: vmap of a custom autograd.Function is slow; BATCH_FN)
    batch_fn: Callable[..., Tensor] | None = None

    @property
    def batch_size(self) -> int:
        return int(self.source.shape[0])

    def batched(self) -> Callable[[Tensor], Tensor]:
        """``source [B, d_in] -> target [B, d_out]`` (samples independent, context fixed): ``batch_fn`` when set
        (and ``BATCH_FN``), else ``vmap(fn)``."""
        ctx = self.context
        if self.batch_fn is not None and BATCH_FN:
            bf = self.batch_fn
            return lambda s: bf(s, *ctx)
        f = vmap(self.fn)
        return lambda s: f(s, *ctx)

    def jacobian(self) -> Tensor:
        """Per-sample Jacobians ``[B, d_out, d_in]`` (differentiable w.r.t. the weights): reverse mode, or forward
        mode when ``forward_mode`` and ``d_out > d_in`` (an encoder from 8 inputs to a 512-wide state: 8 products
        instead of 512; the same exact Jacobian and gradient, tests/test_analytic_jacobians.py).

        Without gradient (under ``torch.no_grad``, as the before/after report and ``radii_over_time`` run) and with a
        closed form (``closed_form``), the closed form's ``dense()``: a few elementwise ops instead of ``d`` autograd
        passes (measured on the demo's 2x128 nets, one thread: 0.4-2 ms vs 9-17 ms per 256 x 256 batch of 8; equal
        to 1e-7 relative, tests/test_lsc_report.py)."""
        if not torch.is_grad_enabled() and self.closed_form is not None and CLOSED_FORM_NOGRAD:
            with torch.no_grad():
                op = self.closed_form(self.source.detach(), *[c.detach() for c in self.context])
            if op is not None:
                return op.dense().to(self.source.dtype)
        if self.forward_mode and FORWARD_MODE and self.out_dim() > self.source.shape[-1]:
            return vmap(jacfwd(self.fn))(self.source, *self.context)
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
    """``max_i |λ_i(J_b)|`` per sample, ``[B]``, after :func:`square`; differentiable (through ``eigvals``).

    Without gradient, indices whose column (then row) is zero in every sample are dropped first (:func:`deflate`):
    exact, and an LSTM's depth Jacobian (its ``c`` columns are zero) shrinks from 2n to n."""
    J = square(J, generator)
    if not (torch.is_grad_enabled() and J.requires_grad):
        J = deflate(J)
    return torch.linalg.eigvals(J).abs().amax(-1)


def deflate(J: Tensor) -> Tensor:
    """``J [B, n, n]`` without the indices whose column, then (of what is left) whose row, is zero in every sample.

    Exact for the nonzero eigenvalues: with a zero column ``j``, ``J e_j = 0`` and ``J`` is block triangular after
    moving ``j`` last, so its eigenvalues are those of ``J`` without row and column ``j``, plus a 0 (a zero row: the
    same with ``Jᵀ``). Not for gradients: a column that is zero by value may still depend on the weights. Returns
    ``J`` itself when nothing is zero (and keeps at least one index)."""
    for dim in (-2, -1):  # amax over rows (-2): a zero column; then over columns: a zero row
        keep = J.abs().amax(dim=(0, dim)) > 0
        if bool(keep.all()) or not bool(keep.any()):
            continue
        idx = keep.nonzero()[:, 0]
        J = J.index_select(-1, idx).index_select(-2, idx)
    return J


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


# --- warm-started engine -----------------------------------------------------------------------------------------
@dataclass
class WarmStats:
    """Counters of the warm engine (summed over calls): ``products`` counts Jacobian-vector products per sample
    (a block of k vectors counts k), ``retried`` the samples given one more warm cycle because their pair was lost,
    ``cold`` those restarted from random after it, ``exact`` those measured by the exact engine because no cycle
    converged."""

    calls: int = 0
    cycles: int = 0
    products: int = 0
    cold: int = 0
    exact: int = 0
    retried: int = 0


@dataclass
class WarmState:
    """Bases carried across calls, keyed by ``(family, layer, measure)``; each ``[B, k, n]`` holds one small
    orthonormal basis per sample slot (right and, for the radius, left: ``(right, left)``). Pass the same object to
    every call of one LSC run; a key whose shape changed (another batch size or width) starts cold."""

    bases: dict[tuple[str, int, str], tuple[Tensor, Tensor | None]] = field(default_factory=dict)
    stats: WarmStats = field(default_factory=WarmStats)

    def get(self, key: tuple[str, int, str], shape: tuple[int, int]) -> tuple[Tensor | None, Tensor | None]:
        got = self.bases.get(key)
        if got is None or (got[0].shape[0], got[0].shape[-1]) != shape:
            return None, None
        return got

    def clear(self) -> None:
        self.bases.clear()


# Inside the warm engine vectors are rows: a basis is ``[B, k, n]``. Measured on this CPU: ``[B, k, n] @ [B, n, n]``
# takes 0.3-1 ms for k = 1-8 at n = 256, B = 16, where ``[B, n, n] @ [B, n, k]`` takes 3-4 ms (another BLAS path).
def _block(op: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``op [B, n] -> [B, n]`` applied to the rows of a block ``[B, k, n]`` in one vmapped call (the pullback's
    Python overhead is paid once per block, not once per vector)."""
    return vmap(op, in_dims=1, out_dims=1)


def _project_out(X: Tensor, Q: Tensor, passes: int = 2) -> Tensor:
    """Rows of ``X [B, k, n]`` minus their projection on the orthonormal rows of ``Q [B, m, n]``, ``passes`` times
    (one pass of classical Gram-Schmidt loses orthogonality; the fast path re-projects after normalising instead)."""
    for _ in range(passes):
        X = X - (X @ Q.mT) @ Q
    return X


def _orth_rows(X: Tensor) -> Tensor:
    """Orthonormal rows spanning the rows of ``X [B, k, n]`` (``k <= n``)."""
    return torch.linalg.qr(X.mT).Q.mT


# The warm Krylov step (issue 13, second pass). True: one projection before and one after the QR of each new block
# (classical Gram-Schmidt with re-orthogonalisation after normalising: half the projections of the two double
# projections before), the kept basis from a weighted Gram-matrix eigh instead of an SVD, no zeroing of the basis
# buffers; False: the step as it was (benchmarks/lsc_cost.py's "warm before" variant). Tried and not kept: stopping
# the expansion once the top Ritz pair's residual is below 0.02 (checked every 4 blocks): warm, the residuals after
# 4 blocks were 0.02-0.24 (median over samples, 2x256 ALIF), so it never stopped early and the checks cost eig calls
WARM_FAST_KRYLOV = True


def _ritz(Q: Tensor, Z: Tensor, symmetric: bool, keep: int, H: Tensor | None = None
          ) -> tuple[Tensor, Tensor, Tensor]:
    """Rayleigh-Ritz on the orthonormal rows ``Q [B, m, n]`` with their images ``Z = (J Q)`` rows: the ``keep``
    leading Ritz values ``[B, keep]`` (largest modulus first), vectors as rows ``[B, keep, n]`` and relative residuals
    ``|J x - θ x| / (|θ| |x|)`` ``[B, keep]``. ``H = Q J Qᵀ`` (``H[i, j] = q_i · J q_j``) is the exact projection,
    since every ``J q`` is known; computed here unless given. The residuals always use ``Z`` itself."""
    if H is None:
        H = (Z @ Q.mT).mT
    keep = min(keep, Q.shape[1])
    if symmetric:
        theta, Y = torch.linalg.eigh(0.5 * (H + H.mT))
        theta, Y = theta.flip(-1)[..., :keep], Y.flip(-1)[..., :keep]
    else:
        theta, Y = torch.linalg.eig(H)
        order = theta.abs().argsort(-1, descending=True)[..., :keep]
        theta = theta.gather(-1, order)
        Y = Y.gather(-1, order[:, None, :].expand(-1, Y.shape[1], -1))
    if Y.is_complex():  # real products with the real bases: no complex copies of Q and Z ([B, m, n] each)
        Yr, Yi = Y.real.mT, Y.imag.mT
        X = torch.complex(Yr @ Q, Yi @ Q)  # Ritz vectors as rows
        YZ = torch.complex(Yr @ Z, Yi @ Z)
    else:
        X, YZ = Y.mT @ Q, Y.mT @ Z
    R = YZ - X * theta[..., None]
    res = _row_norm(R) / (theta.abs() * _row_norm(X)).clamp_min(1e-30)
    return theta, X, res


def _row_norm(X: Tensor) -> Tensor:
    """``|x|`` over the last axis; a complex one through its real view (measured 0.14 ms where ``norm`` of the
    complex tensor took 3.7 ms, [48, 6, 512] on this CPU)."""
    if X.is_complex():
        return torch.view_as_real(X).square().sum((-1, -2)).sqrt()
    return X.norm(dim=-1)


def _krylov_ritz(op: Callable[[Tensor], Tensor], V: Tensor, blocks: int, symmetric: bool, keep: int,
                 generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, int]:
    """One Rayleigh-Ritz cycle on the block Krylov space ``span[V, JV, ..., J^(blocks-1) V]`` (at most ``n``
    vectors; ``V [B, k, n]`` rows, ``op`` maps rows to rows). Returns the ``keep`` leading Ritz values ``[B, keep]``
    (largest modulus first), their Ritz vectors as rows ``[B, keep, n]``, their relative residuals
    ``|J x - θ x| / (|θ| |x|)`` ``[B, keep]``, and the number of products per sample."""
    B, k, n = V.shape
    m_max = min(n, k * blocks)
    fast = WARM_FAST_KRYLOV
    passes = 1 if fast else 2
    # uninitialised: only rows [:m] are ever read, and they are written first (zeroing cost ~1 ms a call)
    Q = V.new_empty(B, m_max, n) if fast else V.new_zeros(B, m_max, n)
    Z = V.new_empty(B, m_max, n) if fast else V.new_zeros(B, m_max, n)
    q0 = _orth_rows(V[:, :m_max])
    Q[:, : q0.shape[1]] = q0
    m, start = q0.shape[1], 0
    # fast path: the projection H = Q J Qᵀ assembled from the Gram-Schmidt coefficients and the QR factors (each
    # new image is (C1 + R1ᵀ C2) Q + R1ᵀ R2ᵀ W in the new rows W), instead of one [B, m, n] x [B, n, m] product at the
    # end; columns the recurrence does not give (the last block) are computed directly
    H = V.new_zeros(B, m_max, m_max) if fast else None
    filled = 0
    while start < m:
        Z[:, start:m] = op(Q[:, start:m])
        room = m_max - m
        if room <= 0:
            break
        new = Z[:, start:m][:, :room]
        old = Q[:, :m]
        if H is not None:
            C1 = new @ old.mT
            W = new - C1 @ old
        else:
            W = _project_out(new, old, passes)
        # a vanishing row means an invariant subspace was found: continue from a random direction, so the basis
        # stays a valid orthonormal basis (its Ritz values stay eigenvalue estimates). "Vanishing" is relative to
        # sqrt(eps): what is left below it is rounding noise, which QR would blow up into a non-orthogonal row
        dead = W.norm(dim=-1, keepdim=True) <= torch.finfo(W.dtype).eps ** 0.5 * new.norm(dim=-1, keepdim=True)
        if bool(dead.any()):
            W = torch.where(dead, _project_out(torch.randn(W.shape, generator=generator).to(W), old), W)
            H = None  # the recurrence no longer holds: H directly at the end
        # QR normalises rows that were small after the projection, and with them their rounding error: project
        # once more after it (measured necessary in float32 once a low-rank operator's range is exhausted)
        if H is not None:
            W1, R1 = _qr_rows(W)
            C2 = W1 @ old.mT
            W, R2 = _qr_rows(W1 - C2 @ old)
            r, r2 = new.shape[1], W.shape[1]
            H[:, :m, start:start + r] = (C1 + R1.mT @ C2).mT
            H[:, m:m + r2, start:start + r] = (R1.mT @ R2.mT).mT
            filled = start + r
        else:
            W = _orth_rows(_project_out(_orth_rows(W), old, passes))
        start, m = m, m + W.shape[1]
        Q[:, start:m] = W
    if H is not None and filled < m_max:
        H[:, :, filled:] = Q @ Z[:, filled:].mT
    return (*_ritz(Q, Z, symmetric, keep, H), m_max)


def _qr_rows(X: Tensor) -> tuple[Tensor, Tensor]:
    """``X [B, k, n] = Rᵀ W``: orthonormal rows ``W [B, k, n]`` and the triangular ``R [B, k, k]``."""
    q, r = torch.linalg.qr(X.mT)
    return q.mT, r


def _real_span(X: Tensor, k: int) -> Tensor:
    """A real orthonormal ``[B, k, n]`` basis (rows) of the span of the leading Ritz vectors ``X [B, m, n]`` (real
    and imaginary parts of each: a complex pair's two vectors span the same real plane, so keep the best rank-k
    span). Fast path: the top eigenvectors of the small Gram matrix ``P Pᵀ`` (``[B, 2m, 2m]``) instead of an SVD of
    ``P [B, 2m, n]`` (measured 0.8 vs 7 ms at B = 16, 2m = 24, n = 512), then one QR for orthonormality."""
    parts = torch.cat([X.real, X.imag], 1) if X.is_complex() else X
    if not WARM_FAST_KRYLOV:
        return torch.linalg.svd(parts, full_matrices=False)[2][:, :k]
    # weights halving down the Ritz order: the leading pair's plane is always kept (with equal weights, orthogonal
    # Ritz vectors tie and the rank-k span may drop the top one)
    wt = 0.5 ** torch.arange(X.shape[1], dtype=parts.dtype, device=parts.device)
    parts = parts * (wt.repeat(2) if X.is_complex() else wt)[:, None]
    _, U = torch.linalg.eigh(parts @ parts.mT)
    return _orth_rows(U[..., -k:].flip(-1).mT @ parts)


def _ritz_cycles(op: Callable[[Tensor], Tensor], start: Tensor | None, n: int, B: int, like: Tensor, *,
                 block: int, blocks: int, cycles: int, symmetric: bool, generator: torch.Generator | None,
                 stats: WarmStats) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``cycles`` restarted block-Krylov Rayleigh-Ritz cycles of ``op`` per sample, from ``start [B, k, n]``
    (random when None). Each cycle adds one random vector to the kept basis, so an eigenvalue that overtook the
    tracked ones is found even when the kept basis is an invariant subspace. Returns the leading Ritz values
    ``[B, m]``, vectors ``[B, m, n]``, relative residuals ``[B, m]`` and the new kept basis ``[B, k, n]``."""
    k = max(1, min(block, n))
    V = start if start is not None else torch.randn(B, k, n, generator=generator).to(like)
    for _ in range(max(1, cycles)):
        seed = torch.cat([V, torch.randn(B, 1, n, generator=generator).to(like)], 1) if k < n else V
        vals, vecs, res, used = _krylov_ritz(op, seed, blocks, symmetric, max(2 * k, 4), generator)
        stats.cycles += 1
        stats.products += used
        V = _real_span(vecs, k)
    return vals, vecs, res, V


def _pick(vals: Tensor, vecs: Tensor, res: Tensor, near: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The Ritz pair of largest modulus (or nearest ``near [B]``): ``(θ [B], x [B, n], residual [B])``."""
    i = torch.zeros(vals.shape[0], dtype=torch.long, device=vals.device) if near is None else \
        (vals - near[:, None]).abs().argmin(-1)
    x = vecs.gather(1, i[:, None, None].expand(-1, 1, vecs.shape[-1]))[:, 0]
    return vals.gather(-1, i[:, None])[:, 0], x, res.gather(-1, i[:, None])[:, 0]


# The left Ritz vector paired with θ: among the left Ritz values within this relative distance of the nearest one,
# the vector most parallel to v (|wᵀv| / |w||v|): left and right eigenvectors of distinct eigenvalues are orthogonal,
# so in a cluster of near-equal eigenvalues (an LSTM's forget gates, an ALIF's adaptation leaks) the nearest value
# alone can pair v with another eigenvalue's w, whose small wᵀv blows the gradient up. 0: the nearest value only
# (benchmarks/lsc_cost.py's "warm before")
WARM_PAIR_TOL = 0.02


def _pick_left(vals: Tensor, vecs: Tensor, res: Tensor, theta: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The left Ritz pair for the right pair ``(θ [B], v [B, n])`` (``WARM_PAIR_TOL``): ``(w [B, n], residual [B])``."""
    if not WARM_FAST_KRYLOV or WARM_PAIR_TOL <= 0:
        _, w, r = _pick(vals, vecs, res, theta)
        return w, r
    dist = (vals - theta[:, None]).abs() / theta.abs()[:, None].clamp_min(1e-30)  # [B, keep]
    near = dist <= dist.amin(-1, keepdim=True) + WARM_PAIR_TOL
    wr, wi = vecs.real, vecs.imag
    vr, vi = v.real[:, None], v.imag[:, None]
    # |wᵀv| for complex rows without complex reductions: (wr + i wi)·(vr + i vi)
    dot = torch.complex((wr * vr).sum(-1) - (wi * vi).sum(-1), (wr * vi).sum(-1) + (wi * vr).sum(-1)) \
        if vecs.is_complex() else (vecs * v[:, None]).sum(-1)
    cos = dot.abs() / (_row_norm(vecs) * _row_norm(v)[:, None]).clamp_min(1e-30)
    i = torch.where(near, cos, torch.full_like(cos, -1.0)).argmax(-1)
    w = vecs.gather(1, i[:, None, None].expand(-1, 1, vecs.shape[-1]))[:, 0]
    return w, res.gather(-1, i[:, None])[:, 0]


def _closed_form(tr: Transition) -> StructuredJacobian | None:
    """The transition's closed-form Jacobians (without gradient) while its larger side is at most
    ``WARM_CLOSED_FORM_MAX``; None without one."""
    if tr.closed_form is None or max(tr.source.shape[-1], tr.out_dim()) > WARM_CLOSED_FORM_MAX:
        return None
    with torch.no_grad():
        return tr.closed_form(tr.source.detach(), *[c.detach() for c in tr.context])


def _jacobian_nograd(tr: Transition, dense_max: int | None = None,
                     op: StructuredJacobian | None = None) -> Tensor | None:
    """The Jacobians ``[B, d_out, d_in]`` without gradient: from the closed form ``op`` when given, else by one
    vmapped backward pass of ``d_out`` vectors while the larger side is at most ``dense_max`` (None: no bound); None
    when neither applies (the caller then iterates matrix-free)."""
    if op is not None:
        return op.dense().to(tr.source.dtype)
    if dense_max is not None and max(tr.source.shape[-1], tr.out_dim()) > dense_max:
        return None
    return batch_jacobian(tr.fn, tr.source.detach(), *[c.detach() for c in tr.context])


def _products(tr: Transition, dense_max: int) -> tuple[Tensor | None, Callable[[Tensor], Tensor] | None,
                                                       Callable[[Tensor], Tensor] | None, StructuredJacobian | None]:
    """How the warm engine multiplies by ``J`` / ``Jᵀ`` (rows ``[B, k, n]``), no gradient: ``(J, None, None, op)`` to
    use the materialised Jacobians (closed form up to ``WARM_CLOSED_FORM_DENSE_MAX``, else autograd up to
    ``dense_max``), or ``(None, mv, rmv, op)``: structured closed-form products above that, vmapped pullbacks without
    a closed form. ``op``: the closed form used, None when autograd was."""
    op = _closed_form(tr)
    n = max(tr.source.shape[-1], tr.out_dim())
    if op is not None and n > WARM_CLOSED_FORM_DENSE_MAX:
        return None, op.mv, op.rmv, op
    J = _jacobian_nograd(tr, dense_max, op)
    if J is not None:
        return J, None, None, op
    mv, rmv, _, _ = _warm_operators(tr)
    return None, mv, rmv, None


def _warm_operators(tr: Transition) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor], int, int]:
    """Matrix-free products on rows, ``V [B, k, n_in] -> (J V)`` and ``U [B, k, n_out] -> (Jᵀ U)`` (no gradient)."""
    f = tr.batched()
    src = tr.source.detach()
    n_out = tr.out_dim()
    _, pullback = vjp(f, src)
    forward = _forward_products(pullback, n_out, src)
    return _block(forward), _block(lambda u: pullback(u)[0]), src.shape[-1], n_out


def _differentiable_pullback(tr: Transition) -> Callable[[Tensor], Tensor]:
    """``u [B, n_out] -> Jᵀ u`` on the autograd graph of the weights (for the one differentiable product): a
    double-backward through ``batch_fn`` when the transition has one (``BATCH_FN``), else ``torch.func.vjp`` of the
    vmapped one-sample function. Both keep the graph of the source and the context (a depth transition's source is
    the lower layer's new state)."""
    if tr.batch_fn is None or not BATCH_FN:
        _, pullback = vjp(tr.batched(), tr.source)
        return lambda u: pullback(u)[0]
    src = tr.source if tr.source.requires_grad else tr.source.detach().requires_grad_(True)
    outer = torch.is_grad_enabled()  # under no_grad (a measurement only) no graph is kept
    with torch.enable_grad():
        y = tr.batch_fn(src, *tr.context)

    def pull(u: Tensor) -> Tensor:
        with torch.enable_grad():
            g = torch.autograd.grad(y, src, u, create_graph=outer, retain_graph=True, allow_unused=True)[0]
        return torch.zeros_like(src) if g is None else g
    return pull


# The warm engine materialises the Jacobians (without gradient: one vmapped backward pass of n vectors) up to this
# size and then iterates with batched matmuls; above it every product is a vmapped pullback. Measured at width
# 128-256: one dense block product costs ~0.3 ms where an autograd product costs ~0.5-1 ms, and the
# materialisation ~10-30 ms (benchmarks/lsc_cost.py, docs/lsc.md).
WARM_DENSE_MAX = 256
# Where a transition has a closed form (Transition.closed_form; cells.base.HasStateJacobian) the warm engine uses it
# instead of autograd up to this size (larger side): no limit, as it never measured slower (docs/lsc.md "Closed-form
# Jacobians"); 0 turns the closed forms off (benchmarks/lsc_cost.py's "warm autograd").
WARM_CLOSED_FORM_MAX = 1 << 30
# ... and materialises them (a few elementwise ops, one [B, n, n] write) up to this size, iterating with dense batched
# matmuls; above it every product is one matmul with the shared weights (cells.base.StructuredJacobian). Measured
# per LSC step (benchmarks/lsc_cost.py --part width, one run each): n = 128 dense 117 vs structured 137 ms (2x64
# LSTM), 105 vs 137 (2x128 GRU); n = 256 dense 298 vs 277 (2x128 LSTM), 346 vs 300 (2x256 GRU)
WARM_CLOSED_FORM_DENSE_MAX = 128


def _stacked(ops: list[StructuredJacobian]) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]] | None:
    """Products of several structured Jacobians of the same shapes (and batch) as one: ``V [T*B, K, n_in] ->
    [T*B, K, n_out]`` for ``J`` and for ``Jᵀ`` (transition t on rows ``[t*B, (t+1)*B)``), with their weights stacked
    ``[T, G*H, m]`` (one batched matmul) and everything else elementwise over ``T*B`` rows, the same algebra as
    :meth:`StructuredJacobian.mv` / ``rmv``; a missing diagonal part counts as zero. None when the shapes differ."""
    first = ops[0]
    shapes = {(o.weight.shape, o.cols.shape, o.rows.shape) for o in ops}
    diags = {o.diag.shape for o in ops if o.diag is not None}
    if len(shapes) != 1 or len(diags) > 1:
        return None
    T = len(ops)
    B, k_in, m = first.cols.shape
    _, k_out, G, H = first.rows.shape
    W = torch.stack([o.weight for o in ops])  # [T, G*H, m]
    cols = torch.cat([o.cols for o in ops])  # [T*B, k_in, m]
    rows = torch.cat([o.rows for o in ops])  # [T*B, k_out, G, H]
    diag = None if not diags else torch.cat([o.diag if o.diag is not None else
                                             first.rows.new_zeros(B, *next(iter(diags))[1:]) for o in ops])

    def mv(V: Tensor) -> Tensor:
        K = V.shape[1]
        s = V.reshape(T * B, K, k_in, m)
        q = (s * cols[:, None]).sum(2).reshape(T, B * K, m)
        p = (q @ W.mT).reshape(T * B, K, 1, G, H)
        out = (rows[:, None] * p).sum(3)
        if diag is not None:
            out = out + (diag[:, None] * s[:, :, None]).sum(3)
        return out.reshape(T * B, K, k_out * H)

    def rmv(U: Tensor) -> Tensor:
        K = U.shape[1]
        u = U.reshape(T * B, K, k_out, H)
        p = (rows[:, None] * u[:, :, :, None]).sum(2).reshape(T, B * K, G * H)
        s = (p @ W).reshape(T * B, K, 1, m) * cols[:, None]
        if diag is not None:
            s = s + (diag[:, None] * u[:, :, :, None]).sum(2)
        return s.reshape(T * B, K, k_in * m)
    return mv, rmv


def _group_operator(trs: list[Transition], dense_max: int
                    ) -> tuple[Callable[[Tensor], Tensor] | None, Callable[[Tensor], Tensor] | None,
                               Callable[[Tensor], Tensor] | None]:
    """``J`` and ``Jᵀ`` of every transition in ``trs`` as one batch of operators on rows, rights first: rows
    ``[0, ΣB)`` are the right chains (``(J v)ᵀ = vᵀ Jᵀ``), rows ``[ΣB, 2ΣB)`` the left ones (``(Jᵀ w)ᵀ = wᵀ J``),
    each in the order of ``trs``. Materialised Jacobians: one batched matmul; structured closed forms of the same
    shapes: stacked (:func:`_stacked`); else one product per transition. ``(joint, None, None)``, or for a single
    transition with vmapped pullbacks ``(None, mv, rmv)`` (its chains run apart); ``(None, None, None)`` for
    several transitions when one of them has pullbacks only (they then run one by one)."""
    prods = [_products(tr, dense_max) for tr in trs]
    if any(J is None and op is None for J, _, _, op in prods):
        return (None, prods[0][1], prods[0][2]) if len(trs) == 1 else (None, None, None)
    sizes = [tr.batch_size for tr in trs]
    TB = sum(sizes)
    if all(J is not None for J, *_ in prods):
        ops = torch.cat([J.mT for J, *_ in prods] + [J for J, *_ in prods]).contiguous()  # type: ignore[union-attr]
        return (lambda V: V @ ops), None, None
    both = _stacked([op for *_, op in prods]) if all(J is None for J, *_ in prods) and len(set(sizes)) == 1 \
        else None  # type: ignore[misc]
    if both is not None:
        mv, rmv = both
        return (lambda V: torch.cat([mv(V[:TB]), rmv(V[TB:])])), None, None
    fwd = [(lambda V, J=J: V @ J.mT) if J is not None else mv for J, mv, _, _ in prods]
    back = [(lambda V, J=J: V @ J) if J is not None else rmv for J, _, rmv, _ in prods]

    def joint(V: Tensor) -> Tensor:
        rs, ls = V[:TB].split(sizes), V[TB:].split(sizes)
        return torch.cat([f(x) for f, x in zip(fwd, rs, strict=True)] + [g(x) for g, x in zip(back, ls, strict=True)])
    return joint, None, None


def _check_square(tr: Transition) -> None:
    if tr.source.shape[-1] != tr.out_dim():
        raise ValueError(f"warm_radius needs a square Jacobian, got {tr.out_dim()} x {tr.source.shape[-1]}; use "
                         "rectangular='norm' or another engine")


def _radius_pairs_group(trs: list[Transition], starts: list[tuple[Tensor, Tensor]] | None, *, dense_max: int,
                        cycles: int, cold_cycles: int, tol: float, kw: dict[str, Any]) -> list[tuple[Tensor, ...]]:
    """Right and left top eigenpairs of every sample's Jacobian of every transition in ``trs`` (square, one size
    ``n``): per transition ``(θ, v, w, ok, right basis, left basis)``. ``starts``: the kept ``(right, left)`` bases
    of every transition (warm), or None (cold). All transitions' ``J`` and ``Jᵀ`` go through one Krylov call as
    one batch of operators (issue 13: all layers of a family, and families of the same size, at once: the Python
    overhead and the small Ritz problems are paid once), except transitions whose products are vmapped pullbacks,
    which run alone with their two chains apart."""
    for tr in trs:
        _check_square(tr)
    n = trs[0].source.shape[-1]
    like = trs[0].source.detach()
    cyc = cold_cycles if starts is None else cycles
    joint, mv, rmv = _group_operator(trs, dense_max)
    if joint is None and mv is not None:  # one transition, vmapped pullbacks: two chains
        tr = trs[0]
        right0, left0 = (None, None) if starts is None else starts[0]
        vals, vecs, res, right = _ritz_cycles(mv, right0, n, tr.batch_size, like, cycles=cyc, symmetric=False, **kw)
        theta, v, res_r = _pick(vals, vecs, res, None)
        vals, vecs, res, left = _ritz_cycles(rmv, left0, n, tr.batch_size, like, cycles=cyc,  # type: ignore[arg-type]
                                             symmetric=False, **kw)
        w, res_l = _pick_left(vals, vecs, res, theta, v)
        return [_pair_ok(theta, v, w, res_r, res_l, tol, right, left)]
    if joint is None:  # several, one of them with pullbacks only: one by one
        one = {"dense_max": dense_max, "cycles": cycles, "cold_cycles": cold_cycles, "tol": tol, "kw": kw}
        return [_radius_pairs_group([tr], None if starts is None else [st], **one)[0]  # type: ignore[arg-type]
                for tr, st in zip(trs, starts or [None] * len(trs), strict=True)]
    sizes = [tr.batch_size for tr in trs]
    TB = sum(sizes)
    both = None if starts is None else torch.cat([r for r, _ in starts] + [l for _, l in starts])
    vals, vecs, res, kept = _ritz_cycles(joint, both, n, 2 * TB, like, cycles=cyc, symmetric=False, **kw)
    out = []
    off = 0
    for B in sizes:
        r, l = slice(off, off + B), slice(TB + off, TB + off + B)
        theta, v, res_r = _pick(vals[r], vecs[r], res[r], None)
        w, res_l = _pick_left(vals[l], vecs[l], res[l], theta, v)
        out.append(_pair_ok(theta, v, w, res_r, res_l, tol, kept[r], kept[l]))
        off += B
    return out


def _pair_ok(theta: Tensor, v: Tensor, w: Tensor, res_r: Tensor, res_l: Tensor, tol: float, right: Tensor,
             left: Tensor) -> tuple[Tensor, ...]:
    # wᵀv ≈ 0 would mean a defective (or mismatched) pair: its first-order gradient does not exist
    ok = (res_r <= tol) & (res_l <= tol) & ((w * v).sum(-1).abs() > 1e-6 * _row_norm(w) * _row_norm(v))
    return theta, v, w, ok, right, left


def _radius_pairs(tr: Transition, right0: Tensor | None, left0: Tensor | None, **opts: Any) -> tuple[Tensor, ...]:
    """Right and left top eigenpairs of every sample's Jacobian: ``(θ, v, w, ok, right basis, left basis)``."""
    starts = None if right0 is None or left0 is None else [(right0, left0)]
    return _radius_pairs_group([tr], starts, **opts)[0]


# A sample whose warm pair was lost first gets one more warm cycle from the basis the failed cycle kept (its Krylov
# space held the new information: a shifted spectrum usually converges in it), and restarts cold (``cold_cycles``
# from random vectors) only if that fails too. Measured on LSC's trajectories (2x256 ALIF, 8 Krylov blocks): most
# lost pairs converged in the retry, where a cold restart costs three cycles. False: straight to the cold restart
WARM_RETRY = True


def _restart_lost(tr: Transition, got: tuple[Tensor, ...], solve: Callable[..., tuple[Tensor, ...]],
                  stats: WarmStats, ok_at: int, kept_at: tuple[int, ...] = ()) -> tuple[Tensor, ...]:
    """Re-solve the samples whose warm pair was lost (``got[ok_at]``, the ok mask, false) and merge them in:
    ``solve(subset, *starts)``, first warm from their kept bases (``got[i]`` for ``i`` in ``kept_at``, when given
    and ``WARM_RETRY``), then cold (``solve(subset)``) for those still lost."""
    ok = got[ok_at]
    if bool(ok.all()):
        return got
    lost = (~ok).nonzero()[:, 0]
    sub = tr.subset(lost)
    if kept_at and WARM_RETRY:
        stats.retried += int(lost.numel())
        part = _restart_lost(sub, solve(sub, *[got[i][lost] for i in kept_at]), solve, stats, ok_at)
    else:
        stats.cold += int(lost.numel())
        part = solve(sub)
    out = tuple(a.clone() for a in got)
    for whole, p in zip(out, part, strict=True):
        whole[lost] = p
    return out


def _warm_setup(tr: Transition, state: WarmState | None, kind: str, *, block: int, blocks: int,
                generator: torch.Generator | None, dense_max: int | None, cycles: int, cold_cycles: int, tol: float
                ) -> tuple[WarmState, tuple[str, int, str], dict[str, Any]]:
    """The state (a fresh one when None), the key of this transition's kept basis, and the cycle options."""
    state = state if state is not None else WarmState()
    kw = {"block": block, "blocks": blocks, "generator": generator, "stats": state.stats}
    opts = {"dense_max": WARM_DENSE_MAX if dense_max is None else dense_max, "cycles": cycles,
            "cold_cycles": cold_cycles, "tol": tol, "kw": kw}
    return state, (tr.family, tr.layer, kind), opts


def warm_radius(tr: Transition, state: WarmState | None = None, *, block: int = 3, blocks: int = 12,
                cycles: int = 1, cold_cycles: int = 3, tol: float = 0.5, dense_max: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """Spectral radius ``[B]`` of a square transition's Jacobian, warm-started from ``state`` (updated in place).

    The right and left top eigenpairs (``J v = θ v``, ``Jᵀ w = θ w``) come from ``cycles`` Rayleigh-Ritz cycles on
    block Krylov spaces of ``blocks`` blocks of ``block + 1`` vectors (the kept basis and one random vector);
    ``cold_cycles`` when nothing is kept. A sample whose pair has a relative residual above ``tol`` (the pair was
    lost) restarts cold, then falls back to the exact engine. The value is ``|θ|``; its gradient is that of
    ``|wᵀ J v / wᵀ v|`` (two vector-Jacobian products on the weights' graph), the exact first-order gradient of a
    simple eigenvalue's modulus: no backward through the iterations and no ``eigvals`` of ``n x n`` matrices (the
    Ritz problems are ``m x m``, ``m = blocks·(block+1)``). A complex top pair is handled by the real basis spanning
    its plane; in a near tie the largest Ritz value is taken (its gradient is that of one of the tied eigenvalues, a
    valid choice for a max of moduli). ``dense_max``: see ``WARM_DENSE_MAX`` (its value when None)."""
    return warm_radii([tr], state, block=block, blocks=blocks, cycles=cycles, cold_cycles=cold_cycles, tol=tol,
                      dense_max=dense_max, generator=generator)[0]


# warm_radii measures transitions of the same size (time and depth of every layer of a stack, when their Jacobians
# are n x n alike) in one Krylov call; False: one call per transition (benchmarks/lsc_cost.py's "warm before")
WARM_GROUPED = True


def warm_radii(trs: list[Transition], state: WarmState | None = None, *, block: int = 3, blocks: int = 12,
               cycles: int = 1, cold_cycles: int = 3, tol: float = 0.5, dense_max: int | None = None,
               generator: torch.Generator | None = None) -> list[Tensor]:
    """:func:`warm_radius` of several square transitions (each ``[B_i]``, in order), those of the same size and
    start (warm / cold) through one Krylov call (``WARM_GROUPED``): their ``J`` and ``Jᵀ`` stacked along the batch
    axis, as the right and left chains of one transition already are. Each keeps its own basis in ``state`` under
    its ``(family, layer, "radius")`` key; the gradient part (two vector-Jacobian products) stays per transition."""
    state = state if state is not None else WarmState()
    out: list[Tensor | None] = [None] * len(trs)
    groups: dict[tuple[Any, ...], list[int]] = {}
    d = WARM_DENSE_MAX if dense_max is None else dense_max
    for i, tr in enumerate(trs):
        _check_square(tr)
        key = (tr.family, tr.layer, "radius")
        warm = state.get(key, (tr.batch_size, tr.source.shape[-1]))[0] is not None
        kind = _joint_kind(tr, d)  # dense and structured products in separate calls (the structured ones stack)
        alone = not WARM_GROUPED or kind is None
        groups.setdefault((tr.source.shape[-1], tr.source.dtype, warm, i if alone else kind), []).append(i)
    for idx in groups.values():
        members = [trs[i] for i in idx]
        for i, r in zip(idx, _warm_radius_group(members, state, block=block, blocks=blocks, cycles=cycles,
                                                cold_cycles=cold_cycles, tol=tol, dense_max=dense_max,
                                                generator=generator), strict=True):
            out[i] = r
    return out  # type: ignore[return-value]


def _joint_kind(tr: Transition, dense_max: int) -> str | None:
    """How the warm engine multiplies ``tr``'s Jacobians, without building anything: ``dense`` / ``structured``
    (both can share a Krylov call with other transitions), or None (vmapped pullbacks: alone)."""
    n = max(tr.source.shape[-1], tr.out_dim())
    if tr.closed_form is not None and n <= WARM_CLOSED_FORM_MAX:
        return "structured" if n > WARM_CLOSED_FORM_DENSE_MAX else "dense"
    return "dense" if n <= dense_max else None


def _warm_radius_group(trs: list[Transition], state: WarmState, *, block: int, blocks: int, cycles: int,
                       cold_cycles: int, tol: float, dense_max: int | None, generator: torch.Generator | None
                       ) -> list[Tensor]:
    """:func:`warm_radii` of transitions that share one Krylov call (same size, all warm or all cold)."""
    state, _, opts = _warm_setup(trs[0], state, "radius", block=block, blocks=blocks, generator=generator,
                                 dense_max=dense_max, cycles=cycles, cold_cycles=cold_cycles, tol=tol)
    keys = [(tr.family, tr.layer, "radius") for tr in trs]
    with torch.no_grad():
        starts = [state.get(k, (tr.batch_size, tr.source.shape[-1])) for k, tr in zip(keys, trs, strict=True)]
        warm = all(r is not None and l is not None for r, l in starts)
        gots = _radius_pairs_group(trs, starts if warm else None, **opts)  # type: ignore[arg-type]
    radii = []
    for tr, key, got in zip(trs, keys, gots, strict=True):
        with torch.no_grad():
            if warm:  # a lost pair retries warm, then restarts cold
                got = _restart_lost(tr, got, lambda t, r=None, l=None: _radius_pairs(t, r, l, **opts),
                                    state.stats, 3, kept_at=(4, 5))
            theta, v, w, ok, right, left = got
            state.bases[key] = (right, left)
            state.stats.calls += 1
            denom = (w * v).sum(-1)
            complex_pair = bool((v.imag != 0).any() or (w.imag != 0).any())
        radii.append(_radius_value(tr, theta, v, w, ok, denom, complex_pair, state.stats))
    return radii


def _radius_value(tr: Transition, theta: Tensor, v: Tensor, w: Tensor, ok: Tensor, denom: Tensor,
                  complex_pair: bool, stats: WarmStats) -> Tensor:
    """``|θ|`` with the gradient of ``|wᵀ J v / wᵀ v|`` (the imaginary parts' pullback only for complex pairs);
    the exact engine for samples whose pair did not converge."""
    dtype = tr.source.dtype
    pull = _differentiable_pullback(tr)
    ga = pull(w.real.to(dtype))
    vr, vi = v.real.to(dtype), v.imag.to(dtype)
    if complex_pair:
        gb = pull(w.imag.to(dtype))
        lam = torch.complex((ga * vr).sum(-1) - (gb * vi).sum(-1), (ga * vi).sum(-1) + (gb * vr).sum(-1)) / denom
    else:  # real pairs: wᵀ J v / wᵀ v is real, one pullback
        lam = (ga * vr).sum(-1) / denom.real.to(dtype)
    q = lam.abs()
    r = theta.abs().to(dtype) + (q - q.detach())  # value: the Ritz value; gradient: the two-sided quotient's
    if not bool(ok.all()):
        bad = (~ok).nonzero()[:, 0]
        stats.exact += int(bad.numel())
        r = r.clone()
        r[bad] = spectral_radius(tr.subset(bad).jacobian())
    return r


def _norm_pair(tr: Transition, right0: Tensor | None, *, dense_max: int, cycles: int, cold_cycles: int, tol: float,
               kw: dict[str, Any]) -> tuple[Tensor, ...]:
    """Top right singular vector per sample: ``(u = Jv/|Jv|, v, ok, basis)``."""
    B, n = tr.batch_size, tr.source.shape[-1]
    J, mv, rmv, _ = _products(tr, dense_max)
    if J is not None:
        JT, G = J.mT.contiguous(), J.mT @ J  # rows: (J v)ᵀ = vᵀ Jᵀ; G is symmetric
        mv = lambda V: V @ JT  # noqa: E731
        gram = lambda V: V @ G  # noqa: E731
    else:
        gram = lambda V: rmv(mv(V))  # noqa: E731
    vals, vecs, res, right = _ritz_cycles(gram, right0, n, B, tr.source.detach(),
                                          cycles=cold_cycles if right0 is None else cycles, symmetric=True, **kw)
    _, v, res_v = _pick(vals, vecs, res, None)
    u = mv(v[:, None])[:, 0]
    return u / u.norm(dim=-1, keepdim=True).clamp_min(1e-30), v, res_v <= tol, right


def warm_norm(tr: Transition, state: WarmState | None = None, *, block: int = 3, blocks: int = 6,
              cycles: int = 1, cold_cycles: int = 2, tol: float = 0.2, dense_max: int | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """Top singular value ``[B]`` warm-started from ``state``: the top eigenpair of ``JᵀJ`` by the same cycles as
    :func:`warm_radius` (symmetric Rayleigh-Ritz; ``tol`` on the residual of ``JᵀJ``), then ``σ = uᵀ J v`` with
    ``u = J v / |J v|`` (one vector-Jacobian product on the weights' graph: the exact first-order gradient of a
    simple top singular value). Unconverged samples restart cold, then use ``svdvals``."""
    state, key, opts = _warm_setup(tr, state, "norm", block=block, blocks=blocks, generator=generator,
                                   dense_max=dense_max, cycles=cycles, cold_cycles=cold_cycles, tol=tol)
    with torch.no_grad():
        right0, _ = state.get(key, (tr.batch_size, tr.source.shape[-1]))
        got = _norm_pair(tr, right0, **opts)
        if right0 is not None:
            got = _restart_lost(tr, got, lambda t, r=None: _norm_pair(t, r, **opts), state.stats, 2, kept_at=(3,))
        u, v, ok, right = got
        state.bases[key] = (right, None)
        state.stats.calls += 1
    sigma = (_differentiable_pullback(tr)(u) * v).sum(-1).abs()
    if not bool(ok.all()):
        bad = (~ok).nonzero()[:, 0]
        state.stats.exact += int(bad.numel())
        sigma = sigma.clone()
        sigma[bad] = spectral_norm(tr.subset(bad).jacobian())
    return sigma


def choose_engine(tr: Transition, engine: Engine = "auto", exact_max_dim: int = EXACT_MAX_DIM,
                  measure: Measure = "radius", warm_min_dim: int = WARM_MIN_DIM) -> str:
    """``exact``, ``matrix_free`` or ``warm``: ``auto`` picks exact while the (square) Jacobian is at most
    ``exact_max_dim``, else matrix-free. ``warm`` is used where it is faster: exact while the smaller side of the
    Jacobian is below ``warm_min_dim``; a radius of a non-square Jacobian (``rectangular="subsample"``: a fresh random
    submatrix each call, nothing to warm-start) goes matrix-free.

    A norm is matrix-free as soon as either side is larger: materialising a decoder Jacobian over a 10k vocabulary
    costs one backward pass per row, where power iteration needs a few."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    dims = (tr.source.shape[-1], tr.out_dim())
    if engine == "warm":
        if min(dims) < warm_min_dim:
            return "exact"
        return "matrix_free" if measure == "radius" and dims[0] != dims[1] else "warm"
    if engine != "auto":
        return engine
    size = max(dims) if measure == "norm" else min(dims)
    return "exact" if size <= exact_max_dim else "matrix_free"


def _measure_and_engine(tr: Transition, measure: Measure, engine: Engine, rectangular: Rectangular,
                        exact_max_dim: int, warm_min_dim: int) -> tuple[Measure, str]:
    """What :func:`transition_measure` measures on ``tr`` (a radius of a non-square Jacobian becomes its norm with
    ``rectangular="norm"``) and by which engine (``exact`` for probes)."""
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose one of {', '.join(MEASURES)}")
    if rectangular not in ("subsample", "norm"):
        raise ValueError(f"rectangular must be 'subsample' or 'norm', got {rectangular!r}")
    if measure == "radius" and rectangular == "norm" and tr.source.shape[-1] != tr.out_dim():
        measure = "norm"
    eng = "exact" if measure == "probe" else choose_engine(tr, engine, exact_max_dim, measure, warm_min_dim)
    return measure, eng


def transition_measure(tr: Transition, measure: Measure = "radius", engine: Engine = "auto", *,
                       generator: torch.Generator | None = None, exact_max_dim: int = EXACT_MAX_DIM,
                       max_iter: int = 64, tol: float = 1e-4, rectangular: Rectangular = "subsample",
                       state: WarmState | None = None, warm_cycles: int = 1, warm_blocks: int | None = None,
                       warm_min_dim: int = WARM_MIN_DIM) -> Tensor:
    """Per-sample radius / norm ``[B]`` of one transition, by the chosen engine (differentiable).

    ``rectangular="norm"`` measures a non-square Jacobian by its top singular value instead of the radius of a
    random square submatrix. ``engine="warm"`` reads and updates ``state`` (a fresh, cold one when None), with
    ``warm_cycles`` / ``warm_blocks`` the ``cycles`` / ``blocks`` of :func:`warm_radius` (None: its default), and
    the exact engine below ``warm_min_dim`` (see :func:`choose_engine`). The exact engine's Jacobians come from
    :func:`fast_jacobian` (the same values and gradient as ``Transition.jacobian``)."""
    measure, eng = _measure_and_engine(tr, measure, engine, rectangular, exact_max_dim, warm_min_dim)
    if eng == "exact":
        return measure_jacobian(fast_jacobian(tr), measure, generator)
    if eng == "warm":
        fn = warm_radius if measure == "radius" else warm_norm
        more = {} if warm_blocks is None else {"blocks": warm_blocks}
        return fn(tr, state, cycles=warm_cycles, generator=generator, **more)
    if measure == "radius":
        return matrix_free_radius(tr, max_iter, tol, generator)[0]
    return matrix_free_norm(tr, max_iter, tol, generator)[0]


# Jacobians of the exact engine (transition_measure): through Transition.batch_fn on a replicated batch (one
# forward and one or two backward passes, no vmap) while min(d_in, d_out) * B is at most this; 0: Transition.jacobian
FAST_JACOBIAN_ROWS = 8192


def fast_jacobian(tr: Transition) -> Tensor:
    """Per-sample Jacobians ``[B, d_out, d_in]`` as :meth:`Transition.jacobian` (the same values and gradient), from
    ``batch_fn`` on the batch replicated ``min(d_in, d_out)`` times: reverse mode (one cotangent ``e_j`` per copy,
    one backward pass) when ``d_out <= d_in``, else forward mode (``torch.func.jvp``, one tangent ``e_i`` per copy)
    where ``forward_mode`` says the map supports it. Samples are independent, so copy ``j``'s gradient is row
    (column) ``j`` of every sample's Jacobian.
    Measured ~7x cheaper than ``vmap(jacrev)`` on an ALIF decoder at width 256 (a custom autograd.Function under
    vmap is slow). Falls back to :meth:`Transition.jacobian` without ``batch_fn`` or above ``FAST_JACOBIAN_ROWS``."""
    B, d_in = tr.source.shape
    d_out = tr.out_dim()
    rep = min(d_in, d_out)
    if tr.batch_fn is None or not BATCH_FN or rep * B > FAST_JACOBIAN_ROWS or \
            (not torch.is_grad_enabled() and tr.closed_form is not None and CLOSED_FORM_NOGRAD):
        return tr.jacobian()  # without gradient, a closed form is cheaper still
    if d_out <= d_in:
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            src = tr.source if tr.source.requires_grad else tr.source.detach().requires_grad_(True)
            src_rep = src.repeat(rep, 1)  # copy j = rows [j*B, (j+1)*B)
            y = tr.batch_fn(src_rep, *[c.repeat(rep, *([1] * (c.dim() - 1))) for c in tr.context])
            eye = torch.eye(rep, dtype=y.dtype, device=y.device).repeat_interleave(B, 0)  # [rep*B, rep]
            g = torch.autograd.grad(y, src_rep, eye, create_graph=outer, allow_unused=True)[0]
            g = torch.zeros_like(src_rep) if g is None else g
            return g.reshape(rep, B, d_in).transpose(0, 1)
    # d_out > d_in: forward mode, one tangent e_i per copy (torch.func.jvp; its output keeps the weights' graph), for
    # the maps known to support it (Transition.forward_mode), else the general reverse mode. Not the pullback of the
    # pullback: that double backward, linearised at a zero cotangent, gave NaN weight gradients through a residual
    # LRU's depth transition (its layer norm; 2x64, step 72 of the slow acceptance run, every sample)
    if not tr.forward_mode or not FORWARD_MODE:
        return tr.jacobian()
    ctx = [c.repeat(rep, *([1] * (c.dim() - 1))) for c in tr.context]
    src_rep = tr.source.repeat(rep, 1)
    tangent = torch.eye(rep, dtype=src_rep.dtype, device=src_rep.device).repeat_interleave(B, 0)  # [rep*B, d_in]
    _, jv = jvp(lambda s: tr.batch_fn(s, *ctx), (src_rep,), (tangent,))  # [rep*B, d_out]
    return jv.reshape(rep, B, d_out).permute(1, 2, 0)


def transition_measures(trs: list[Transition], measure: Measure = "radius", engine: Engine = "auto", *,
                        generator: torch.Generator | None = None, exact_max_dim: int = EXACT_MAX_DIM,
                        max_iter: int = 64, tol: float = 1e-4, rectangular: Rectangular = "subsample",
                        state: WarmState | None = None, warm_cycles: int = 1, warm_blocks: int | None = None,
                        warm_min_dim: int = WARM_MIN_DIM) -> list[Tensor]:
    """:func:`transition_measure` of every transition in ``trs`` (same options), in order; the radii the warm engine
    takes go through :func:`warm_radii` together (one Krylov call per size)."""
    out: list[Tensor | None] = [None] * len(trs)
    warm: list[int] = []
    for i, tr in enumerate(trs):
        if _measure_and_engine(tr, measure, engine, rectangular, exact_max_dim, warm_min_dim) == ("radius", "warm"):
            warm.append(i)
            continue
        out[i] = transition_measure(tr, measure, engine, generator=generator, exact_max_dim=exact_max_dim,
                                    max_iter=max_iter, tol=tol, rectangular=rectangular, state=state,
                                    warm_cycles=warm_cycles, warm_blocks=warm_blocks, warm_min_dim=warm_min_dim)
    if warm:
        more = {} if warm_blocks is None else {"blocks": warm_blocks}
        for i, r in zip(warm, warm_radii([trs[i] for i in warm], state, cycles=warm_cycles, generator=generator,
                                         **more), strict=True):
            out[i] = r
    return out  # type: ignore[return-value]


__all__ = [
    "CLOSED_FORM_NOGRAD",
    "ENGINES",
    "EXACT_MAX_DIM",
    "FORWARD_MODE",
    "MEASURES",
    "WARM_CLOSED_FORM_DENSE_MAX",
    "WARM_CLOSED_FORM_MAX",
    "WARM_DENSE_MAX",
    "WARM_MIN_DIM",
    "ArnoldiResult",
    "Transition",
    "WarmState",
    "WarmStats",
    "arnoldi",
    "batch_jacobian",
    "choose_engine",
    "deflate",
    "fast_jacobian",
    "matrix_free_norm",
    "matrix_free_radius",
    "measure_jacobian",
    "probe_norm",
    "spectral_norm",
    "spectral_radius",
    "square",
    "square_indices",
    "transition_measure",
    "transition_measures",
    "warm_norm",
    "warm_radii",
    "warm_radius",
]
