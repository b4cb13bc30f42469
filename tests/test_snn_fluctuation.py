"""Fluctuation-driven initialisation (Rossbroich, Gygax & Zenke 2022) for this package's discrete-time LIF."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stablernn.cells import LIFCell
from stablernn.snn.conditions import TaskStats
from stablernn.snn.fluctuation_init import fluctuation_init_, fluctuation_weight_stats, membrane_stats, psp_moments

F64 = torch.float64


def test_psp_moments():
    eb, eh = psp_moments(torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(eb, torch.tensor([1.0, 2.0], dtype=F64))
    torch.testing.assert_close(eh, torch.tensor([1.0, 4 / 3], dtype=F64))
    with pytest.raises(ValueError, match="τ > 0"):
        psp_moments(torch.tensor([1.0]))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 500), mean=st.floats(0.01, 1.0), var=st.floats(0.001, 1.0), decay=st.floats(0.0, 0.99),
       t_mean=st.floats(-1.0, 1.0), t_sd=st.floats(0.5, 3.0))
def test_weight_stats_invert_membrane_stats(n, mean, var, decay, t_mean, t_sd):
    stats = TaskStats(mean, var)
    mw_needed = t_mean / (n * mean / (1 - decay))
    if mw_needed ** 2 * var / (1 - decay ** 2) > t_sd ** 2 / n:  # the mean alone brings too much variance
        with pytest.raises(ValueError, match="negative weight variance"):
            fluctuation_weight_stats(n, stats, decay, t_mean, t_sd ** 2)
        return
    mw, vw = fluctuation_weight_stats(n, stats, decay, t_mean, t_sd ** 2)
    m, v = membrane_stats(n, mw, vw, stats, decay)
    assert float(m) == pytest.approx(t_mean, abs=1e-9)
    assert float(v) == pytest.approx(t_sd ** 2, rel=1e-9)


def test_membrane_stats_match_simulation():
    """Free membrane v[t] = δ v[t-1] + W x[t] over many neurons: its population mean/variance are the prediction."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    n_in, n, T, decay, rate = 50, 2000, 300, 0.8, 0.2
    stats = TaskStats.spikes(rate)
    mw, vw = fluctuation_weight_stats(n_in, stats, decay, 0.5, 1.0)
    w = mw + math.sqrt(float(vw)) * torch.randn(n, n_in, dtype=F64)
    v = torch.zeros(n, dtype=F64)
    samples = []
    for t in range(T):
        v = decay * v + w @ (torch.rand(n_in, dtype=F64) < rate).to(F64)
        if t >= 60:
            samples.append(v)
    vs = torch.stack(samples)
    assert float(vs.mean()) == pytest.approx(0.5, abs=0.08)  # ≈ 4 standard errors of the neurons' means
    assert float(vs.var()) == pytest.approx(1.0, rel=0.12)


def test_fluctuation_weight_stats_errors():
    with pytest.raises(ValueError, match="non-zero mean"):
        fluctuation_weight_stats(10, TaskStats(0.0, 1.0), 0.5, 1.0, 1.0)
    with pytest.raises(ValueError, match="negative weight variance"):
        fluctuation_weight_stats(10, TaskStats(0.5, 0.25), 0.5, 50.0, 0.01)
    with pytest.raises(ValueError, match="at least one input"):
        fluctuation_weight_stats(0, TaskStats(0.5, 0.25), 0.5, 0.0, 1.0)


@pytest.mark.parametrize(("mu_u", "alpha"), [(0.0, 0.9), (1.0, 0.9), (0.5, 1.0)])
def test_fluctuation_init_cell(mu_u, alpha):
    torch.manual_seed(0)
    cell = LIFCell(40, 300, tau=5.0, threshold=0.8)
    rep = fluctuation_init_(cell, TaskStats(0.3, 0.1), mu_u=mu_u, sigma_u=1.0, alpha=alpha, recurrent_rate=0.1,
                            generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rep.predicted_mean, torch.full((300,), mu_u, dtype=F64), atol=1e-9, rtol=0)
    torch.testing.assert_close(rep.predicted_std, torch.ones(300, dtype=F64), atol=1e-9, rtol=0)
    w_in = cell.weight_ih.detach().double()
    assert float(w_in.mean()) == pytest.approx(float(rep.mean_in.mean()), abs=4 * float(rep.var_in.sqrt()[0]) / 110)
    assert float(w_in.var()) == pytest.approx(float(rep.var_in[0]), rel=0.05)
    assert torch.all(cell.weight_hh.diagonal() == 0)
    if alpha < 1:
        w = cell.weight_hh.detach().double()
        off = w[~torch.eye(300, dtype=torch.bool)]
        assert float(off.var()) == pytest.approx(float(rep.var_rec[0]), rel=0.05)
    else:
        assert torch.all(cell.weight_hh == 0) and rep.mean_rec is None
    assert "fluctuation-driven init" in rep.summary()


def test_fluctuation_init_argument_errors():
    cell = LIFCell(4, 5)
    with pytest.raises(ValueError, match="alpha"):
        fluctuation_init_(cell, TaskStats(0.3, 0.1), alpha=1.5)
    with pytest.raises(ValueError, match="recurrent_rate"):
        fluctuation_init_(cell, TaskStats(0.3, 0.1), recurrent_rate=0.0)
    with pytest.raises(ValueError, match="sigma_u"):
        fluctuation_init_(cell, TaskStats(0.3, 0.1), sigma_u=0.0)
