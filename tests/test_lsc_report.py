"""The cheap before/after report (issue 13): ``Transition.jacobian()`` from the cells' closed forms when no gradient is
needed, and the report's radii by it against the autograd reference."""
from __future__ import annotations

import pytest
import torch

from stablernn.lsc import measures
from stablernn.lsc.pretrain import REPORT_WARM_MIN_DIM, lsc_pretrain
from stablernn.lsc.radii import radii_over_time
from stablernn.lsc.transitions import rnn_transitions
from stablernn.models import ModelConfig, build_model

torch.set_num_threads(1)
EXTRA = {"lstm": {}, "gru": {}, "alif": {"threshold": 0.5, "dampening": 0.5}}  # the demo's three cells


def _net(cell: str, width: int = 16):
    torch.manual_seed(0)
    return build_model(ModelConfig(cell=cell, layers=2, width=width, **EXTRA[cell]), input_size=8, output_size=10,
                       seq_len=8).eval()


@pytest.mark.parametrize("cell", list(EXTRA))
def test_nograd_jacobian_comes_from_the_closed_form_and_equals_autograd(cell: str, monkeypatch):
    net = _net(cell)
    x = torch.randn(4, 8)
    states = net.initial_states(4)
    for _ in range(2):  # away from the zero state
        states = net.step(torch.randn(4, 8), states, decode=False).states
    trs = list(rnn_transitions(net, x, states, ["time", "depth"]).transitions)
    assert trs and all(t.closed_form is not None for t in trs)
    for tr in trs:
        calls: list[int] = []
        orig = tr.closed_form
        tr.closed_form = lambda *a, orig=orig, calls=calls: calls.append(1) or orig(*a)
        with torch.no_grad():
            fast = tr.jacobian()
        assert calls, "no closed form used under no_grad"
        monkeypatch.setattr(measures, "CLOSED_FORM_NOGRAD", False)
        with torch.no_grad():
            ref = tr.jacobian()
        monkeypatch.setattr(measures, "CLOSED_FORM_NOGRAD", True)
        torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
        calls.clear()
        with_grad = tr.jacobian()  # with gradient: autograd, differentiable w.r.t. the weights
        assert not calls and with_grad.requires_grad


def test_report_radii_match_the_autograd_reference(monkeypatch):
    """The report (exact engine, closed-form Jacobians) gives the radii of the autograd reference on a 2x64 ALIF
    whose 128-wide (v, a) transitions would have gone to the warm engine before (REPORT_WARM_MIN_DIM)."""
    assert REPORT_WARM_MIN_DIM > 128
    net = _net("alif", 64)
    x = torch.randn(8, 8, 8)
    kw = {"families": ["time", "depth", "encoder", "decoder"], "engine": "exact", "rectangular": "norm"}
    fast = radii_over_time(net, x, **kw).mean()
    monkeypatch.setattr(measures, "CLOSED_FORM_NOGRAD", False)
    ref = radii_over_time(net, x, **kw).mean()
    for fam in ref:
        assert fast[fam] == pytest.approx(ref[fam], rel=1e-5)


def test_lsc_report_before_is_the_exact_radius():
    """lsc_pretrain's report 'before' equals the exact engine's radii on the same batch (2x64 LSTM: 128-wide (h, c)
    time Jacobians, below REPORT_WARM_MIN_DIM)."""
    net = _net("lstm", 64)
    x = torch.randn(8, 8, 8)
    ref = radii_over_time(net, x, families=["time", "depth", "encoder", "decoder"], engine="exact",
                          rectangular="norm").mean()
    rep = lsc_pretrain(net, [x], max_steps=1, progress=False, rescale_weights="off")
    for fam in ref:
        assert rep.before[fam] == pytest.approx(ref[fam], rel=1e-5)


def test_deflate_keeps_the_nonzero_eigenvalues():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    J = torch.zeros(3, 9, 9, dtype=torch.float64)
    keep = torch.tensor([0, 2, 3, 5, 6, 8])
    J[:, keep[:, None], keep] = A
    J[:, 1, keep] = torch.randn(3, 6, generator=g, dtype=torch.float64)  # index 1: a zero column, a nonzero row
    J[:, keep, 4] = torch.randn(3, 6, generator=g, dtype=torch.float64)  # index 4: a zero row, a nonzero column
    small = measures.deflate(J)
    assert small.shape == (3, 6, 6)
    torch.testing.assert_close(measures.spectral_radius(J), torch.linalg.eigvals(A).abs().amax(-1))
    torch.testing.assert_close(torch.linalg.eigvals(J).abs().amax(-1), torch.linalg.eigvals(A).abs().amax(-1))
    full = torch.randn(2, 4, 4, generator=g)
    assert measures.deflate(full) is full
    assert measures.deflate(torch.zeros(2, 3, 3)).shape == (2, 3, 3)  # all zero: left as it is


def test_lstm_depth_radius_by_deflation_equals_eigvals():
    net = _net("lstm", 16)
    states = net.initial_states(4)
    states = net.step(torch.randn(4, 8), states, decode=False).states
    tr = next(t for t in rnn_transitions(net, torch.randn(4, 8), states, ["depth"]).transitions)
    with torch.no_grad():
        J = tr.jacobian()
        assert measures.deflate(J).shape[-1] == 16  # the c columns (and then nothing else) dropped
        torch.testing.assert_close(measures.spectral_radius(J), torch.linalg.eigvals(J).abs().amax(-1))
    r = measures.spectral_radius(tr.jacobian())  # with gradient: the full matrix, differentiable
    assert r.requires_grad


def test_report_batch_measures_the_first_examples_only(monkeypatch):
    """``report_batch`` limits the before/after radii to the first examples of the first batch: the report then
    equals radii_over_time on those examples, and the LSC steps still use ``batch_size``."""
    import stablernn.lsc.pretrain as lsc_mod

    seen: list[int] = []
    real = lsc_mod.radii_over_time
    monkeypatch.setattr(lsc_mod, "radii_over_time", lambda m, x, **k: seen.append(x.shape[0]) or real(m, x, **k))
    x = torch.rand(8, 6, 8)
    net = _net("gru")
    rep = lsc_pretrain(net, x, max_steps=2, progress=False, report_batch=3, rescale_weights="off", engine="exact")
    assert seen[0] == 3 and seen[-1] == 3  # before, after
    ref = radii_over_time(net, x[:3], families=list(rep.target), engine="exact", steps=16).mean()
    for fam, vals in rep.after.items():
        assert vals == pytest.approx(ref[fam], rel=1e-5), fam
    with pytest.raises(ValueError, match="report_batch"):
        lsc_pretrain(_net("gru"), x, max_steps=1, progress=False, report_batch=0)
