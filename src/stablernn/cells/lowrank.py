"""Low-rank + sparse recurrent connectivity (Tumma et al. 2023, "Leveraging low-rank and sparse recurrent
connectivity for robust closed-loop control", arXiv:2310.03915, §3): ``W_hh = (U V^T) ⊙ M`` per gate block.

An option on any cell that keeps its recurrent matrix in an attribute ``weight_hh`` of shape ``[G * H, H]`` (G gate
blocks: 1 for Elman, LIF/ALIF, 3 for GRU, 4 for LSTM, 2 for Li-GRU, ...). It is a ``torch.nn.utils.parametrize``
parametrisation, so ``cell.weight_hh`` still reads as the full matrix and every consumer (fused kernels, LSC, the
diagnostics) sees it unchanged, while the trained parameters are ``U [G, H, r]`` and ``V [G, H, r]``; the mask
``M [G, H, H]`` (density p, Bernoulli) is a fixed buffer.

The initial factors are random and rescaled so that each block's spectral radius equals ``radius`` (default: the
radius of the dense matrix it replaces, so switching the option on does not change the scale of the dynamics).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .base import HasRecMask, MatrixRecurrent


class LowRankSparse(nn.Module):
    """The parametrisation ``(U, V) -> [(U_g V_g^T) ⊙ M_g]_g`` stacked to ``[G * H, H]``.

    ``factors``: the initial ``(U, V)``, handed to ``register_parametrization`` once through :meth:`right_inverse`
    (a dense ``W`` has no unique inverse, so assigning one later raises).
    """

    def __init__(self, mask: Tensor, factors: tuple[Tensor, Tensor] | None = None):
        super().__init__()
        self.register_buffer("mask", mask)  # [G, H, H], 0/1
        self._factors = factors

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        """``u, v [G, H, r]`` -> ``W [G * H, H]``."""
        w = torch.einsum("gir,gjr->gij", u, v) * self.mask
        return w.reshape(-1, w.shape[-1])

    def right_inverse(self, w: Tensor) -> tuple[Tensor, Tensor]:
        if self._factors is None:
            raise RuntimeError("a low-rank + sparse weight_hh cannot be assigned a dense matrix; set the factors "
                               "parametrizations.weight_hh.original0 / original1 (U, V) instead")
        factors, self._factors = self._factors, None
        return factors


def spectral_radius(w: Tensor) -> Tensor:
    """Largest eigenvalue modulus of a square ``[H, H]`` matrix (float64 eigvals)."""
    return torch.linalg.eigvals(w.detach().double()).abs().max().to(w.dtype)


def low_rank_sparse_(cell: nn.Module, rank: int | None = None, density: float = 1.0, radius: float | None = None,
                     *, generator: torch.Generator | None = None) -> nn.Module:
    """Replace ``cell.weight_hh`` by a rank-``rank``, density-``density`` parametrisation in place; returns the cell.

    Args:
        rank: r per gate block (``None``: full rank H).
        density: the fraction p of entries the fixed mask keeps, in (0, 1].
        radius: each block's initial spectral radius (``None``: the dense block's own). A cell with a
            self-connection mask (``rec_mask``, LIF/ALIF) is measured with it applied.
    """
    w = cell.weight_hh if isinstance(cell, MatrixRecurrent) else None
    if not isinstance(w, Tensor) or w.dim() != 2 or w.shape[0] % w.shape[1] != 0:
        raise ValueError(f"{type(cell).__name__} has no recurrent matrix weight_hh [G * H, H]; low-rank + sparse "
                         "recurrence applies to cells with one (elman, lstm, gru, lif, alif, ligru, spiking_lstm, ...)")
    if parametrize.is_parametrized(cell, "weight_hh"):
        raise ValueError(f"{type(cell).__name__}.weight_hh is already parametrised")
    H = w.shape[1]
    G = w.shape[0] // H
    r = H if rank is None else int(rank)
    if not 1 <= r <= H:
        raise ValueError(f"recurrent rank must be in 1..{H} (the width), got {rank}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"recurrent density must be in (0, 1], got {density}")
    if radius is not None and not radius >= 0.0:
        raise ValueError(f"recurrent radius must be >= 0, got {radius}")
    self_mask = cell.rec_mask if isinstance(cell, HasRecMask) else None
    blocks = w.detach().reshape(G, H, H)
    mask = (torch.rand(G, H, H, generator=generator, dtype=w.dtype) < density).to(w.dtype)
    # a Gaussian U V^T / sqrt(r) has entries of unit variance; the radius rescaling below fixes the scale anyway
    u = torch.randn(G, H, r, generator=generator, dtype=w.dtype) / r ** 0.25
    v = torch.randn(G, H, r, generator=generator, dtype=w.dtype) / r ** 0.25
    for g in range(G):
        sm = self_mask.to(w.dtype) if isinstance(self_mask, Tensor) and self_mask.shape == (H, H) else 1.0
        want = spectral_radius(blocks[g] * sm) if radius is None else torch.tensor(float(radius), dtype=w.dtype)
        have = spectral_radius((u[g] @ v[g].T) * mask[g] * sm)
        # a very sparse rank-1 block can be (nearly) nilpotent: radius ~0, nothing to rescale it by
        scale = float(want / have) if float(have) > 1e-8 else 1.0
        u[g] *= math.sqrt(scale)
        v[g] *= math.sqrt(scale)
    param = LowRankSparse(mask.to(w.device), (u.to(w.device), v.to(w.device)))
    with torch.no_grad():
        parametrize.register_parametrization(cell, "weight_hh", param, unsafe=True)
    cell.recurrent_rank, cell.recurrent_density = r, float(density)
    return cell


def is_low_rank_sparse(cell: nn.Module) -> bool:
    """Whether ``cell.weight_hh`` is a :class:`LowRankSparse` parametrisation."""
    return parametrize.is_parametrized(cell, "weight_hh") and any(
        isinstance(p, LowRankSparse) for p in cell.parametrizations.weight_hh)


__all__ = ["LowRankSparse", "is_low_rank_sparse", "low_rank_sparse_", "spectral_radius"]
