"""Path counting on the depth x time grid and the PascalRNN toy (paper A, arXiv:2308.12075, Fig. 1; docs/lsc.md).

A deep RNN's gradient from node ``(t, l)`` to ``(T, L)`` is a sum over monotone lattice paths, each step a time edge
(radius about ρ_t) or a depth edge (about ρ_l). There are ``C(Δt + Δl, Δt)`` of them, so

    |ds[T, L] / ds[t, l]|  <~  C(Δt + Δl, Δt) · ρ_t^Δt · ρ_l^Δl.

Summed over the paths of one length ``n = Δt + Δl`` this is ``(ρ_t + ρ_l)^n``: bounded for every n exactly when
``ρ_t + ρ_l <= 1`` — hence the LSC target 0.5 for deep RNNs (and 1 where there is a single path: FFNs, one layer).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..figures import save_figure
from ..models import CELL_KINDS, ELMAN_KINDS


def path_count(dt: int, dl: int) -> int:
    """Number of monotone depth x time paths covering ``dt`` time steps and ``dl`` layer steps: ``C(dt+dl, dt)``."""
    if dt < 0 or dl < 0:
        raise ValueError(f"dt and dl must be >= 0, got dt={dt}, dl={dl}")
    return math.comb(dt + dl, dt)


def log10_path_count(dt: np.ndarray | int, dl: np.ndarray | int) -> np.ndarray:
    """``log10 C(dt+dl, dt)`` elementwise (no overflow for large grids)."""
    dt, dl = np.asarray(dt, dtype=float), np.asarray(dl, dtype=float)
    if np.any(dt < 0) or np.any(dl < 0):
        raise ValueError("dt and dl must be >= 0")
    lg = np.vectorize(math.lgamma)
    return (lg(dt + dl + 1) - lg(dt + 1) - lg(dl + 1)) / math.log(10)


def log10_gradient_bound(dt: np.ndarray | int, dl: np.ndarray | int, rho_t: float, rho_l: float) -> np.ndarray:
    """``log10 [C(dt+dl, dt) ρ_t^dt ρ_l^dl]`` elementwise (``-inf`` where a zero radius kills every path)."""
    if rho_t < 0 or rho_l < 0:
        raise ValueError(f"radii must be >= 0, got rho_t={rho_t}, rho_l={rho_l}")
    dt, dl = np.asarray(dt, dtype=float), np.asarray(dl, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lt = np.where(dt > 0, dt * np.log10(rho_t) if rho_t > 0 else -np.inf, 0.0)
        ll = np.where(dl > 0, dl * np.log10(rho_l) if rho_l > 0 else -np.inf, 0.0)
    return log10_path_count(dt, dl) + lt + ll


def gradient_bound(dt: int, dl: int, rho_t: float, rho_l: float) -> float:
    """``C(dt+dl, dt) ρ_t^dt ρ_l^dl`` (``inf`` past the float range)."""
    v = float(log10_gradient_bound(dt, dl, rho_t, rho_l))
    return 0.0 if v == -math.inf else (math.inf if v > 308 else 10.0**v)


def bound_grid(T: int, L: int, rho_t: float, rho_l: float) -> np.ndarray:
    """``log10`` of the bound on ``|ds[T-1, L-1] / ds[t, l]|`` for every node: ``[T, L]`` (``Δt = T-1-t``,
    ``Δl = L-1-l``)."""
    t = np.arange(T)[:, None]
    l = np.arange(L)[None, :]
    return log10_gradient_bound(T - 1 - t, L - 1 - l, rho_t, rho_l)


def total_path_weight(n: int, rho_t: float, rho_l: float) -> float:
    """``Σ_k C(n, k) ρ_t^k ρ_l^(n-k) = (ρ_t + ρ_l)^n``: the bound summed over all paths of length ``n``."""
    return (rho_t + rho_l) ** n


def unbalanced_targets(L: int, T: int) -> dict[str, float]:
    """The ``unbalanced`` split (paper A; docs/lsc.md): depth ``L/(L+T)``, time ``T/(L+T)`` (they sum to 1)."""
    if L < 1 or T < 1:
        raise ValueError(f"L and T must be >= 1, got L={L}, T={T}")
    return {"depth": L / (L + T), "time": T / (L + T)}


def theory_targets(L: int, T: int, *, grid: int = 199) -> dict[str, float]:
    """Per-family LSC targets chosen from depth ``L`` and sequence length ``T`` alone (target mode ``"theory"``).

    On the constraint ``ρ_t + ρ_l = 1`` (paper A, arXiv:2308.12075, Sec. 3: the binomially many paths stay bounded),
    pick the split that maximises the *smallest* path bound from any input step to the last layer,
    ``min_{Δt = 0..T-1} C(Δt + L-1, Δt) ρ_t^Δt ρ_l^(L-1)`` (:func:`log10_gradient_bound`), searched over ``grid``
    values of ``ρ_l`` in (0, 1). The ``unbalanced`` split ``ρ_t = T/(L+T)`` is best for the single path length
    ``Δt = T``, and leaves recent inputs ``ρ_l^(L-1)`` small; this maximin keeps every input step reachable. A single
    layer has one path per Δt, so its time target is 1 (the FFN/one-layer value). Encoder and decoder edges
    multiply every path alike, so they keep radius 1.

    Returns ``{"time": ρ_t, "depth": ρ_l, "encoder": 1.0, "decoder": 1.0}`` (depth absent for ``L == 1``).
    """
    if L < 1 or T < 1:
        raise ValueError(f"theory targets need L >= 1 layers and T >= 1 steps, got L={L}, T={T}")
    if L == 1:
        return {"time": 1.0, "encoder": 1.0, "decoder": 1.0}
    dts = np.arange(T)
    best_rl, best = 0.5, -np.inf
    for rl in np.linspace(0.0, 1.0, grid + 2)[1:-1]:
        worst = float(np.min(log10_gradient_bound(dts, L - 1, 1.0 - rl, rl)))
        if worst > best:
            best_rl, best = float(rl), worst
    return {"time": 1.0 - best_rl, "depth": best_rl, "encoder": 1.0, "decoder": 1.0}


# every recurrent kind but the Elman cells has a clock of its own (gates, leaks, LRU eigenvalues); derived from the
# builder's kinds so that a new cell kind is sorted here without a second list to keep in step
OWN_CLOCK_CELLS: tuple[str, ...] = tuple(k for k in CELL_KINDS if k not in (*ELMAN_KINDS, "ffn"))


def stable_targets(L: int, cell: str) -> dict[str, float]:
    """The targets ``--stable auto`` uses (issue 16): every edge that carries the signal to the output at radius 1.

    Encoder, depth and decoder edges at 1: paper A's feed-forward result (a layer at radius 1 passes its input's
    scale on), applied to the ``L - 1`` depth edges every path has to cross; the ``theory`` split instead sets them
    to ~0.2 and attenuates the forward signal and the gradient by ~0.2^(L-1) (measured on a 4x32 tanh RNN, delayed
    recall T = 50: the gradient reaching step 0 falls from 10^-2.9 (default init) to 10^-4.2, and to 10^-14 at
    target 0.5, where target 1 keeps it at 10^0.4; experiments/stability_diagnose.py, docs/results.md). The path
    bound ``(ρ_t + ρ_l)^n`` that asks for ``ρ_t + ρ_l <= 1`` is loose by the same measurement: the random Jacobians'
    paths do not add in phase. Time edges: 1 for cells whose memory is the recurrent matrix (Elman), as for a
    single layer; left out (not pre-trained) for cells with a clock of their own (gates, leaks, LRU eigenvalues:
    ``OWN_CLOCK_CELLS``), whose time radius LSC would set by rescaling that clock.

    ``--stable auto`` pre-trains these targets for every cell without a layer-norm option; Elman, GRU and LSTM
    cells get layer norm instead and no LSC (train/stable.py: measured, LSC to 1 on top of layer norm lost 41 points
    on the benchmark's failing tasks).

    Returns the families to pre-train and their targets: ``{"time": 1.0, "depth": 1.0, "encoder": 1.0,
    "decoder": 1.0}``, without ``time`` for ``OWN_CLOCK_CELLS`` and without ``depth`` for ``L == 1``.
    """
    if L < 1:
        raise ValueError(f"stable targets need L >= 1 layers, got L={L}")
    out = {"encoder": 1.0, "decoder": 1.0}
    if cell not in OWN_CLOCK_CELLS:
        out["time"] = 1.0
    if L > 1:
        out["depth"] = 1.0
    return out


# --- the PascalRNN toy --------------------------------------------------------------------------------------------
def pascal_rnn_gradients(rho: float, T: int = 100, L: int = 10) -> np.ndarray:
    """``|dy / dx[t]|`` for ``t = 0..T-1`` of the scalar PascalRNN, by autograd (float64).

    ``h[t, 0] = x[t]``; ``h[t, l] = ρ h[t, l-1] + ρ h[t-1, l]`` for ``l = 1..L`` (``h[-1, l] = 0``);
    ``y = h[T-1, L]``. Every time and depth edge has gain ρ, so the gradient is ``ρ^(L+Δt)`` times the path count.
    """
    import torch

    x = torch.zeros(T, dtype=torch.float64, requires_grad=True)
    prev = [torch.zeros((), dtype=torch.float64) for _ in range(L + 1)]
    for t in range(T):
        cur = [x[t]]
        for l in range(1, L + 1):
            cur.append(rho * cur[l - 1] + rho * prev[l])
        prev = cur
    (g,) = torch.autograd.grad(prev[L], x)
    return g.abs().numpy()


def pascal_rnn_closed_form(rho: float, T: int = 100, L: int = 10) -> np.ndarray:
    """``ρ^(L+Δt) C(L-1+Δt, Δt)`` with ``Δt = T-1-t``: the PascalRNN gradient counted by paths (first edge: x into
    layer 1, then Δt time and L-1 depth edges in any order)."""
    dt = T - 1 - np.arange(T)
    return np.array([rho ** (L + d) * math.comb(L - 1 + d, d) for d in dt], dtype=float)


def plot_pascal_rnn(path: str | Path, rhos: tuple[float, ...] = (1.0, 0.5), T: int = 100, L: int = 10) -> Path:
    """The PascalRNN figure: ``|dy/dx[t]|`` against ``Δt`` on a log scale, one curve per ρ (explodes at ρ = 1,
    stays bounded at 0.5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for rho in rhos:
        g = pascal_rnn_gradients(rho, T, L)
        ax.semilogy(np.arange(T)[::-1], np.maximum(g, 1e-300), label=f"ρ = {rho:g}")
    ax.set_xlabel("Δt = T-1-t")
    ax.set_ylabel("|dy / dx[t]|")
    ax.set_title(f"PascalRNN, L = {L}, T = {T}")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


__all__ = [
    "OWN_CLOCK_CELLS",
    "bound_grid",
    "gradient_bound",
    "log10_gradient_bound",
    "log10_path_count",
    "pascal_rnn_closed_form",
    "pascal_rnn_gradients",
    "path_count",
    "plot_pascal_rnn",
    "stable_targets",
    "theory_targets",
    "total_path_weight",
    "unbalanced_targets",
]
