"""Whole-sequence paths for the LRU's diagonal linear recurrence: a parallel (associative) scan, and a fused
sequential kernel.

The recurrence ``x[t] = λ ⊙ x[t-1] + b[t]`` composes associatively: ``(λ1, b1) ∘ (λ2, b2) = (λ1 λ2, λ2 b1 + b2)``.
With λ constant over time the Hillis–Steele doubling scan needs only the powers ``λ^(2^k)``:

    for s = 1, 2, 4, ... < T:   x[t] += λ^s ⊙ x[t - s]   (t >= s)

after which ``x[t] = Σ_{j <= t} λ^j b[t - j]``; ``ceil(log2 T)`` levels of whole-sequence elementwise ops replace T
Python steps. An initial state enters as ``b[0] += λ x[-1]``. Complex numbers are real pairs, as in ``lru.py``, and
everything is plain differentiable torch ops (autograd, double backward, any device).

The scan does O(T log T) work in whole-sequence tensors: the right tool on a GPU, where the T steps would
otherwise serialise, but on a CPU it streams ``log2 T`` copies of ``[B, T, N]`` through memory and is slower than
the step loop (measured: ``docs/performance.md``). :func:`diagonal_recurrence` is the CPU path: one autograd node,
a forward loop without graph bookkeeping and a hand-written backward (the adjoint of ``x[t] = λ x[t-1] + b[t]`` is
the same recurrence run backwards with ``conj(λ)``), 4 elementwise ops per step each way. ``lru_sequence`` picks
the scan on CUDA and the sequential kernel elsewhere (``method=`` overrides).
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .reparam import lru_modulus


def diagonal_scan(lam_re: Tensor, lam_im: Tensor, b_re: Tensor, b_im: Tensor, x0_re: Tensor | None = None,
                  x0_im: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """All states of ``x[t] = λ x[t-1] + b[t]`` (complex, elementwise) by a parallel scan over time.

    Args:
        lam_re, lam_im: λ, ``[N]`` (constant over time).
        b_re, b_im: the inputs ``[batch, time, N]``.
        x0_re, x0_im: the state before step 0, ``[batch, N]`` (zero if omitted).

    Returns:
        ``(x_re, x_im)``, each ``[batch, time, N]``.
    """
    if b_re.dim() != 3 or b_re.shape != b_im.shape:
        raise ValueError(f"b_re and b_im must both be [batch, time, N], got {list(b_re.shape)} and "
                         f"{list(b_im.shape)}")
    T = b_re.shape[1]
    if T == 0:
        raise ValueError("diagonal_scan needs at least one time step, got T = 0")
    x_re, x_im = b_re, b_im
    if x0_re is not None and x0_im is not None:
        first_re = b_re[:, 0] + lam_re * x0_re - lam_im * x0_im
        first_im = b_im[:, 0] + lam_re * x0_im + lam_im * x0_re
        x_re = torch.cat([first_re.unsqueeze(1), b_re[:, 1:]], dim=1)
        x_im = torch.cat([first_im.unsqueeze(1), b_im[:, 1:]], dim=1)
    p_re, p_im = lam_re, lam_im  # λ^s
    s = 1
    while s < T:
        prev_re, prev_im = x_re[:, :-s], x_im[:, :-s]
        new_re = x_re[:, s:] + p_re * prev_re - p_im * prev_im
        new_im = x_im[:, s:] + p_re * prev_im + p_im * prev_re
        x_re = torch.cat([x_re[:, :s], new_re], dim=1)
        x_im = torch.cat([x_im[:, :s], new_im], dim=1)
        p_re, p_im = p_re * p_re - p_im * p_im, 2.0 * p_re * p_im
        s *= 2
    return x_re, x_im


class _DiagonalRecurrence(torch.autograd.Function):
    """``x[t] = λ x[t-1] + b[t]`` on real pairs, all steps in one node."""

    @staticmethod
    def forward(ctx: Any, lam_re: Tensor, lam_im: Tensor, b_re: Tensor, b_im: Tensor, x0_re: Tensor,
                x0_im: Tensor) -> tuple[Tensor, Tensor]:
        X_re, X_im = torch.empty_like(b_re), torch.empty_like(b_im)
        xr, xi = x0_re, x0_im
        for br, bi, out_r, out_i in zip(b_re.unbind(1), b_im.unbind(1), X_re.unbind(1), X_im.unbind(1),
                                        strict=True):
            nr = torch.addcmul(torch.addcmul(br, lam_re, xr), lam_im, xi, value=-1.0, out=out_r)
            xi = torch.addcmul(torch.addcmul(bi, lam_re, xi), lam_im, xr, out=out_i)
            xr = nr
        ctx.save_for_backward(lam_re, lam_im, x0_re, x0_im, X_re, X_im)
        return X_re, X_im

    @staticmethod
    def backward(ctx: Any, g_re: Tensor, g_im: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: a silent first-order-only result would be wrong
            raise RuntimeError("the LRU's fused sequential path does not support double backward "
                               "(create_graph=True); use lru_sequence(..., method='scan') or cell.fast = False")
        with torch.no_grad():
            lam_re, lam_im, x0_re, x0_im, X_re, X_im = ctx.saved_tensors
            want_lam = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
            G_re, G_im = torch.empty_like(X_re), torch.empty_like(X_im)  # dL/db[t]
            gr, gi = torch.zeros_like(x0_re), torch.zeros_like(x0_im)  # conj(λ) dL/db[t+1]
            # dL/dλ = Σ_t dL/db[t] conj(x[t-1]), accumulated per step while both are in cache
            acc_re, acc_im = torch.zeros_like(x0_re), torch.zeros_like(x0_im)
            Xr, Xi = X_re.unbind(1), X_im.unbind(1)
            for t in range(X_re.shape[1] - 1, -1, -1):
                cr = torch.add(g_re[:, t], gr, out=G_re[:, t])
                ci = torch.add(g_im[:, t], gi, out=G_im[:, t])
                if want_lam:
                    pr, pi = (Xr[t - 1], Xi[t - 1]) if t > 0 else (x0_re, x0_im)
                    acc_re.addcmul_(cr, pr).addcmul_(ci, pi)
                    acc_im.addcmul_(ci, pr).addcmul_(cr, pi, value=-1.0)
                gr = torch.addcmul(lam_re * cr, lam_im, ci)
                gi = torch.addcmul(lam_re * ci, lam_im, cr, value=-1.0)
            g_lam_re = acc_re.sum_to_size(lam_re.shape) if want_lam else None
            g_lam_im = acc_im.sum_to_size(lam_im.shape) if want_lam else None
        return g_lam_re, g_lam_im, G_re, G_im, gr, gi


def diagonal_recurrence(lam_re: Tensor, lam_im: Tensor, b_re: Tensor, b_im: Tensor, x0_re: Tensor | None = None,
                        x0_im: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Same result as :func:`diagonal_scan`, by a fused sequential kernel (the fast path on CPU).

    Shapes as in :func:`diagonal_scan`. Supports first-order gradients only (double backward raises).
    """
    if b_re.dim() != 3 or b_re.shape != b_im.shape:
        raise ValueError(f"b_re and b_im must both be [batch, time, N], got {list(b_re.shape)} and "
                         f"{list(b_im.shape)}")
    if b_re.shape[1] == 0:
        raise ValueError("diagonal_recurrence needs at least one time step, got T = 0")
    zero = b_re.new_zeros(b_re.shape[0], b_re.shape[2])
    x0_re = zero if x0_re is None else x0_re
    x0_im = zero if x0_im is None else x0_im
    return _DiagonalRecurrence.apply(lam_re, lam_im, b_re, b_im, x0_re, x0_im)


ScanMethod = Literal["auto", "scan", "sequential"]


def lru_sequence(u: Tensor, re: Tensor, im: Tensor, *, nu_log: Tensor, theta: Tensor, gamma_log: Tensor,
                 b_re: Tensor, b_im: Tensor, c_re: Tensor, c_im: Tensor, d: Tensor,
                 method: ScanMethod = "auto", reparam: str = "exp") -> tuple[Tensor, Tensor, Tensor]:
    """The LRU over a whole sequence (same parameters as :func:`stablernn.cells.lru.lru_step`).

    ``u [batch, time, in]``, ``re/im [batch, N]`` (state before step 0) -> ``(y [batch, time, out], re_T, im_T)``.
    ``method``: ``scan`` (parallel, :func:`diagonal_scan`), ``sequential`` (:func:`diagonal_recurrence`), or
    ``auto``: the scan on CUDA, the sequential kernel elsewhere. ``reparam``: the modulus map of ``nu_log``
    (:func:`stablernn.cells.reparam.lru_modulus`).
    """
    if method not in ("auto", "scan", "sequential"):
        raise ValueError(f"unknown method {method!r}; choose auto, scan or sequential")
    if method == "auto":
        method = "scan" if u.is_cuda else "sequential"
    mod = lru_modulus(nu_log, reparam)
    lam_re, lam_im = mod * torch.cos(theta), mod * torch.sin(theta)
    gamma = torch.exp(gamma_log)
    recur = diagonal_scan if method == "scan" else diagonal_recurrence
    x_re, x_im = recur(lam_re, lam_im, gamma * F.linear(u, b_re), gamma * F.linear(u, b_im), re, im)
    skip = u * d if d.dim() == 1 else F.linear(u, d)
    y = F.linear(x_re, c_re) - F.linear(x_im, c_im) + skip
    return y, x_re[:, -1], x_im[:, -1]


def lru_cell_sequence(cell: Any, x: Tensor, state: Any, method: ScanMethod = "auto") -> tuple[Tensor, Any]:
    """An ``LRUCell`` over ``x [batch, time, input_size]`` by :func:`lru_sequence`: ``(y [B, T, out], LRUState)``."""
    if x.dim() != 3 or x.shape[-1] != cell.input_size:
        raise ValueError(f"{type(cell).__name__}.forward_sequence expects [batch, time, {cell.input_size}], got "
                         f"{list(x.shape)}")
    y, re, im = lru_sequence(x, state.re, state.im, nu_log=cell.nu_log, theta=cell.theta, gamma_log=cell.gamma_log,
                             b_re=cell.b_re, b_im=cell.b_im, c_re=cell.c_re, c_im=cell.c_im, d=cell.d,
                             method=method, reparam=getattr(cell, "reparam", "exp"))
    return y, type(state)(re, im)


__all__ = ["ScanMethod", "diagonal_recurrence", "diagonal_scan", "lru_cell_sequence", "lru_sequence"]
