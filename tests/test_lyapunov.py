"""Lyapunov spectrum by QR iterations on jvps (dynamics/lyapunov.py)."""
from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch
from torch import Tensor, nn

from stablernn import ElmanCell, ModelConfig, build_model
from stablernn.dynamics.lyapunov import (
    as_system,
    flossing_loss,
    layer_inputs,
    layer_lyapunov_spectra,
    lyapunov_spectrum,
)

torch.set_num_threads(1)


class XState(NamedTuple):
    x: Tensor


class LinearMapCell(nn.Module):
    """x[t+1] = A x[t] (+ b u[t]): a user cell with a known spectrum."""

    def __init__(self, A: Tensor, input_size: int = 1):
        super().__init__()
        self.input_size, self.hidden_size = input_size, A.shape[0]
        self.register_buffer("A", A)
        self.b = nn.Parameter(torch.zeros(A.shape[0], input_size, dtype=A.dtype))

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return XState(torch.ones(batch_size, self.hidden_size, dtype=dtype or self.A.dtype, device=device))

    def forward(self, u, state):
        h = state.x @ self.A.T + u @ self.b.T
        return h, XState(h)

    def stability_state(self, state):
        return state.x

    def with_stability_state(self, state, s):
        return XState(s)


def normal_matrix(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """A = Q diag(d) Q^T with Q random orthogonal and distinct |d| (some negative): exponents are log|d|."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    mags = torch.linspace(0.35, 1.4, n, dtype=torch.float64)
    signs = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    d = mags * signs
    return Q @ torch.diag(d) @ Q.T, d


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_map_spectrum_is_log_abs_eigenvalues(seed):
    A, d = normal_matrix(10, seed)
    expected = d.abs().log().sort(descending=True).values
    inputs = torch.zeros(2, 800, 1, dtype=torch.float64)
    res = lyapunov_spectrum(LinearMapCell(A), inputs, k=10, transient=300, seed=seed)
    assert res.exponents.shape == (10,) and res.per_sample.shape == (2, 10) and res.steps == 500
    assert torch.allclose(res.exponents, expected, atol=1e-3), (res.exponents, expected)
    # the first k only
    top = lyapunov_spectrum(LinearMapCell(A), inputs, k=3, transient=300, seed=seed)
    assert torch.allclose(top.exponents, expected[:3], atol=1e-3)
    assert top.top == pytest.approx(float(expected[0]), abs=1e-3)


def test_esn_with_spectral_radius_below_one_contracts():
    torch.manual_seed(0)
    cell = ElmanCell(1, 40, activation="tanh")
    with torch.no_grad():
        W = torch.randn(40, 40)
        cell.weight_hh.copy_(W * 0.8 / torch.linalg.eigvals(W).abs().max())
    res = lyapunov_spectrum(cell, torch.rand(3, 400, 1) * 2 - 1, k=10, transient=100)
    assert torch.all(res.exponents < 0), res.exponents
    # exponents come out descending and the per-sample spread is finite
    assert torch.all(res.exponents[:-1] >= res.exponents[1:])
    assert torch.isfinite(res.spread).all()


def test_esn_beyond_the_edge_of_chaos_has_a_positive_exponent():
    torch.manual_seed(0)
    cell = ElmanCell(1, 60, activation="tanh")
    with torch.no_grad():
        W = torch.randn(60, 60)
        cell.weight_hh.copy_(W * 3.0 / torch.linalg.eigvals(W).abs().max())
        cell.bias.zero_()
    res = lyapunov_spectrum(cell, torch.zeros(2, 400, 1), k=3, transient=100)
    assert res.top > 0.05, res.exponents


def test_jvp_columns_match_the_materialised_jacobian():
    """One step of the QR iteration equals J Q with J from autograd (a GRU stack, joint map of both layers)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", layers=2, width=8), input_size=3, output_size=2)
    system = as_system(model)
    assert system.blocks == (8, 8) and system.state_size == 16
    x = torch.randn(1, 20, 3)
    res = lyapunov_spectrum(model, x, k=16, transient=0)
    # reference: the full product of materialised Jacobians along the same trajectory
    full = system.initial(1, None, torch.float32)
    gen = torch.Generator().manual_seed(0)  # the same starting directions as seed=0
    Qm = torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=torch.float64))[0]
    log_sum = torch.zeros(16, dtype=torch.float64)
    log_det = 0.0
    for x_t in x.unbind(1):
        s = system.flatten(full)
        J = torch.autograd.functional.jacobian(
            lambda s_, x_t=x_t, full=full: system.flatten(system.step(x_t, system.unflatten(full, s_))), s)[0, :, 0]
        log_det += torch.linalg.slogdet(J.double())[1] / 20
        Qm, R = torch.linalg.qr(J.double() @ Qm)
        log_sum += R.diagonal().abs().log()
        full = system.step(x_t, full)
    expected = (log_sum / 20).sort(descending=True).values
    assert torch.allclose(res.exponents.double(), expected, atol=1e-4)
    # the full spectrum sums to the mean log|det J| whatever the starting directions
    assert float(res.exponents.sum().detach()) == pytest.approx(float(log_det), abs=1e-4)


def test_joint_spectrum_is_union_of_layer_spectra():
    """Block-triangular structure of a stack: the joint exponents are the layers' exponents together. (Asymptotically;
    nearly equal exponents of different layers converge slowly, so the layers here are kept apart in rate.)"""
    torch.manual_seed(1)
    model = build_model(ModelConfig(cell="tanh_rnn", layers=2, width=6), input_size=2, output_size=2)
    with torch.no_grad():
        model.cells[1].weight_hh.mul_(0.2)  # layer 2 contracts much faster than layer 1
    x = torch.randn(2, 500, 2)
    joint = lyapunov_spectrum(model, x, k=12, transient=150)
    layers = layer_lyapunov_spectra(model, x, k=6, transient=150)
    assert [r.exponents.shape[0] for r in layers] == [6, 6]
    assert layers[0].exponents.min() > layers[1].exponents.max() + 0.1
    union = torch.cat([r.exponents for r in layers]).sort(descending=True).values
    assert torch.allclose(joint.exponents, union, atol=0.01), (joint.exponents, union)


def test_layer_inputs_are_what_each_layer_receives():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", layers=2, width=5), input_size=3, output_size=2)
    x = torch.randn(2, 7, 3)
    drives = layer_inputs(model, x)
    assert [d.shape for d in drives] == [(2, 7, 3), (2, 7, 5)]
    assert torch.allclose(drives[1], model.run(x).layer_outputs[0])


def test_spiking_stack_and_lstm_run_and_are_finite():
    torch.manual_seed(0)
    for cell in ("alif", "lstm", "lif"):
        model = build_model(ModelConfig(cell=cell, layers=2, width=8), input_size=3, output_size=2, seq_len=20)
        res = lyapunov_spectrum(model, torch.randn(2, 40, 3), k=4)
        assert res.exponents.shape == (4,) and torch.isfinite(res.exponents).all(), cell


def test_flossing_loss_is_differentiable_and_moves_exponents_toward_target():
    torch.manual_seed(0)
    cell = ElmanCell(2, 16, activation="tanh")
    with torch.no_grad():
        cell.weight_hh.mul_(0.5)
    x = torch.randn(4, 60, 2)
    before = lyapunov_spectrum(cell, x, k=2, transient=20).exponents.detach()
    opt = torch.optim.Adam(cell.parameters(), lr=0.02)
    for _ in range(30):
        opt.zero_grad()
        loss = flossing_loss(cell, x, k=2, target=0.0, transient=20)
        assert loss.dim() == 0 and loss.requires_grad
        loss.backward()
        opt.step()
    after = lyapunov_spectrum(cell, x, k=2, transient=20).exponents.detach()
    assert after.abs().max() < 0.5 * before.abs().max(), (before, after)
    assert math.isfinite(float(loss.detach()))


def test_dropout_is_off_while_measuring_and_mode_is_restored():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", layers=2, width=6, dropout=0.5), input_size=3, output_size=2)
    model.train()
    x = torch.randn(1, 30, 3)
    a = lyapunov_spectrum(model, x, k=3).exponents
    b = lyapunov_spectrum(model, x, k=3).exponents
    assert torch.equal(a, b) and model.training


def test_bad_input_is_explained():
    cell = ElmanCell(2, 4)
    with pytest.raises(ValueError, match=r"\[batch, time, 2\]"):
        lyapunov_spectrum(cell, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="k must be"):
        lyapunov_spectrum(cell, torch.zeros(1, 10, 2), k=5)
    with pytest.raises(ValueError, match="transient"):
        lyapunov_spectrum(cell, torch.zeros(1, 10, 2), k=2, transient=10)
    with pytest.raises(TypeError, match="neither a cell"):
        lyapunov_spectrum(nn.Linear(2, 2), torch.zeros(1, 10, 2))
