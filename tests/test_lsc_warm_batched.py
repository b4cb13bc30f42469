"""The batched warm engine (issue 13, second pass): transitions of one size in one Krylov call (``warm_radii``),
the cheaper Krylov step, ``Transition.batch_fn`` (pullbacks and exact Jacobians without vmap), against the
per-transition path and the exact engine."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from stablernn.lsc import measures
from stablernn.lsc.measures import (
    Transition,
    WarmState,
    fast_jacobian,
    spectral_radius,
    transition_measures,
    warm_radii,
    warm_radius,
)
from stablernn.lsc.transitions import one_sample, rnn_transitions
from stablernn.models import ModelConfig, build_model, detach_states

torch.set_num_threads(1)

KINDS = ("lstm", "gru", "tanh_rnn", "lif", "alif", "lru")


def _model_transitions(kind: str, width: int = 16, B: int = 3, steps: int = 2, seed: int = 0):
    """The transitions of a 2-layer net after ``steps`` steps (states carried), on the graph of its weights."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(cell=kind, layers=2, width=width), input_size=8, output_size=10,
                        seq_len=8).eval()
    x = torch.rand(B, steps + 1, 8)
    states = model.initial_states(B)
    for t in range(steps):
        with torch.no_grad():
            states = detach_states(rnn_transitions(model, x[:, t], states).states)
    return model, rnn_transitions(model, x[:, steps], states).transitions


def _linear(A: Tensor, family: str = "time", layer: int = 0) -> Transition:
    return Transition(family, layer, lambda s, a: a @ s, torch.zeros(A.shape[0], A.shape[-1], dtype=A.dtype), (A,),
                      batch_fn=lambda s, a: (a @ s[..., None])[..., 0])


@pytest.mark.parametrize("kind", KINDS)
def test_batch_fn_equals_the_vmapped_one_sample_function(kind):
    _, trs = _model_transitions(kind)
    for tr in trs:
        assert tr.batch_fn is not None, (kind, tr.family)
        got = tr.batch_fn(tr.source, *tr.context)
        measures.BATCH_FN = False
        try:
            ref = tr.batched()(tr.source)
        finally:
            measures.BATCH_FN = True
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_one_sample_adds_and_removes_the_batch_axis():
    fn = one_sample(lambda s, w: s * w.sum(-1, keepdim=True))
    torch.testing.assert_close(fn(torch.ones(3), torch.full((2,), 2.0)), torch.full((3,), 4.0))


@pytest.mark.parametrize("kind", (*KINDS, "reslru"))
def test_fast_jacobian_equals_the_jacobian_with_its_gradient(kind):
    """Encoder (forward mode: 8 inputs), decoder (reverse: 10 outputs) and the square ones, value and gradient."""
    model, trs = _model_transitions(kind)
    params = [p for p in model.parameters() if p.requires_grad]
    for tr in trs:
        probe = torch.randn(tr.batch_size, tr.out_dim(), tr.source.shape[-1])
        got = fast_jacobian(tr)
        ref = tr.jacobian()
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        g_got = torch.autograd.grad((got * probe).sum(), params, allow_unused=True, retain_graph=True)
        g_ref = torch.autograd.grad((ref * probe).sum(), params, allow_unused=True, retain_graph=True)
        for a, b in zip(g_got, g_ref, strict=True):
            if b is None:
                assert a is None or float(a.abs().max()) == 0.0
            else:
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_fast_jacobian_widening_map_without_forward_mode_takes_reverse_mode(monkeypatch):
    """A map wider out than in, not known to support forward mode, goes through Transition.jacobian (reverse mode):
    the double backward that stood in for forward mode gave NaN weight gradients on a residual LRU's depth map."""
    A = torch.randn(2, 7, 3, dtype=torch.float64)
    tr = _linear(A)
    calls = []
    real = type(tr).jacobian
    monkeypatch.setattr(type(tr), "jacobian", lambda self: calls.append(1) or real(self))
    tr.forward_mode = False
    torch.testing.assert_close(fast_jacobian(tr), A)
    assert calls == [1]
    tr.forward_mode = True
    torch.testing.assert_close(fast_jacobian(tr), A)
    assert calls == [1]  # forward mode by jvp on batch_fn, not through jacobian()


def test_fast_jacobian_falls_back_without_batch_fn():
    A = torch.randn(2, 5, 5, dtype=torch.float64)
    tr = _linear(A)
    tr.batch_fn = None
    torch.testing.assert_close(fast_jacobian(tr), A)


@pytest.mark.parametrize("how", ["dense", "stacked"])
@pytest.mark.parametrize("kind", ["lstm", "alif", "gru"])
def test_grouped_call_gives_each_transition_its_own_radius_and_gradient(monkeypatch, kind, how):
    """All square transitions of a net through one warm_radii call (materialised closed forms in one matmul, or
    structured ones stacked), against one call each (same Krylov budget covering the whole space at width 8: both
    exact) and against eigvals, gradients included."""
    if how == "stacked":
        monkeypatch.setattr(measures, "WARM_CLOSED_FORM_DENSE_MAX", 0)
        stacked = []
        real = measures._stacked
        monkeypatch.setattr(measures, "_stacked", lambda ops: stacked.append(len(ops)) or real(ops))
    model, trs = _model_transitions(kind, width=8)
    sq = [tr for tr in trs if tr.source.shape[-1] == tr.out_dim()]
    assert len(sq) >= 3
    params = [p for p in model.parameters() if p.requires_grad]
    state = WarmState()
    grouped = warm_radii(sq, state, blocks=8)
    assert state.stats.exact == 0
    if how == "stacked":
        # one stacked operator for all those with closed forms (a GRU's 8 -> 8 encoder has none: a call of its own)
        assert stacked == [sum(tr.closed_form is not None for tr in sq)]
    assert set(state.bases) == {(tr.family, tr.layer, "radius") for tr in sq}
    for tr, r in zip(sq, grouped, strict=True):
        one = warm_radius(tr, blocks=8)  # no gradient taken: its graph is left alone
        exact = spectral_radius(tr.jacobian())
        torch.testing.assert_close(r.detach(), exact.detach(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(one.detach(), exact.detach(), rtol=1e-4, atol=1e-6)
        g_r = torch.autograd.grad(r.sum(), params, retain_graph=True, allow_unused=True)
        g_e = torch.autograd.grad(exact.sum(), params, allow_unused=True, retain_graph=True)
        for a, b in zip(g_r, g_e, strict=True):
            if b is not None and float(b.norm()) > 1e-8:
                assert a is not None and float((a - b).norm() / b.norm()) < 1e-3, (kind, tr.family, tr.layer)


def test_grouped_warm_state_is_carried_per_key():
    """Two transitions sharing a call keep their own bases; the second call starts warm from them, the pair of each
    stays its own (a diagonal operator with top 1.0 and one with top 0.8)."""
    n = 40
    d0 = torch.linspace(0.1, 0.6, n, dtype=torch.float64)
    d0[3] = 1.0
    d1 = torch.linspace(0.1, 0.5, n, dtype=torch.float64)
    d1[7] = 0.8
    trs = [_linear(torch.diag(d0)[None].repeat(2, 1, 1), "time", 0),
           _linear(torch.diag(d1)[None].repeat(2, 1, 1), "time", 1)]
    state = WarmState()
    for _ in range(2):
        r0, r1 = warm_radii(trs, state)
        torch.testing.assert_close(r0, torch.ones(2, dtype=torch.float64))
        torch.testing.assert_close(r1, torch.full((2,), 0.8, dtype=torch.float64))
    right0, _ = state.bases[("time", 0, "radius")]
    right1, _ = state.bases[("time", 1, "radius")]
    # e_3 lies in the span kept for the first, e_7 in the second's (orthonormal rows: the norm of its projection)
    assert float(right0[:, :, 3].norm(dim=-1).min()) > 0.99
    assert float(right1[:, :, 7].norm(dim=-1).min()) > 0.99
    assert state.stats.cold == 0 and state.stats.exact == 0


def test_old_and_new_krylov_step_agree():
    """The fast Krylov step (one projection per side of the QR, Gram-matrix span) and the old one give the same
    radius on a rotation-dominated operator where the space covers the whole space."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 24, 24, generator=g, dtype=torch.float64) / 24**0.5
    ref = spectral_radius(A)
    got = {}
    for fast in (True, False):
        measures.WARM_FAST_KRYLOV = fast
        try:
            got[fast] = warm_radius(_linear(A), blocks=6)
        finally:
            measures.WARM_FAST_KRYLOV = True
    torch.testing.assert_close(got[True], ref, rtol=1e-8, atol=0)
    torch.testing.assert_close(got[False], ref, rtol=1e-8, atol=0)


def test_transition_measures_matches_one_call_per_transition():
    """The LSC entry point: the same values as transition_measure transition by transition (warm ones grouped,
    exact ones through fast_jacobian)."""
    _, trs = _model_transitions("lstm", width=8)
    got = transition_measures(trs, "radius", "warm", rectangular="norm", state=WarmState(), warm_blocks=8,
                              warm_min_dim=0)
    ref = [measures.transition_measure(tr, "radius", "exact", rectangular="norm") for tr in trs]
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-4, atol=1e-6)


def test_left_vector_is_paired_by_biorthogonality_within_a_cluster():
    """Two left Ritz values within WARM_PAIR_TOL of θ: the one whose vector is most parallel to v is taken (left and
    right eigenvectors of distinct eigenvalues are orthogonal); outside the tolerance the nearest value wins."""
    theta = torch.tensor([1.0 + 0j])
    v = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.complex64)
    vals = torch.tensor([[1.0 + 0j, 0.99 + 0j, 0.5 + 0j]])
    vecs = torch.tensor([[[0.0, 1.0, 0.0], [0.8, 0.6, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.complex64)
    res = torch.tensor([[0.1, 0.2, 0.3]])
    w, r = measures._pick_left(vals, vecs, res, theta, v)
    torch.testing.assert_close(w, vecs[:, 1])  # 0.99 is within 2% and pairs with v; 1.0's vector is orthogonal to v
    assert float(r) == pytest.approx(0.2)
    vals_far = torch.tensor([[1.0 + 0j, 0.9 + 0j, 0.5 + 0j]])
    w, _ = measures._pick_left(vals_far, vecs, res, theta, v)
    torch.testing.assert_close(w, vecs[:, 0])  # 0.9 is 10% away: the nearest value's vector
