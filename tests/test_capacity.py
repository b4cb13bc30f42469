"""Information-processing capacity with Legendre targets (dynamics/capacity.py)."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from stablernn.dynamics.capacity import (
    capacity_from_targets,
    capacity_targets,
    capacity_terms,
    capacity_threshold,
    explained_variance,
    gram,
    information_processing_capacity,
    legendre,
    mean_abs_correlation,
    ridge_readout,
    squared_correlation,
    term_name,
    term_targets,
)
from stablernn.dynamics.memory import collect_features, network_capacity, uniform_drive

torch.set_num_threads(1)


class XState(NamedTuple):
    x: Tensor


class SquareOfPreviousInput(nn.Module):
    """A user cell whose state is (u[t], u[t-1]^2): it computes u(t-1)^2 exactly."""

    input_size, hidden_size = 1, 2

    def __init__(self):
        super().__init__()

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return XState(torch.zeros(batch_size, 2, device=device, dtype=dtype))

    def forward(self, u, state):
        x = torch.cat([u, state.x[:, :1] ** 2], dim=1)
        return x, XState(x)

    def stability_state(self, state):
        return state.x

    def with_stability_state(self, state, s):
        return XState(s)


def test_legendre_is_orthonormal_under_the_uniform_law():
    u = torch.linspace(-1, 1, 200001, dtype=torch.float64)
    P = torch.stack([legendre(u, n) for n in range(5)])
    gramian = torch.trapezoid(P[:, None] * P[None], u, dim=-1) / 2  # E over U[-1, 1]
    assert torch.allclose(gramian, torch.eye(5, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(legendre(u, 2), math.sqrt(5) * (3 * u**2 - 1) / 2)
    with pytest.raises(ValueError):
        legendre(u, -1)


def test_terms_count_and_names():
    assert len(capacity_terms(1, 10)) == 10
    assert len(capacity_terms(2, 10)) == 55
    assert len(capacity_terms(3, 10)) == math.comb(12, 3) == 220
    assert ((1, 2),) in capacity_terms(2, 3) and ((0, 1), (2, 1)) in capacity_terms(2, 3)
    assert all(sum(d for _, d in t) == 3 for t in capacity_terms(3, 4))
    assert term_name(((0, 1), (3, 2))) == "P1(u[t])*P2(u[t-3])"


def test_term_targets_values():
    u = uniform_drive(30, 2, seed=0)
    Y = term_targets(u, [((1, 2),), ((0, 1), (2, 1))], start=3)
    assert Y.shape == (2 * 27, 2)
    t = 10  # stream 0, time t -> row t - start
    assert Y[t - 3, 0] == pytest.approx(float(legendre(u[0, t - 1], 2)))
    assert Y[t - 3, 1] == pytest.approx(float(u[0, t] * u[0, t - 2] * 3))  # sqrt(3)^2
    with pytest.raises(ValueError, match="largest delay"):
        term_targets(u, [((5, 1),)], start=2)


def test_square_of_previous_input_has_full_degree_two_capacity():
    cap = network_capacity(SquareOfPreviousInput(), max_degree=3, window=4, n_steps=2000, streams=2)
    assert cap.capacity_of(((1, 2),)) >= 0.99
    assert cap.capacity_of(((0, 1),)) >= 0.99  # the current input is in the state too
    by = cap.by_degree()
    assert by[1] == pytest.approx(1.0, abs=0.01) and by[2] == pytest.approx(1.0, abs=0.01)
    assert by[3] == pytest.approx(0.0, abs=0.01)
    assert cap.total <= 2 + 1e-6  # never more than the number of features
    with pytest.raises(KeyError, match="not among"):
        cap.capacity_of(((9, 1),))


def test_capacity_of_independent_noise_is_thresholded_to_zero():
    g = torch.Generator().manual_seed(0)
    u = uniform_drive(1500, 2, seed=1)
    X = torch.randn(2, 1500, 10, generator=g, dtype=torch.float64)
    cap = information_processing_capacity(X, u, max_degree=2, window=5)
    assert cap.total == 0.0
    assert cap.raw.max() > 0  # raw estimates are biased up by ~N/T; the threshold removes them
    assert cap.threshold > cap.raw.mean()


def test_threshold_formula():
    from scipy.stats import chi2

    assert capacity_threshold(10, 1000) == pytest.approx(2 * chi2.ppf(0.999, 10) / 1000)
    assert capacity_threshold(10, 1000, p=0.01, factor=1) < capacity_threshold(10, 1000)
    with pytest.raises(ValueError):
        capacity_threshold(0, 10)


def test_ridge_readout_matches_least_squares():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(500, 6, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(6, 3, generator=g, dtype=torch.float64) + 0.1 * torch.randn(500, 3, generator=g,
                                                                                     dtype=torch.float64) + 5
    G = gram(X, Y)
    W = ridge_readout(G, ridge=0.0)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    ref = torch.linalg.lstsq(Xc, Yc).solution
    assert torch.allclose(W, ref, atol=1e-8)
    r2 = explained_variance(G, W)
    ref_r2 = 1 - ((Yc - Xc @ ref) ** 2).sum(0) / (Yc**2).sum(0)
    assert torch.allclose(r2, ref_r2, atol=1e-10)
    corr2 = squared_correlation(G, W)
    ref_corr2 = torch.tensor([np.corrcoef((Xc @ ref)[:, j], Yc[:, j])[0, 1] ** 2 for j in range(3)],
                             dtype=torch.float64)
    assert torch.allclose(corr2, ref_corr2, atol=1e-10)
    # a subset of features
    idx = torch.tensor([0, 3])
    W2 = ridge_readout(G, idx, ridge=0.0)
    assert torch.allclose(W2, torch.linalg.lstsq(Xc[:, idx], Yc).solution, atol=1e-8)


def test_mean_abs_correlation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 1, generator=g, dtype=torch.float64)
    noise = torch.randn(2000, 1, generator=g, dtype=torch.float64)
    X = torch.cat([a, -a, noise, torch.zeros_like(a)], 1)
    G = gram(X, X[:, :1])
    # pairs among the 3 live features: |corr| 1, ~0, ~0 -> mean ~1/3; the constant feature is left out
    assert mean_abs_correlation(G) == pytest.approx(1 / 3, abs=0.03)
    assert mean_abs_correlation(G, torch.tensor([0, 1])) == pytest.approx(1.0)
    assert math.isnan(mean_abs_correlation(G, torch.tensor([0])))


def test_subsets_from_one_gram():
    u = uniform_drive(1500, 2, seed=0)
    X = collect_features(SquareOfPreviousInput(), u)
    targets = capacity_targets(X, u, max_degree=2, window=3)
    only_square = capacity_from_targets(targets, torch.tensor([1]))
    assert only_square.capacity_of(((1, 2),)) >= 0.99 and only_square.capacity_of(((0, 1),)) == 0.0
    assert only_square.n_features == 1
    with pytest.raises(ValueError, match="streams"):
        capacity_targets(X[:, :10], u, max_degree=1, window=2)
