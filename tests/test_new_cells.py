"""The neighbouring stable-recurrence methods (issue 15): Li-GRU and its stabilised form, the spiking LSTM, DECOLLE
layers and local losses, low-rank + sparse recurrence, and the LRU's StableSSM reparameterisations.

Every new cell passes the cell contract of ``test_cells.py`` (imported below, run on this file's ``cell`` fixture);
fast paths equal the step loop; each option's defining property is checked.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stablernn import local_losses
from stablernn.cells import (
    DecolleCell,
    GRUCell,
    LIFCell,
    LiGRUCell,
    LRUCell,
    LSTMCell,
    ResLRUCell,
    SpikingLSTMCell,
    check_cell,
    is_local,
    is_low_rank_sparse,
    ligru_step,
    low_rank_sparse_,
    lru_modulus,
    lru_nu,
    spectral_radius,
    spiking_lstm_step,
)
from stablernn.cells.ligru import LN_EPS, batch_normalise, update_running_stats_
from stablernn.data.base import TaskInfo
from stablernn.models import MATRIX_RECURRENT_KINDS, ModelConfig, build_model
from stablernn.train.losses import LocalLoss, local_readouts
from test_cells import (  # the contract tests, run here on the new cells
    test_finite_gradients_through_200_steps,  # noqa: F401
    test_interface_and_shapes,  # noqa: F401
    test_per_sample_time_jacobian_with_torch_func,  # noqa: F401
    test_step_does_not_mutate_module_or_state,  # noqa: F401
    test_wrong_input_width_is_a_clear_error,  # noqa: F401
)

torch.set_num_threads(1)

NEW_CELLS = {
    "ligru": lambda i, h: LiGRUCell(i, h),
    "ligru_stable": lambda i, h: LiGRUCell(i, h, stable=True),
    "spiking_lstm": lambda i, h: SpikingLSTMCell(i, h),
    # in training mode a DECOLLE layer cuts its input's gradient on purpose (tested below); the contract in eval
    "decolle": lambda i, h: DecolleCell(i, h, threshold=0.3).eval(),
    "lstm_lowrank": lambda i, h: low_rank_sparse_(LSTMCell(i, h), 2, 0.5),
    "lif_lowrank": lambda i, h: low_rank_sparse_(LIFCell(i, h, threshold=0.3), 3, 0.6, 0.9),
    "ligru_lowrank": lambda i, h: low_rank_sparse_(LiGRUCell(i, h, stable=True), 2, 0.7),
    "lru_softplus": lambda i, h: LRUCell(i, h, reparam="softplus"),
    "lru_best": lambda i, h: LRUCell(i, h, reparam="best"),
}


@pytest.fixture(params=sorted(NEW_CELLS))
def cell(request) -> nn.Module:
    torch.manual_seed(0)
    return NEW_CELLS[request.param](3, 6).double()


@pytest.mark.parametrize("name", sorted(NEW_CELLS))
def test_deterministic_under_seed_new(name):
    torch.manual_seed(5)
    a = NEW_CELLS[name](3, 6)
    torch.manual_seed(5)
    b = NEW_CELLS[name](3, 6)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


# --- fast paths = step loop --------------------------------------------------------------------------------------
def _loop_vs_fast(cell: nn.Module, train: bool, T: int = 12, B: int = 5) -> None:
    cell.train(train)
    torch.manual_seed(1)
    x = torch.randn(B, T, cell.input_size, dtype=torch.float64)
    s0 = cell.with_stability_state(cell.initial_state(B), 0.3 * torch.randn_like(cell.stability_state(
        cell.initial_state(B))))
    results = []
    for fast in (True, False):
        cell.fast = fast
        cell.zero_grad()
        xx = x.clone().requires_grad_(True)
        out, final = cell.forward_sequence(xx, s0)
        (out.pow(2).sum() + cell.stability_state(final).pow(2).sum()).backward()
        grads = [p.grad.clone() for p in cell.parameters() if p.grad is not None]
        results.append((out.detach(), cell.stability_state(final).detach(), xx.grad, grads))
    (o1, f1, gx1, g1), (o2, f2, gx2, g2) = results
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(f1, f2)
    torch.testing.assert_close(gx1, gx2)
    assert len(g1) == len(g2) > 0
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", ["ligru", "ligru_stable", "spiking_lstm", "ligru_lowrank"])
def test_fast_path_equals_step_loop(name, train):
    torch.manual_seed(0)
    _loop_vs_fast(NEW_CELLS[name](4, 7).double(), train)


def test_decolle_fast_path_equals_step_loop_in_eval_mode():
    torch.manual_seed(0)
    _loop_vs_fast(DecolleCell(4, 7, threshold=0.3).double(), train=False)


def test_ligru_running_stats_match_batchnorm_per_step():
    """forward_sequence's closed-form update = one BatchNorm1d update per time step."""
    torch.manual_seed(0)
    cell = LiGRUCell(3, 4).double().train()
    x = torch.randn(6, 9, 3, dtype=torch.float64)
    bn = nn.BatchNorm1d(8).double().train()
    for t in range(9):
        bn(F.linear(x[:, t], cell.weight_ih))
    for fast in (True, False):
        c = LiGRUCell(3, 4).double().train()
        c.load_state_dict(cell.state_dict())
        c.fast = fast
        c.forward_sequence(x, c.initial_state(6))
        torch.testing.assert_close(c.running_mean, bn.running_mean)
        torch.testing.assert_close(c.running_var, bn.running_var)
    # eval mode: normalisation by the running statistics, no update
    c.eval()
    before = c.running_mean.clone()
    c.forward_sequence(x, c.initial_state(6))
    assert torch.equal(before, c.running_mean)


# --- Li-GRU ------------------------------------------------------------------------------------------------------
def test_ligru_step_by_hand():
    torch.manual_seed(0)
    cell = LiGRUCell(2, 3).double().eval()
    with torch.no_grad():
        cell.running_mean.uniform_(-1, 1)
        cell.running_var.uniform_(0.5, 2)
        cell.bn_weight.uniform_(0.5, 1.5)
        cell.bn_bias.uniform_(-0.5, 0.5)
    x, h = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    p = x @ cell.weight_ih.T
    a = (p - cell.running_mean) / torch.sqrt(cell.running_var + 1e-5) * cell.bn_weight + cell.bn_bias
    rec = h @ cell.weight_hh.T
    z = torch.sigmoid(a[:, :3] + rec[:, :3])
    cand = torch.relu(a[:, 3:] + rec[:, 3:])
    out, _ = cell(x, cell.initial_state(4)._replace(h=h))
    torch.testing.assert_close(out, z * h + (1 - z) * cand)
    # the stabilised step layer-normalises the recurrent term
    lnw, lnb = torch.rand(6, dtype=torch.float64) + 0.5, torch.randn(6, dtype=torch.float64)
    rec_n = (rec - rec.mean(-1, keepdim=True)) / torch.sqrt(rec.var(-1, unbiased=False, keepdim=True) + 1e-5)
    rec_n = rec_n * lnw + lnb
    z2 = torch.sigmoid(a[:, :3] + rec_n[:, :3])
    expect = z2 * h + (1 - z2) * torch.relu(a[:, 3:] + rec_n[:, 3:])
    torch.testing.assert_close(ligru_step(a, h, weight_hh=cell.weight_hh, ln_weight=lnw, ln_bias=lnb), expect)


def test_batch_normalise_training_uses_each_steps_batch():
    p = torch.randn(8, 5, 3, dtype=torch.float64) * 3 + 2
    one = torch.ones(3, dtype=torch.float64)
    out = batch_normalise(p, weight=one, bias=0 * one, running_mean=0 * one, running_var=one, training=True)
    torch.testing.assert_close(out.mean(0), torch.zeros(5, 3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(5, 3, dtype=torch.float64), atol=1e-4, rtol=0)
    r_m, r_v = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    update_running_stats_(p, r_m, r_v)
    assert (r_m > 0).all()  # moved toward the data's mean 2


def test_unstabilised_ligru_explodes_and_the_stable_one_does_not():
    """Recurrent gain 3 on the candidate: the ReLU candidate grows h geometrically in the Li-GRU; the layer-normalised
    recurrent term keeps it O(1) and its gradients finite and moderate (arXiv:2302.10144, §3), with the cell's
    default layer-norm eps 1 (once |U h| ≫ 1 the term is normalised as with eps 1e-5)."""
    torch.manual_seed(0)
    hs, grads = {}, {}
    for stable in (False, True):
        torch.manual_seed(0)
        cell = LiGRUCell(4, 16, stable=stable).double().eval()
        with torch.no_grad():
            cell.weight_hh[16:] *= 3.0
            cell.bn_bias[:16] = -2.0  # update gate mostly open: h follows the candidate
        x = torch.randn(2, 60, 4, dtype=torch.float64)
        x.requires_grad_(True)
        out, _ = cell.forward_sequence(x, cell.initial_state(2))
        hs[stable] = float(out[:, -1].detach().abs().max())
        out[:, -1].sum().backward()
        grads[stable] = float(x.grad[:, 0].norm())
    assert hs[False] > 1e6 and hs[True] < 100, hs
    assert grads[False] > 1e6 * max(grads[True], 1e-12), grads


def _time_radius(cell: LiGRUCell, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Per-sample spectral radius of ∂h[t]/∂h[t-1] of one Li-GRU step."""
    J = torch.func.vmap(torch.func.jacrev(lambda hh, aa: cell._step(aa[None], hh[None])[0]))(h, a)
    return torch.linalg.eigvals(J).abs().amax(-1)


def test_layer_norm_jacobian_is_bounded_by_one_over_sqrt_eps():
    """The bound the stabilised Li-GRU's ln_eps rests on: ‖∂LN(y)/∂y‖ ≤ 1/sqrt(eps) at every scale of y, and it is
    reached as y -> 0 (the scale invariance that made eps = 1e-5 blow up)."""
    torch.manual_seed(0)
    for eps in (1e-5, 1.0):
        for scale in (0.0, 1e-3, 1.0, 1e3):
            y = torch.randn(12, dtype=torch.float64) * scale
            J = torch.func.jacrev(lambda v, e=eps: F.layer_norm(v, v.shape, eps=e))(y)
            norm = float(torch.linalg.matrix_norm(J, 2))
            assert norm <= 1 / math.sqrt(eps) * (1 + 1e-9), (eps, scale, norm)
            if scale == 0.0:  # y = 0: J = (I - 11ᵀ/n) / sqrt(eps), the bound itself
                assert norm == pytest.approx(1 / math.sqrt(eps), rel=1e-9)
        assert norm < 1e-2 / math.sqrt(eps)  # scale 1e3: var ≫ eps, the Jacobian shrinks as 1/|y|


def test_stable_ligru_time_radius_is_bounded_at_small_h():
    """From the zero initial state the time radius of the stabilised Li-GRU is γ‖U‖/sqrt(eps)-sized: > 50 with
    PyTorch's eps 1e-5, < 2 with the cell's default eps 1 (why LSC could not reach 0.5 before; docs/cells.md)."""
    assert LN_EPS == 1.0
    torch.manual_seed(0)
    a, h0 = torch.randn(16, 32, dtype=torch.float64), torch.zeros(16, 16, dtype=torch.float64)
    radii = {}
    for eps in (1e-5, LN_EPS):
        torch.manual_seed(1)
        radii[eps] = _time_radius(LiGRUCell(4, 16, stable=True, ln_eps=eps).double(), a, h0).detach()
    assert float(radii[1e-5].mean()) > 50 and float(radii[LN_EPS].max()) < 2, radii
    assert LiGRUCell(4, 16, stable=True).ln_eps == LN_EPS


def test_ligru_rejects_a_bad_ln_eps():
    with pytest.raises(ValueError, match="ln_eps must be > 0"):
        LiGRUCell(4, 8, stable=True, ln_eps=0.0)


# --- spiking LSTM -------------------------------------------------------------------------------------------------
def test_spiking_lstm_spikes_and_surrogate_gradient():
    torch.manual_seed(0)
    cell = SpikingLSTMCell(3, 8).double()
    x = torch.randn(4, 20, 3, dtype=torch.float64, requires_grad=True)
    out, _ = cell.forward_sequence(x, cell.initial_state(4))
    assert set(out.unique().tolist()) <= {0.0, 1.0} and 0.05 < out.mean() < 0.95
    out.sum().backward()
    assert x.grad.abs().sum() > 0  # the surrogate carries the gradient through the spikes
    a = torch.randn(4, 32, dtype=torch.float64)
    c, h = torch.randn(4, 8, dtype=torch.float64), (torch.rand(4, 8) > 0.5).double()
    h2, c2, _ = spiking_lstm_step(a, c, h, weight_hh=cell.weight_hh, threshold=cell.threshold, spike=cell.spike)
    g = a + h @ cell.weight_hh.T
    torch.testing.assert_close(c2, torch.sigmoid(g[:, 8:16]) * c + (g[:, :8] > 0).double() * torch.tanh(g[:, 16:24]))
    torch.testing.assert_close(h2, ((g[:, 24:] > 0) & (c2 > 0)).double())


def test_spiking_lstm_silent_input_keeps_the_layer_coupled():
    """After a step of silent input from the zero state, each neuron's stored output-gate pre-activation is its bias.
    With gate bias exactly 0 the output spike sits at H(0) = 0 with no path back, and the next time Jacobian is
    diagonal plus a zero block (repeated eigenvalues; LSC's exact-eigenvalue gradient failed on such a net); the
    default bias 0.01 keeps the output gate open, so the cell state couples back through the recurrent weights."""
    from torch.func import jacrev

    for gate_bias, coupled in ((0.0, False), (0.01, True)):
        torch.manual_seed(0)
        cell = SpikingLSTMCell(3, 6, gate_bias=gate_bias).double()
        x = torch.zeros(1, 3, dtype=torch.float64)
        st0 = cell.initial_state(1, dtype=torch.float64)

        def step(s, cell=cell, x=x, st0=st0):
            return cell.stability_state(cell(x, cell.with_stability_state(st0, s))[1])

        s1 = step(cell.stability_state(st0))
        J = jacrev(step)(s1)[0, :, 0, :]
        off_diag = J - torch.diag(torch.diagonal(J))
        assert bool(off_diag.abs().max() > 0) == coupled, (gate_bias, J)


def test_spiking_lstm_gates_start_at_threshold_and_deep_layers_fire():
    """Gate bias 0.01 (the default): the spiking input / output gates fire for about half the steps at init, the
    forget gate keeps its bias 1, and a 5-layer stack still spikes in every layer (the worry with bias ≈ 0 was silent
    deep layers); with gate_bias=1 the gates are open nearly always."""
    cell = SpikingLSTMCell(3, 8)
    H = 8
    assert torch.equal(cell.bias[:H], torch.full((H,), 0.01)) and torch.equal(cell.bias[H:2 * H], torch.ones(H))
    assert torch.equal(cell.bias[2 * H:3 * H], torch.zeros(H))
    assert torch.equal(cell.bias[3 * H:], torch.full((H,), 0.01))
    torch.manual_seed(0)
    x = torch.rand(32, 12, 8)  # non-negative inputs in [0, 1], like pixels

    def gate_rate(gate_bias: float) -> tuple[float, list[float]]:
        torch.manual_seed(1)
        model = build_model(ModelConfig(cell="spiking_lstm", layers=5, width=32), input_size=8, output_size=3)
        first = model.cells[0]
        with torch.no_grad():
            for c in model.cells:
                c.bias[:32] = gate_bias
                c.bias[96:] = gate_bias
            a_i = F.linear(x, first.weight_ih, first.bias)[..., :32]  # layer 1's input gate at h = 0
            outs = model.run(x).layer_outputs
        return float((a_i > 0).float().mean()), [float(o.mean()) for o in outs]

    open0, rates0 = gate_rate(0.01)
    open1, _ = gate_rate(1.0)
    assert 0.3 < open0 < 0.7 and open1 > 0.9, (open0, open1)
    assert min(rates0) > 0.05, rates0


def test_spiking_lstm_works_with_the_firing_rate_tools():
    from stablernn.diagnostics import firing_rates, is_spiking
    from stablernn.snn.rates import fit_initial_rate, spiking_mask

    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="spiking_lstm", layers=2, width=16), input_size=5, output_size=3)
    assert spiking_mask(model) == [True, True] and all(is_spiking(c) for c in model.cells)
    x = torch.randn(8, 15, 5)
    rate = fit_initial_rate(model, [x], 0.2, steps=60)
    rates = firing_rates(model, x)
    assert all(abs(r - 0.2) < 0.1 for r in rates), (float(rate), rates)


# --- DECOLLE ------------------------------------------------------------------------------------------------------
def _decolle_model(layers: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(cell="decolle", layers=layers, width=12, threshold=0.3), input_size=4,
                       output_size=3)


def test_decolle_blocks_errors_between_layers_in_training_only():
    model = _decolle_model()
    assert all(is_local(c) for c in model.cells)
    x = torch.randn(4, 10, 4)
    model.train()
    model(x).sum().backward()
    assert model.cells[0].weight_ih.grad is None and model.cells[1].weight_ih.grad is None
    assert model.cells[2].weight_ih.grad.abs().sum() > 0
    # eval mode is plain LIF: the error reaches the first layer (so LSC / diagnostics see the real depth Jacobian)
    model.zero_grad()
    model.eval()
    model(x).sum().backward()
    assert model.cells[0].weight_ih.grad.abs().sum() > 0


def test_local_losses_train_every_layer():
    model = _decolle_model().train()
    info = TaskInfo(name="t", kind="classify", input_size=4, output_size=3, seq_len=10)
    x, y = torch.randn(4, 10, 4), torch.tensor([0, 1, 2, 0])
    out = model.run(x)
    local = LocalLoss(0.5, 3, seed=1)
    loss = local(out.layer_outputs, y, info)
    loss.backward()
    assert model.cells[0].weight_ih.grad.abs().sum() > 0 and model.cells[1].weight_ih.grad.abs().sum() > 0
    assert model.cells[2].weight_ih.grad is None  # the top layer learns from the task loss
    rs = local_readouts([12, 12], 3, seed=1)
    for a, b in zip(rs, local.readouts, strict=True):
        assert torch.equal(a, b) and not b.requires_grad and a.abs().max() <= 1 / math.sqrt(12)
    ref = torch.stack([F.cross_entropy(F.linear(o, r).mean(1), y) for o, r in zip(out.layer_outputs[:2], rs,
                                                                                  strict=True)]).mean()
    torch.testing.assert_close(loss.detach(), 0.5 * ref.detach())
    assert float(local_losses([], [], y, info)) == 0.0
    with pytest.raises(ValueError, match="local_loss must be a weight >= 0"):
        LocalLoss(-1.0, 3)
    with pytest.raises(ValueError, match="2 layer outputs but 1 local readouts"):
        local_losses(out.layer_outputs[:2], rs[:1], y, info)


def test_fit_with_local_losses_and_decolle(tmp_path):
    from stablernn.data import DataConfig
    from stablernn.train import RunConfig, TrainConfig, fit

    run = RunConfig(name="d", out_dir=str(tmp_path), model=ModelConfig(cell="decolle", layers=2, width=16,
                                                                       threshold=0.5, conditions=("III", "IV")),
                    data=DataConfig(task="digits", batch_size=64),
                    train=TrainConfig(epochs=1, max_batches=3, local_loss=1.0, progress=False, device="cpu"))
    res = fit(run)
    assert math.isfinite(res["val_loss"]) and res["epochs"] == 1


# --- low-rank + sparse --------------------------------------------------------------------------------------------
def test_low_rank_sparse_structure_and_radius():
    torch.manual_seed(0)
    cell = low_rank_sparse_(GRUCell(3, 20), 3, 1.0, radius=0.7)
    assert is_low_rank_sparse(cell)
    blocks = cell.weight_hh.detach().reshape(3, 20, 20)
    for b in blocks:
        assert torch.linalg.matrix_rank(b, rtol=1e-5) == 3  # density 1: exactly rank r (float32 tolerance)
        assert float(spectral_radius(b)) == pytest.approx(0.7, rel=1e-4)
    names = {n for n, _ in cell.named_parameters()}
    assert "weight_hh" not in names and cell.parametrizations.weight_hh.original0.shape == (3, 20, 3)
    sparse = low_rank_sparse_(LSTMCell(3, 40), None, 0.25)
    frac = float((sparse.weight_hh != 0).float().mean())
    assert 0.2 < frac < 0.3
    # default radius: the dense init's (orthogonal blocks: 1)
    for b in sparse.weight_hh.detach().reshape(4, 40, 40):
        assert float(spectral_radius(b)) == pytest.approx(1.0, rel=1e-4)


def test_low_rank_sparse_gradients_reach_the_factors_and_keep_the_mask():
    torch.manual_seed(0)
    cell = low_rank_sparse_(LIFCell(3, 10, threshold=0.2), 2, 0.5)
    mask = cell.parametrizations.weight_hh[0].mask.clone()
    out, _ = cell.forward_sequence(torch.randn(4, 12, 3), cell.initial_state(4))
    out.sum().backward()
    u = cell.parametrizations.weight_hh.original0
    assert u.grad is not None and u.grad.abs().sum() > 0
    with torch.no_grad():
        u.add_(0.1)
    assert torch.equal((cell.weight_hh.reshape(1, 10, 10) != 0) & (mask == 0), torch.zeros_like(mask, dtype=bool))


@pytest.mark.parametrize("kind", MATRIX_RECURRENT_KINDS)
def test_every_matrix_recurrent_kind_takes_rank_and_density(kind):
    torch.manual_seed(0)
    cfg = ModelConfig(cell=kind, layers=2, width=8, recurrent_rank=2, recurrent_density=0.5)
    model = build_model(cfg, input_size=4, output_size=3, seq_len=6)
    assert all(is_low_rank_sparse(c) for c in model.cells)
    out = model(torch.randn(2, 6, 4))
    assert out.shape == (2, 6, 3) and torch.isfinite(out).all()
    again = build_model(cfg, input_size=4, output_size=3, seq_len=6)
    again.load_state_dict(model.state_dict())  # the checkpoint keys of a low-rank model round-trip


@pytest.mark.parametrize("cls", [LSTMCell, GRUCell, LIFCell])
def test_fused_paths_on_low_rank_weights_equal_the_loop(cls):
    torch.manual_seed(0)
    _loop_vs_fast(low_rank_sparse_(cls(4, 7), 2, 0.6).double(), train=True)


def test_low_rank_bad_input():
    with pytest.raises(ValueError, match="apply to cells with a recurrent weight matrix"):
        ModelConfig(cell="lru", recurrent_rank=2)
    with pytest.raises(ValueError, match=r"recurrent_rank must be an integer in 1..width \(8\)"):
        ModelConfig(cell="gru", width=8, recurrent_rank=9)
    with pytest.raises(ValueError, match=r"recurrent_density must be in \(0, 1\]"):
        ModelConfig(cell="gru", recurrent_density=0.0)
    with pytest.raises(ValueError, match="conditions I/II draw dense recurrent weights"):
        ModelConfig(cell="lif", recurrent_density=0.5, conditions=("I",))
    with pytest.raises(ValueError, match="has no recurrent matrix weight_hh"):
        low_rank_sparse_(LRUCell(3, 4), 2)
    with pytest.raises(ValueError, match="already parametrised"):
        low_rank_sparse_(low_rank_sparse_(GRUCell(3, 4), 2), 2)


# --- LRU reparameterisations --------------------------------------------------------------------------------------
@pytest.mark.parametrize("reparam", ["exp", "softplus", "best"])
def test_lru_reparam_modulus_inverse_and_bound(reparam):
    nu = torch.linspace(-30, 30, 2001, dtype=torch.float64)
    rho = lru_modulus(nu, reparam)
    assert (rho < 1).all() and (rho.abs() <= 1).all()  # ``best``: ρ(0) = -1, the one point on the circle
    mod = torch.linspace(0.05, 0.995, 50, dtype=torch.float64)
    torch.testing.assert_close(lru_modulus(lru_nu(mod, reparam), reparam), mod)
    if reparam == "best":
        torch.testing.assert_close(lru_modulus(lru_nu(mod, reparam, sign=-mod), reparam), -mod)
    with pytest.raises(ValueError, match="unknown LRU reparam"):
        lru_modulus(nu, "linear")


def test_lru_reparam_same_init_and_exp_is_the_original_formula():
    eig = {}
    for r in ("exp", "softplus", "best"):
        torch.manual_seed(3)
        cell = LRUCell(4, 6, reparam=r).double()
        eig[r] = cell.eigenvalues()
        if r == "exp":
            torch.testing.assert_close(cell.eigenvalues().abs(), torch.exp(-torch.exp(cell.nu_log)))
    torch.testing.assert_close(eig["softplus"], eig["exp"], atol=1e-6, rtol=0)
    torch.testing.assert_close(eig["best"], eig["exp"], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="choose one of exp, softplus, best"):
        LRUCell(4, 6, reparam="tanh")  # type: ignore[arg-type]
    model = build_model(ModelConfig(cell="reslru", width=8, reparam="best"), input_size=4, output_size=2)
    assert model.cells[0].lru.reparam == "best"


@pytest.mark.parametrize("reparam", ["softplus", "best"])
def test_lru_reparam_scale_time_constants_and_fast_path(reparam):
    torch.manual_seed(0)
    cell = LRUCell(3, 5, reparam=reparam).double()
    with torch.no_grad():
        cell.nu_log[0] = -cell.nu_log[0] if reparam == "best" else cell.nu_log[0]  # ν < 0 keeps its side
    r0 = cell.eigenvalues().abs().detach()
    cell.scale_time_constants(0.5)
    torch.testing.assert_close(cell.eigenvalues().abs().detach(), r0**2)
    _loop_vs_fast(cell, train=True)
    block = ResLRUCell(3, 4, reparam=reparam).double()
    _loop_vs_fast(block, train=False)


@pytest.mark.parametrize("reparam", ["exp", "softplus", "best"])
def test_lru_reparam_gradient_of_the_modulus(reparam):
    """How dρ/dν scales as ρ -> 1 (what StableSSM, arXiv:2311.14495 §3.3, designs the reparameterisation for): like
    (1 - ρ) for ``exp`` and ``softplus``, like 2ν(1 - ρ)² ≈ 2(1 - ρ)^{3/2} for ``best``. Ratios of the derivative
    at ρ = 0.99 and 0.9, from those closed forms: 0.105, 0.110, 0.032."""
    mod = torch.tensor([0.9, 0.99], dtype=torch.float64)
    nu = lru_nu(mod, reparam).requires_grad_(True)
    (g,) = torch.autograd.grad(lru_modulus(nu, reparam).sum(), nu)
    ratio = float(g[1].abs() / g[0].abs())
    expected = {"exp": 0.105, "softplus": 0.110, "best": 0.0324}[reparam]
    assert ratio == pytest.approx(expected, rel=0.03), ratio


# --- config and CLI -----------------------------------------------------------------------------------------------
def test_new_kinds_build_and_check():
    for kind in ("ligru", "ligru_stable", "spiking_lstm", "decolle"):
        model = build_model(ModelConfig(cell=kind, layers=2, width=8), input_size=4, output_size=3)
        for c in model.cells:
            check_cell(c)
    assert isinstance(build_model(ModelConfig(cell="ligru_stable", width=8), input_size=4, output_size=3).cells[0],
                      LiGRUCell)


def test_cli_trains_new_cells_and_options(tmp_path, capsys):
    from stablernn.cli import main

    for extra in (["--cell", "ligru_stable", "--recurrent-rank", "4", "--recurrent-density", "0.5"],
                  ["--cell", "lru", "--reparam", "best"]):
        with pytest.raises(SystemExit) as e:
            main(["train", *extra, "--width", "16", "--epochs", "1", "--max-batches", "2", "--out-dir",
                  str(tmp_path), "--no-progress", "--device", "cpu"])
        assert e.value.code in (0, None)
    assert "test_acc" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["train", "--cell", "lru", "--reparam", "tanh"])
    assert e.value.code == 2
    assert "unknown reparam 'tanh'; choose one of exp, softplus, best" in capsys.readouterr().err



def test_stability_conditions_carry_over_to_decolle_layers():
    """Paper B's conditions read a layer's LIF parameters, so a DECOLLE layer gets exactly the design of the LIF layer
    with the same weights (the local learning changes training, not the layer)."""
    from stablernn.snn.conditions import TaskStats
    from stablernn.snn.design import DesignConfig, design_model

    designs = []
    for kind in ("lif", "decolle"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(cell=kind, layers=2, width=16, threshold=0.5), input_size=8, output_size=3)
        designs.append(design_model(model, TaskStats(0.3, 0.1), DesignConfig(conditions=("I", "II", "III", "IV")),
                                    seed=0))
    for a, b in zip(*designs, strict=True):
        torch.testing.assert_close(a.dampening, b.dampening)
        torch.testing.assert_close(a.sharpness, b.sharpness)
        torch.testing.assert_close(a.weight_hh, b.weight_hh)


def test_low_rank_weight_cannot_be_assigned_a_dense_matrix():
    cell = low_rank_sparse_(GRUCell(3, 4), 2)
    with pytest.raises(RuntimeError, match="cannot be assigned a dense matrix"):
        cell.weight_hh = torch.zeros(12, 4)
