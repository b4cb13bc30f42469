"""Closed-form one-step Jacobians (cells.base.HasStateJacobian) against autograd (``batch_jacobian``), the warm
engine using them against the exact engine, and the fallback to autograd where a configuration is not covered."""
from __future__ import annotations

import itertools

import pytest
import torch

from carried_steps import carried_transitions
from stablernn.cells import ALIFCell, ElmanCell, GRUCell, LIFCell, LSTMCell
from stablernn.cells.base import HasStateJacobian
from stablernn.lsc import measures
from stablernn.lsc.measures import WarmState, spectral_radius, transition_measure
from stablernn.lsc.transitions import rnn_transitions
from stablernn.models import DeepRNN, ModelConfig, build_model

torch.set_num_threads(1)
DT = torch.float64


def _random_state(cell, B: int, g: torch.Generator):
    """A state away from zero: spiking potentials around the threshold (so about half the neurons fire and the
    surrogate slopes differ), random adaptation, random previous spikes; gated hidden/cell states random."""
    st = cell.initial_state(B, dtype=DT)
    n = cell.hidden_size
    if isinstance(cell, LIFCell):
        v = cell.threshold + torch.randn(B, n, generator=g, dtype=DT)
        z = (torch.rand(B, n, generator=g, dtype=DT) < 0.5).to(DT)
        if cell.adaptive:
            return type(st)(v, torch.rand(B, n, generator=g, dtype=DT), z)
        return type(st)(v, z)
    return type(st)(*[torch.randn(B, n, generator=g, dtype=DT) for _ in st])


def _stack(cells, residual: bool = False) -> DeepRNN:
    return DeepRNN(cells, input_size=cells[0].input_size, output_size=3, residual=residual).to(DT).eval()


def _check_against_autograd(model: DeepRNN, B: int = 3, seed: int = 0, expect_fire: bool = False) -> int:
    """Every time and depth transition with a closed form equals autograd at a random state; returns how many."""
    g = torch.Generator().manual_seed(seed)
    states = [_random_state(c, B, g) for c in model.cells]
    if expect_fire:  # the recomputed spikes are both on and off
        c0 = model.cells[0]
        u = states[0].v - c0.threshold - (c0.beta * states[0].a if c0.adaptive else 0.0)
        assert bool((u > 0).any()) and bool((u <= 0).any())
    x = torch.randn(B, model.input_size, generator=g, dtype=DT)
    checked = 0
    for tr in rnn_transitions(model, x, states, families=("time", "depth")).transitions:
        assert tr.closed_form is not None, (tr.family, tr.layer)
        with torch.no_grad():
            op = tr.closed_form(tr.source, *tr.context)
        assert op is not None, (tr.family, tr.layer)
        J = tr.jacobian().detach()
        torch.testing.assert_close(op.dense(), J, rtol=1e-10, atol=1e-12)
        V = torch.randn(B, 3, J.shape[-1], generator=g, dtype=DT)  # the structured products: rows (J v)ᵀ, (Jᵀ u)ᵀ
        U = torch.randn(B, 3, J.shape[-2], generator=g, dtype=DT)
        torch.testing.assert_close(op.mv(V), V @ J.mT, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(op.rmv(U), U @ J, rtol=1e-10, atol=1e-12)
        checked += 1
    return checked


# --- closed form == autograd ---------------------------------------------------------------------------------------
SPIKING_CASES = list(itertools.product(("subtract", "multiplicative", "mult_leak"), (True, False), (False, True)))


@pytest.mark.parametrize(("reset", "detach", "adaptive"), SPIKING_CASES)
def test_spiking_closed_form_equals_autograd(reset, detach, adaptive):
    """Every reset kind, detach_reset on/off, LIF and ALIF; per-neuron τ, ϑ, β (β of both signs), self-connections
    and learnable τ alternate, so each combination meets both settings of each."""
    n, g = 7, torch.Generator().manual_seed(1)
    cells = []
    for layer, in_size in enumerate((5, n)):
        opts = {"reset": reset, "detach_reset": detach, "tau": 1.0 + 20 * torch.rand(n, generator=g),
                "threshold": 0.5 + torch.rand(n, generator=g), "self_connections": layer == 0,
                "learn_tau": layer == 1, "learn_threshold": layer == 0, "spike": ("fast_sigmoid", "sigmoid")[layer]}
        if adaptive:
            cells.append(ALIFCell(in_size, n, beta=torch.randn(n, generator=g), tau_adapt=1 + 50 * torch.rand(
                n, generator=g), learn_beta=layer == 1, **opts))
        else:
            cells.append(LIFCell(in_size, n, **opts))
    with torch.no_grad():  # larger recurrent weights than the init, so the recurrent path clearly counts
        for c in cells:
            c.weight_hh.mul_(3.0)
    assert _check_against_autograd(_stack(cells), expect_fire=True) == 3


def test_spiking_learnable_surrogate_and_non_recurrent():
    cells = [ALIFCell(4, 6, spike=_learnable_spike(6)), LIFCell(6, 6, recurrent=False)]
    assert _check_against_autograd(_stack(cells), expect_fire=True) == 3


def _learnable_spike(n: int):
    from stablernn.surrogate import SpikeFunction
    return SpikeFunction("fast_sigmoid", dampening=0.7, sharpness=torch.linspace(1, 3, n), learnable=True)


@pytest.mark.parametrize("residual", [False, True])
def test_gated_closed_form_equals_autograd(residual):
    """LSTM ([h, c] state) and GRU time transitions, and the depth transitions between unlike cells (residual adds
    the lower layer's input, which does not change the depth Jacobian)."""
    torch.manual_seed(0)
    cells = [LSTMCell(5, 6), GRUCell(6, 6), LSTMCell(6, 6), ALIFCell(6, 6), GRUCell(6, 6)]
    assert _check_against_autograd(_stack(cells, residual)) == 9


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "swish"])
def test_elman_closed_form_equals_autograd(act):
    torch.manual_seed(0)
    cells = [ElmanCell(5, 6, act), LIFCell(6, 6), ElmanCell(6, 6, act)]
    assert _check_against_autograd(_stack(cells)) == 5


# --- not covered: None, and autograd instead -----------------------------------------------------------------------
def test_uncovered_configurations_return_none():
    x = torch.randn(2, 4)
    ln = LSTMCell(4, 5, layer_norm=True)
    assert isinstance(ln, HasStateJacobian)
    assert ln.state_jacobian(x, ln.initial_state(2)) is None
    assert GRUCell(4, 5, layer_norm=True).input_jacobian(x, GRUCell(4, 5).initial_state(2)) is None
    assert ElmanCell(4, 5, layer_norm=True).output_jacobian(ElmanCell(4, 5).initial_state(2)) is None
    own_spike = LIFCell(4, 5, spike=lambda u: (u > 0).to(u.dtype))  # a user's callable: its slope is unknown
    assert own_spike.state_jacobian(x, own_spike.initial_state(2)) is None

    class Changed(LIFCell):  # a subclass that changes the step is not described by LIF's closed form
        def forward(self, x, state):
            return super().forward(2 * x, state)

    ch = Changed(4, 5)
    assert ch.input_jacobian(x, ch.initial_state(2)) is None and ch.output_jacobian(ch.initial_state(2)) is None


def test_warm_engine_falls_back_to_autograd_when_not_covered(monkeypatch):
    """A layer-norm LSTM (no closed form): the warm engine materialises by autograd and still matches exact."""
    torch.manual_seed(0)
    model = _stack([LSTMCell(4, 8, layer_norm=True), LSTMCell(8, 8, layer_norm=True)])
    g = torch.Generator().manual_seed(0)
    states = [_random_state(c, 3, g) for c in model.cells]
    calls = []
    real = measures.batch_jacobian
    monkeypatch.setattr(measures, "batch_jacobian", lambda *a: calls.append(1) or real(*a))
    for tr in rnn_transitions(model, torch.randn(3, 4, dtype=DT), states, families=("time", "depth")).transitions:
        with torch.no_grad():
            assert tr.closed_form(tr.source, *tr.context) is None
            got = measures.warm_radius(tr, cycles=3, blocks=16)
        assert bool(((got - spectral_radius(tr.jacobian())).abs() <= 1e-6).all())
    assert len(calls) >= 3  # the dense path's materialisation went through autograd


@pytest.mark.parametrize(("closed_max", "closed_dense_max", "dense_max", "how"), [
    (0, 0, 256, "autograd dense"), (0, 0, 0, "pullbacks"), (1 << 30, 0, 0, "structured"), (1 << 30, 64, 0, "dense")])
def test_products_by_size_limits(monkeypatch, closed_max, closed_dense_max, dense_max, how):
    """``WARM_CLOSED_FORM_MAX = 0`` turns the closed forms off (autograd as before); with them on, the Jacobians are
    materialised up to ``WARM_CLOSED_FORM_DENSE_MAX`` and multiplied in structured form above."""
    monkeypatch.setattr(measures, "WARM_CLOSED_FORM_MAX", closed_max)
    monkeypatch.setattr(measures, "WARM_CLOSED_FORM_DENSE_MAX", closed_dense_max)
    torch.manual_seed(0)
    model = _stack([GRUCell(4, 8)])
    tr = rnn_transitions(model, torch.randn(2, 4, dtype=DT), [model.cells[0].initial_state(2, dtype=DT)],
                         families=("time",)).transitions[0]
    used = []
    closed = tr.closed_form
    tr.closed_form = lambda *a: used.append(1) or closed(*a)
    J, mv, rmv, op = measures._products(tr, dense_max=dense_max)
    assert (op is not None) == (how in ("structured", "dense"))
    assert bool(used) == (how in ("structured", "dense"))
    assert (J is not None) == (how in ("autograd dense", "dense"))
    ref = tr.jacobian().detach()
    V = torch.randn(2, 3, 8, dtype=DT)
    with torch.no_grad():
        torch.testing.assert_close(V @ J.mT if J is not None else mv(V), V @ ref.mT)
        if J is None:
            torch.testing.assert_close(rmv(V), V @ ref)


# --- the warm engine with the closed forms: within 1% of exact -------------------------------------------------
def _warm_vs_exact(kind: str, width: int, B: int = 4, blocks: int = 32) -> None:
    state = WarmState()
    used = []
    for t, trs in carried_transitions(kind, width, B, families=("time", "depth")):  # bases carried, as LSC uses them
        for tr in trs:
            closed = tr.closed_form
            tr.closed_form = lambda *a, d=closed: used.append(1) or d(*a)
            with torch.no_grad():
                got = transition_measure(tr, "radius", "warm", state=state, warm_cycles=3, warm_blocks=blocks,
                                         warm_min_dim=0)
            if t == 3:
                ref = spectral_radius(tr.jacobian().detach())
                assert bool(((got - ref).abs() <= 0.01 * ref + 1e-6).all()), (kind, width, tr.family, got, ref)
    assert state.stats.exact == 0 and len(used) == 4 * 3  # every Jacobian came from a closed form


@pytest.mark.parametrize("kind", ["lif", "alif", "lstm"])
def test_warm_with_closed_forms_within_one_percent_width64(kind):
    _warm_vs_exact(kind, 64)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lif", "alif", "lstm"])
def test_warm_with_closed_forms_within_one_percent_width256(kind):
    _warm_vs_exact(kind, 256, blocks=48)



def test_scale_columns_needs_one_input_block():
    torch.manual_seed(0)
    cell = LSTMCell(3, 4).to(DT)
    st = _random_state(cell, 2, torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, dtype=DT)
    D = torch.rand(2, 1, 3, dtype=DT)
    op = cell.input_jacobian(x, st)
    torch.testing.assert_close(op.scale_columns(D).dense(), op.dense() * D[:, 0, None, :])
    with pytest.raises(ValueError, match="one input block"):
        cell.state_jacobian(x, st).scale_columns(D)


# --- the encoder's exact Jacobian in forward mode -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lif", "alif", "lstm", "gru", "tanh_rnn", "lru"])
def test_encoder_forward_mode_equals_reverse_mode(kind):
    """An encoder (8 inputs -> a wider state) is differentiated by ``jacfwd`` where the cell is a built-in one with
    closed forms: the same Jacobian and the same gradient to the weights as ``jacrev`` (float64)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell=kind, layers=1, width=8), input_size=3, output_size=2, seq_len=4).to(DT)
    model.eval()
    g = torch.Generator().manual_seed(0)
    states = [_random_state(c, 3, g) if kind != "lru" else c.initial_state(3, dtype=DT) for c in model.cells]
    tr = rnn_transitions(model, torch.randn(3, 3, dtype=DT), states, families=("encoder",)).transitions[0]
    assert tr.forward_mode == (kind != "lru")
    params = [p for p in model.parameters() if p.requires_grad]
    J = tr.jacobian()
    ref = measures.batch_jacobian(tr.fn, tr.source, *tr.context)
    torch.testing.assert_close(J, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn(J.shape, generator=g, dtype=DT)
    grads = torch.autograd.grad((J * w).sum(), params, allow_unused=True)
    refs = torch.autograd.grad((ref * w).sum(), params, allow_unused=True)
    for a, b in zip(grads, refs, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
