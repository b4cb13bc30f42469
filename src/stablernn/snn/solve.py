"""A vectorised bracketing root-finder: one scalar equation per neuron, solved for all neurons at once.

Used by Condition IV (sharpness) and the tail fit (q): the equations are cheap closed forms, so a log-spaced scan
to find the first sign change followed by bisection is exact to float64 precision and never returns NaN: a neuron
without a sign change in range is reported as such (``found = False``) with the scan point of smallest ``|fn|``
(the bound closest to a root where ``fn`` is monotone); :func:`least_violating` refines that point.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RootResult:
    """Per-neuron roots ``x [n]`` of ``fn``; ``found [n]`` says where a sign change was bracketed; ``residual [n]``
    is ``fn(x)`` (≈ 0 where found)."""

    x: Tensor
    found: Tensor
    residual: Tensor
    lo: float
    hi: float


def solve_per_neuron(fn: Callable[[Tensor], Tensor], n: int, lo: float, hi: float, *, grid: int = 161,
                     iters: int = 200, log: bool = True, dtype: torch.dtype = torch.float64) -> RootResult:
    """Roots of ``fn`` in ``[lo, hi]`` for ``n`` independent neurons.

    Args:
        fn: maps candidates ``x [n, k]`` to residuals ``[n, k]`` (row j is neuron j's equation).
        n: number of neurons (equations).
        lo, hi: the search range (``0 < lo < hi`` when ``log``).
        grid: points of the scan that brackets the first sign change (log-spaced when ``log``).
        iters: bisection steps (geometric midpoints when ``log``); stops early once the bracket stops shrinking.

    Where no sign change exists, ``x`` is the scan point with the smallest ``|fn|`` and ``found`` is False.
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or (log and lo <= 0):
        raise ValueError(f"root-finder range must satisfy {'0 < ' if log else ''}lo < hi, got [{lo}, {hi}]")
    xs = (torch.logspace(math.log10(lo), math.log10(hi), grid, dtype=dtype) if log
          else torch.linspace(lo, hi, grid, dtype=dtype))
    vals = fn(xs.expand(n, grid))
    if vals.shape != (n, grid):
        raise ValueError(f"equation returned shape {list(vals.shape)}, expected [{n}, {grid}]")
    if not torch.all(torch.isfinite(vals)):
        raise ValueError("the equation is not finite on the search range; check the weights and parameters")
    change = (vals[:, :-1] * vals[:, 1:]) <= 0  # [n, grid-1]
    found = change.any(dim=1)
    first = torch.where(found, change.float().argmax(dim=1), torch.zeros_like(found, dtype=torch.long))
    a, b = xs[first], xs[first + 1]
    fa = vals.gather(1, first[:, None])[:, 0]
    for _ in range(iters):
        m = torch.sqrt(a * b) if log else 0.5 * (a + b)
        if torch.equal(m, a) or torch.equal(m, b):
            break
        fm = fn(m[:, None])[:, 0]
        left = (fa * fm) <= 0
        b = torch.where(left, m, b)
        a = torch.where(left, a, m)
        fa = torch.where(left, fa, fm)
    root = torch.sqrt(a * b) if log else 0.5 * (a + b)
    # where no bracket: the scan point closest to a root
    best = xs[vals.abs().argmin(dim=1)]
    x = torch.where(found, root, best)
    residual = fn(x[:, None])[:, 0]
    return RootResult(x=x, found=found, residual=residual, lo=lo, hi=hi)


def least_violating(fn: Callable[[Tensor], Tensor], n: int, lo: float, hi: float, *, grid: int = 161,
                    iters: int = 100, log: bool = True, dtype: torch.dtype = torch.float64) -> Tensor:
    """Per neuron, the ``x [n]`` in ``[lo, hi]`` with the smallest ``|fn(x)|``: the least-violating value of an
    equation without a root in range (the bound only where ``|fn|`` is monotone there).

    A scan (as :func:`solve_per_neuron`'s) finds the best grid point; golden-section search between its two
    neighbours then refines it (``|fn|`` is assumed unimodal between them, which a fine scan makes likely).
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or (log and lo <= 0):
        raise ValueError(f"search range must satisfy {'0 < ' if log else ''}lo < hi, got [{lo}, {hi}]")
    xs = (torch.logspace(math.log10(lo), math.log10(hi), grid, dtype=dtype) if log
          else torch.linspace(lo, hi, grid, dtype=dtype))
    vals = fn(xs.expand(n, grid)).abs()
    if vals.shape != (n, grid):
        raise ValueError(f"equation returned shape {list(vals.shape)}, expected [{n}, {grid}]")
    k = vals.argmin(dim=1)
    # search in log space when log: the scan is geometric, so the neighbours are symmetric there
    to_t = torch.log if log else (lambda t: t)
    from_t = torch.exp if log else (lambda t: t)
    a = to_t(xs[(k - 1).clamp(min=0)])
    b = to_t(xs[(k + 1).clamp(max=grid - 1)])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0

    def f(t: Tensor) -> Tensor:
        return fn(from_t(t)[:, None])[:, 0].abs()

    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        left = fc < fd  # the minimum lies in [a, d]
        b = torch.where(left, d, b)
        a = torch.where(left, a, c)
        if float((b - a).abs().max()) < 1e-12:
            break
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        fc, fd = f(c), f(d)
    x = from_t(0.5 * (a + b))
    # never worse than the best scan point (golden section assumes unimodality; the scan does not)
    best = xs[k]
    keep = f(to_t(x)) <= vals.gather(1, k[:, None])[:, 0]
    return torch.where(keep, x, best).clamp(min=lo, max=hi)


__all__ = ["RootResult", "least_violating", "solve_per_neuron"]
