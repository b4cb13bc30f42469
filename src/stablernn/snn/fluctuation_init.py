"""Fluctuation-driven initialisation of LIF layers (Rossbroich, Gygax & Zenke 2022; stork's
``FluctuationDriven*Initializer``), derived here for this package's discrete-time neuron.

Idea: choose the weight mean and variance so that the *free* membrane potential (no threshold, no reset) has a
target mean ``μ_U`` and standard deviation ``σ_U`` in units of the threshold; firing is then driven by fluctuations
(``μ_U = 0``, "centred") or by a mean drive (``μ_U > 0``, "mean-shifted"). The paper does this in continuous time
with Campbell's theorem; for ``v[t] = δ v[t−1] + Σ_k W_k x_k[t]`` with inputs i.i.d. over time and neurons (mean
``μ_x``, variance ``σ_x²``) and weights i.i.d. (mean ``μ_W``, variance ``σ_W²``), the stationary potential over the
population and time has, exactly,

    E[v]   = n μ_W μ_x ε̄,                        ε̄ = Σ_t δ^t   = 1 / (1 − δ)
    Var[v] = n [ (σ_W² + μ_W²) σ_x² ε̂ + σ_W² μ_x² ε̄² ],   ε̂ = Σ_t δ^2t = 1 / (1 − δ²)

(the PSP kernel of one input is ``δ^t``). A recurrent layer splits the target as in stork: a fraction ``alpha`` of
the mean and variance comes from the input weights, ``1 − alpha`` from the recurrent weights, whose inputs are the
layer's own spikes at ``recurrent_rate`` (Bernoulli). Weights are drawn normal, as in stork.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .conditions import TaskStats


@dataclass(frozen=True)
class FluctuationReport:
    """Weight statistics chosen for one layer and the membrane statistics they predict (per neuron ``[n]``)."""

    mean_in: Tensor
    var_in: Tensor
    mean_rec: Tensor | None
    var_rec: Tensor | None
    predicted_mean: Tensor  # E[v], in units of threshold
    predicted_std: Tensor  # sd[v], in units of threshold

    def summary(self) -> str:
        rec = (f", W_hh mean {self.mean_rec.mean().item():.3g} sd {self.var_rec.sqrt().mean().item():.3g}"
               if self.mean_rec is not None else "")
        return (f"fluctuation-driven init: W_ih mean {self.mean_in.mean().item():.3g} sd "
                f"{self.var_in.sqrt().mean().item():.3g}{rec}; predicted membrane mean "
                f"{self.predicted_mean.mean().item():.3g} ϑ, sd {self.predicted_std.mean().item():.3g} ϑ")


def psp_moments(decay: Tensor) -> tuple[Tensor, Tensor]:
    """``(ε̄, ε̂) = (Σ δ^t, Σ δ^2t) = (1/(1−δ), 1/(1−δ²))`` of the kernel ``δ^t``; δ in [0, 1)."""
    decay = torch.as_tensor(decay, dtype=torch.float64)
    if torch.any(decay < 0) or torch.any(decay >= 1):
        raise ValueError("decay δ = exp(-1/τ) must lie in [0, 1), i.e. τ > 0 steps")
    return 1.0 / (1.0 - decay), 1.0 / (1.0 - decay * decay)


def membrane_stats(n: int, mean_w: Tensor | float, var_w: Tensor | float, stats: TaskStats,
                   decay: Tensor | float) -> tuple[Tensor, Tensor]:
    """Predicted stationary ``(E[v], Var[v])`` of the free membrane potential driven by ``n`` inputs with
    statistics ``stats`` through weights of mean ``mean_w`` and variance ``var_w`` (module docstring)."""
    eb, eh = psp_moments(torch.as_tensor(decay, dtype=torch.float64))
    mw = torch.as_tensor(mean_w, dtype=torch.float64)
    vw = torch.as_tensor(var_w, dtype=torch.float64)
    mean = n * mw * stats.mean * eb
    var = n * ((vw + mw * mw) * stats.var * eh + vw * stats.mean ** 2 * eb * eb)
    return mean, var


def fluctuation_weight_stats(n: int, stats: TaskStats, decay: Tensor | float, target_mean: Tensor | float,
                             target_var: Tensor | float) -> tuple[Tensor, Tensor]:
    """Weight ``(mean, variance)`` that make :func:`membrane_stats` equal ``(target_mean, target_var)``.

    Raises ``ValueError`` when impossible: a non-zero mean from inputs of mean 0, or a mean so large that its own
    contribution to the variance exceeds the target (the weight variance would be negative)."""
    if n < 1:
        raise ValueError(f"need at least one input, got n={n}")
    eb, eh = psp_moments(torch.as_tensor(decay, dtype=torch.float64))
    tm = torch.as_tensor(target_mean, dtype=torch.float64)
    tv = torch.as_tensor(target_var, dtype=torch.float64)
    if torch.any(tv < 0):
        raise ValueError("the target membrane variance must be >= 0")
    if stats.mean == 0:
        if torch.any(tm != 0):
            raise ValueError("a mean-shifted target (mu_u != 0) needs inputs with a non-zero mean")
        mw = torch.zeros_like(tm * eb)
    else:
        mw = tm / (n * stats.mean * eb)
    denom = stats.var * eh + stats.mean ** 2 * eb * eb
    if float(torch.as_tensor(denom).min()) <= 0:
        raise ValueError("inputs with zero variance and zero mean cannot drive the membrane potential")
    vw = (tv / n - mw * mw * stats.var * eh) / denom
    if torch.any(vw < 0):
        raise ValueError(f"the mean-shifted target needs a negative weight variance (min {vw.min().item():.3g}): "
                         f"lower mu_u or raise sigma_u")
    return mw, vw


def fluctuation_init_(cell: nn.Module, stats: TaskStats, *, mu_u: float = 0.0, sigma_u: float = 1.0,
                      alpha: float = 0.9, recurrent_rate: float = 0.1,
                      generator: torch.Generator | None = None) -> FluctuationReport:
    """Initialise a LIF/ALIF cell's ``weight_ih`` (and ``weight_hh``, respecting ``rec_mask``) so its free membrane
    potential has mean ``mu_u·ϑ`` and sd ``sigma_u·ϑ`` (per neuron, ϑ its threshold).

    Args:
        stats: statistics of the layer's input entries (``TaskStats.spikes(rate)`` for a layer fed by spikes).
        mu_u, sigma_u: target mean and sd in units of threshold (stork's centred init: 0 and 1; its mean-shifted
            variant uses mu_u = 1).
        alpha: share of the target coming from the input weights (stork's default 0.9); 1 for a non-recurrent cell.
        recurrent_rate: firing probability per step assumed for the layer's own spikes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if not 0.0 < recurrent_rate < 1.0:
        raise ValueError(f"recurrent_rate must lie in (0, 1), got {recurrent_rate}")
    if sigma_u <= 0 or not math.isfinite(sigma_u) or not math.isfinite(mu_u):
        raise ValueError(f"sigma_u must be > 0 and mu_u finite, got mu_u={mu_u}, sigma_u={sigma_u}")
    recurrent = bool(cell.recurrent)
    share = alpha if recurrent else 1.0
    decay = cell.decay.detach().to(torch.float64)
    thr = cell.threshold.detach().to(torch.float64)
    t_mean, t_var = mu_u * thr, (sigma_u * thr) ** 2
    mean_in, var_in = fluctuation_weight_stats(cell.input_size, stats, decay, share * t_mean, share * t_var)
    w_in = mean_in[:, None] + var_in.sqrt()[:, None] * torch.randn(cell.weight_ih.shape, generator=generator,
                                                                   dtype=torch.float64)
    pred_mean, pred_var = membrane_stats(cell.input_size, mean_in, var_in, stats, decay)
    mean_rec = var_rec = None
    with torch.no_grad():
        cell.weight_ih.copy_(w_in.to(cell.weight_ih.dtype))
        if recurrent and share < 1.0:
            n_pre = int(cell.rec_mask.sum(dim=1).min().item())
            spikes = TaskStats.spikes(recurrent_rate)
            mean_rec, var_rec = fluctuation_weight_stats(n_pre, spikes, decay, (1 - share) * t_mean,
                                                         (1 - share) * t_var)
            w_rec = mean_rec[:, None] + var_rec.sqrt()[:, None] * torch.randn(cell.weight_hh.shape,
                                                                              generator=generator,
                                                                              dtype=torch.float64)
            cell.weight_hh.copy_((w_rec * cell.rec_mask.to(torch.float64)).to(cell.weight_hh.dtype))
            m2, v2 = membrane_stats(n_pre, mean_rec, var_rec, spikes, decay)
            pred_mean, pred_var = pred_mean + m2, pred_var + v2
        elif recurrent:
            cell.weight_hh.zero_()
    return FluctuationReport(mean_in, var_in, mean_rec, var_rec, pred_mean / thr, pred_var.sqrt() / thr)


__all__ = ["FluctuationReport", "fluctuation_init_", "fluctuation_weight_stats", "membrane_stats", "psp_moments"]
