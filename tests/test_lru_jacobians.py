"""The LRU's closed-form Jacobians (cells.base.HasStateJacobian) against autograd in float64, the radius of its time
transition (max |λ|) through the warm engine, and its input weights (cells.base.HasInputWeightParts) under LSC's
closed-form rescaling (docs/lsc.md "The LRU")."""
from __future__ import annotations

import math

import pytest
import torch

from stablernn.cells import LRUCell, ResLRUCell
from stablernn.cells.base import HasInputWeightParts, HasStateJacobian, StructuredJacobian
from stablernn.data import DataConfig, load_task
from stablernn.lsc import measures
from stablernn.lsc.measures import WarmState, batch_jacobian, spectral_norm, spectral_radius, transition_measure
from stablernn.lsc.pretrain import lsc_pretrain, rescalable_weights, rescale_weights_
from stablernn.lsc.radii import radii_over_time
from stablernn.lsc.transitions import rnn_transitions
from stablernn.models import DeepRNN, ModelConfig, build_model

torch.set_num_threads(1)
DT = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-12}


def _random_state(cell, B: int, g: torch.Generator):
    st = cell.initial_state(B, dtype=DT)
    return type(st)(*[torch.randn(B, t.shape[-1], generator=g, dtype=DT) for t in st])


def _check_products(op: StructuredJacobian, J: torch.Tensor, g: torch.Generator) -> None:
    """``dense``, ``mv`` and ``rmv`` of ``op`` against the autograd Jacobians ``J [B, n_out, n_in]``."""
    B, n_out, n_in = J.shape
    torch.testing.assert_close(op.dense(), J, **TOL)
    V = torch.randn(B, 3, n_in, generator=g, dtype=DT)
    U = torch.randn(B, 3, n_out, generator=g, dtype=DT)
    torch.testing.assert_close(op.mv(V), V @ J.mT, **TOL)
    torch.testing.assert_close(op.rmv(U), U @ J, **TOL)


def test_of_blocks_products_equal_dense():
    """A purely block-diagonal StructuredJacobian (no shared weight) against the matrix it stands for."""
    g = torch.Generator().manual_seed(0)
    B, k_out, k_in, H = 3, 2, 3, 4
    diag = torch.randn(B, k_out, k_in, H, generator=g, dtype=DT)
    J = torch.zeros(B, k_out, H, k_in, H, dtype=DT)
    for i in range(k_out):
        for j in range(k_in):
            J[:, i, :, j, :] = torch.diag_embed(diag[:, i, j])
    _check_products(StructuredJacobian.of_blocks(diag), J.reshape(B, k_out * H, k_in * H), g)


@pytest.mark.parametrize("reparam", ["exp", "softplus", "best"])
@pytest.mark.parametrize(("n_in", "width", "n_state"), [(5, 5, 5), (4, 6, 3)])
def test_lru_closed_forms_equal_autograd(reparam, n_in, width, n_state):
    """Time (``[Re x, Im x] -> [Re x', Im x']``), encoder and depth (the layer's input -> its state) transitions of a
    2-layer LRU stack, every reparameterisation (``best`` with negative moduli too), square and non-square sizes."""
    torch.manual_seed(0)
    cells = [LRUCell(n_in, width, n_state, reparam=reparam, max_phase=3.0), LRUCell(width, width, n_state,
                                                                                    reparam=reparam)]
    if reparam == "best":
        with torch.no_grad():  # ν² < 1/2 for some: ρ < 0, a phase of π
            cells[0].nu_log[: max(1, n_state // 2)] = 0.3
    model = DeepRNN(cells, input_size=n_in, output_size=3).to(DT).eval()
    g = torch.Generator().manual_seed(1)
    states = [_random_state(c, 3, g) for c in cells]
    x = torch.randn(3, n_in, generator=g, dtype=DT)
    checked = set()
    for tr in rnn_transitions(model, x, states, families=("time", "depth", "encoder")).transitions:
        cell = cells[tr.layer]
        J = batch_jacobian(tr.fn, tr.source.detach(), *[c.detach() for c in tr.context])
        if tr.family == "time":
            assert tr.closed_form is not None
            with torch.no_grad():
                op = tr.closed_form(tr.source, *tr.context)
        else:  # encoder and depth start at the layer's input (the LRU has no ``output(state)``)
            op = cell.input_jacobian(tr.source, states[tr.layer])
        _check_products(op, J, g)
        checked.add((tr.family, tr.layer))
    assert checked == {("time", 0), ("time", 1), ("encoder", 0), ("depth", 1)}


def test_lru_time_jacobian_radius_is_max_abs_lambda():
    torch.manual_seed(0)
    cell = LRUCell(4, 6, 8, max_phase=3.0).to(DT)
    st = _random_state(cell, 2, torch.Generator().manual_seed(0))
    op = cell.state_jacobian(torch.zeros(2, 4, dtype=DT), st)
    r = spectral_radius(op.dense())
    torch.testing.assert_close(r, cell.eigenvalues().abs().max().detach().to(DT).expand(2), rtol=1e-12, atol=0)


def test_res_lru_time_closed_form_and_uncovered_parts():
    """The residual block: its time Jacobian is the inner LRU's (closed form); its input passes a layer norm
    (input_jacobian None); neither cell's output is a function of the state (output_jacobian None)."""
    torch.manual_seed(0)
    block = ResLRUCell(5, 6).to(DT).eval()
    model = DeepRNN([block], input_size=5, output_size=3).to(DT).eval()
    g = torch.Generator().manual_seed(0)
    st = _random_state(block, 3, g)
    tr = next(t for t in rnn_transitions(model, torch.randn(3, 5, generator=g, dtype=DT), [st],
                                         families=("time",)).transitions)
    with torch.no_grad():
        op = tr.closed_form(tr.source, *tr.context)
    _check_products(op, tr.jacobian().detach(), g)
    assert isinstance(block, HasStateJacobian) and isinstance(block.lru, HasStateJacobian)
    assert block.input_jacobian(torch.zeros(3, 5, dtype=DT), st) is None
    assert block.output_jacobian(st) is None and block.lru.output_jacobian(st) is None


def test_overridden_step_is_not_covered():
    class Changed(LRUCell):  # a subclass that changes the step is not described by the LRU's closed form
        def forward(self, x, state):
            return super().forward(2 * x, state)

    class ChangedRes(ResLRUCell):
        def forward(self, x, state):
            return super().forward(2 * x, state)

    ch, chr_ = Changed(3, 4), ChangedRes(4, 4)
    x = torch.zeros(2, 3)
    assert ch.state_jacobian(x, ch.initial_state(2)) is None and ch.input_jacobian(x, ch.initial_state(2)) is None
    assert chr_.state_jacobian(torch.zeros(2, 4), chr_.initial_state(2)) is None


def _lru_step_transitions(width: int, B: int = 4, phase: float = math.pi / 10):
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="lru", layers=2, width=width, max_phase=phase), input_size=8,
                        output_size=10, seq_len=8).eval()
    x = torch.rand(B, 8)
    return model, rnn_transitions(model, x, model.initial_states(B)).transitions


@pytest.mark.parametrize("phase", [math.pi / 10, 3.0])
def test_warm_engine_gives_max_abs_lambda(phase, monkeypatch):
    """The warm engine on the closed-form time transitions (2N = 128: the top eigenvalue is always a complex pair,
    and the ring init puts the next moduli close to it; ``phase`` 3.0 makes them rotation-dominated) agrees with
    max |λ| and with exact eigvals to 1%, from a cold start and after the moduli move (its bases kept)."""
    model, trs = _lru_step_transitions(64, phase=phase)
    monkeypatch.setattr(measures, "CLOSED_FORM_NOGRAD", False)  # the reference Jacobians by autograd
    state = WarmState()
    used = []
    for _ in range(2):
        for tr in trs:
            if tr.family == "time":  # count the closed form's uses
                closed = tr.closed_form
                tr.closed_form = lambda *a, d=closed: used.append(1) or d(*a)
            with torch.no_grad():
                got = transition_measure(tr, "radius", "warm", state=state, rectangular="norm", warm_min_dim=0,
                                         warm_cycles=3, warm_blocks=32)
                J = tr.jacobian()
                ref = spectral_radius(J) if J.shape[-1] == J.shape[-2] else spectral_norm(J)
            assert bool(((got - ref).abs() <= 0.01 * ref).all()), (tr.family, tr.layer, got, ref)
            if tr.family == "time":
                lam = model.cells[tr.layer].eigenvalues().abs().max().item()
                assert bool(((got - lam).abs() <= 0.01 * lam).all()), (got, lam)
        model.cells[0].scale_time_constants(0.2)  # |λ| -> |λ|^5: the pairs move and separate
        model.cells[1].scale_time_constants(0.5)
        trs = rnn_transitions(model, torch.rand(4, 8), model.initial_states(4)).transitions
    assert state.stats.exact == 0 and len(used) == 4  # every time Jacobian came from the closed form


# --- the input weights: LSC's closed-form rescaling ------------------------------------------------------------
def test_lru_input_weights_are_b_re_b_im():
    torch.manual_seed(0)
    lru = build_model(ModelConfig(cell="lru", layers=2, width=8), input_size=4, output_size=3, seq_len=4)
    assert all(isinstance(c, HasInputWeightParts) for c in lru.cells)
    w = rescalable_weights(lru)
    assert set(w) == {("encoder", 0), ("depth", 1), ("decoder", 1)}
    for key, l in ((("encoder", 0), 0), (("depth", 1), 1)):
        assert w[key] == (lru.cells[l].b_re, lru.cells[l].b_im)
    with torch.no_grad():  # a frozen part: the pair is left out
        lru.cells[1].b_im.requires_grad_(False)
    assert ("depth", 1) not in rescalable_weights(lru)
    # the residual block keeps its B to the gradient (its radii depend on the data through the layer norm)
    res = build_model(ModelConfig(cell="reslru", layers=2, width=8), input_size=4, output_size=3, seq_len=4)
    assert not any(isinstance(c, HasInputWeightParts) for c in res.cells)
    assert set(rescalable_weights(res)) == {("decoder", 1)}


def test_rescale_moves_lru_input_radii_exactly():
    """The encoder / depth Jacobians are ``γ [B_re; B_im]``: linear in the pair and independent of the state, so one
    round lands both radii on their targets and leaves the time radii (max |λ|) alone."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="lru", layers=3, width=8), input_size=4, output_size=3, seq_len=4).to(DT)
    x = torch.rand(4, 3, 4, dtype=DT)
    kw = {"engine": "exact", "rectangular": "norm", "steps": 3}
    before = radii_over_time(model, x, **kw).mean()
    radii = {("encoder", 0): before["encoder"][0], ("depth", 1): before["depth"][0], ("depth", 2): before["depth"][1]}
    targets = {"encoder": 0.6, "depth": 0.4}
    done = rescale_weights_(model, radii, targets, low=0.01, high=100.0)
    assert set(done) == set(radii)
    after = radii_over_time(model, x, **kw).mean()
    for fam, target in targets.items():
        for b, a in zip(before[fam], after[fam], strict=True):
            assert abs(b - target) > 0.05
            assert a == pytest.approx(target, rel=1e-6)
    assert after["time"] == pytest.approx(before["time"], rel=1e-12)


def test_lsc_rescaling_brings_a_small_lru_to_target_sooner():
    """With the input pair exposed, ``start+step`` closes the encoder / depth gaps that gradient steps alone leave
    open after the same budget (2x16 LRU, digits rows, 15 steps)."""
    data = load_task(DataConfig(task="digits", layout="rows", batch_size=32))
    data.train.set_epoch(0)
    batches = [b for _, b in zip(range(2), data.train, strict=False)]
    gaps = {}
    for mode in ("off", "start+step"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(cell="lru", layers=2, width=16), input_size=8, output_size=10, seq_len=8)
        rep = lsc_pretrain(model, batches, max_steps=15, progress=False, rescale_weights=mode, engine="exact",
                           time_limit=None)
        gaps[mode] = max(abs(rep.mean_after(f) - rep.target[f]) for f in ("encoder", "depth"))
    assert gaps["start+step"] < 0.05 < gaps["off"], gaps


# --- the time constants: shrinking keeps what is already below the target --------------------------------------
@pytest.mark.parametrize("reparam", ["exp", "softplus", "best"])
def test_shrinking_toward_a_target_keeps_the_eigenvalues_below_it(reparam):
    """``scale_time_constants(m < 1, target)``: |λ| above the target -> |λ|^(1/m), at or below it unchanged (they do
    not set the radius max |λ|); growing (m > 1) and calls without a target scale every |λ|; phases kept."""
    torch.manual_seed(0)
    cell = LRUCell(3, 4, 64, r_min=0.3, r_max=0.99, reparam=reparam)
    lam = cell.eigenvalues().detach()
    r = lam.abs()
    below = r <= 0.6
    assert 0 < int(below.sum()) < r.numel()
    cell.scale_time_constants(0.5, target=0.6)
    new = cell.eigenvalues().detach()
    torch.testing.assert_close(new.abs()[below], r[below], rtol=1e-6, atol=0)
    torch.testing.assert_close(new.abs()[~below], r[~below] ** 2, rtol=1e-5, atol=0)
    torch.testing.assert_close(new / new.abs(), lam / lam.abs(), atol=1e-5, rtol=0)  # the phases
    r = new.abs()
    cell.scale_time_constants(2.0, target=0.6)  # growing: all of them
    torch.testing.assert_close(cell.eigenvalues().detach().abs(), r.sqrt(), rtol=1e-5, atol=0)
    r = cell.eigenvalues().detach().abs()
    cell.scale_time_constants(0.5)  # no target: all of them
    torch.testing.assert_close(cell.eigenvalues().detach().abs(), r**2, rtol=1e-5, atol=0)


def test_time_constant_rescaling_moves_the_lookahead_slow_copy():
    """LSC's per-step time-constant scaling moves ``ν`` and, with it, Lookahead's slow copy of ``ν`` by the same
    amount (else the next sync pulls ``ν`` half-way back); parameters it does not move keep their slow copies."""
    from stablernn.lsc.config import LSCConfig
    from stablernn.lsc.pretrain import _rescale_time_constants, make_lsc_optimizer

    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="lru", layers=2, width=8), input_size=4, output_size=3, seq_len=4)
    opt = make_lsc_optimizer([p for p in model.parameters() if p.requires_grad], LSCConfig())
    trs = [t for t in rnn_transitions(model, torch.rand(2, 4), model.initial_states(2)).transitions
           if t.family == "time"]
    cell = model.cells[1]
    nu, slow = cell.nu_log.detach().clone(), opt.state[cell.nu_log]["slow_params"].clone()
    b_slow = opt.state[cell.b_re]["slow_params"].clone()
    _rescale_time_constants(model, trs, [0.99, 0.99], 0.5, 0.15, opt)
    moved = cell.nu_log.detach() - nu
    assert float(moved.abs().max()) > 0.1  # |λ| above the target shrank
    torch.testing.assert_close(opt.state[cell.nu_log]["slow_params"], slow + moved)
    assert torch.equal(opt.state[cell.b_re]["slow_params"], b_slow)
