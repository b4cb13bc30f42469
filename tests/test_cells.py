"""Contract tests every cell must pass, plus hand-computed LIF/ALIF traces for each reset kind."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from stablernn import surrogate
from stablernn.cells import (
    ALIFCell,
    ElmanCell,
    GRUCell,
    LIFCell,
    LRUCell,
    LSTMCell,
    ResLRUCell,
    check_cell,
    decay_from_tau,
    run_steps,
    tau_from_decay,
)
from user_cell import LeakyTanhCell

CELLS = {
    "elman_relu": lambda i, h: ElmanCell(i, h, "relu"),
    "elman_sigmoid": lambda i, h: ElmanCell(i, h, "sigmoid"),
    "elman_tanh": lambda i, h: ElmanCell(i, h, "tanh"),
    "elman_swish": lambda i, h: ElmanCell(i, h, "swish"),
    "lstm": LSTMCell,
    "gru": GRUCell,
    "lif": lambda i, h: LIFCell(i, h, threshold=0.3),
    "alif": lambda i, h: ALIFCell(i, h, threshold=0.3, tau_adapt=10.0),
    "lif_mult": lambda i, h: LIFCell(i, h, threshold=0.3, reset="multiplicative", detach_reset=False),
    "alif_multleak": lambda i, h: ALIFCell(i, h, threshold=0.3, reset="mult_leak"),
    "lru": LRUCell,
    "reslru": ResLRUCell,
}


@pytest.fixture(params=sorted(CELLS))
def cell(request) -> nn.Module:
    torch.manual_seed(0)
    return CELLS[request.param](3, 6).double()


def test_interface_and_shapes(cell):
    check_cell(cell)
    state = cell.initial_state(4)
    out, new = cell(torch.randn(4, 3, dtype=torch.float64), state)
    assert out.shape == (4, 6)
    assert type(new) is type(state)
    assert all(t.shape[0] == 4 for t in new)
    seq, _final = cell.forward_sequence(torch.randn(4, 9, 3, dtype=torch.float64), state)
    assert seq.shape == (4, 9, 6)


def test_step_does_not_mutate_module_or_state(cell):
    state = cell.initial_state(2)
    state = cell.with_stability_state(state, torch.randn_like(cell.stability_state(state)))
    before_state = [t.clone() for t in state]
    before_params = {k: v.clone() for k, v in cell.state_dict().items()}
    cell(torch.randn(2, 3, dtype=torch.float64), state)
    assert all(torch.equal(a, b) for a, b in zip(before_state, state, strict=True))
    assert all(torch.equal(before_params[k], v) for k, v in cell.state_dict().items())


def test_deterministic_under_seed(cell):
    name = type(cell).__name__
    ctor = next(f for k, f in CELLS.items() if type(f(3, 6)).__name__ == name)
    torch.manual_seed(5)
    a = ctor(3, 6)
    torch.manual_seed(5)
    b = ctor(3, 6)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_finite_gradients_through_200_steps(cell):
    x = torch.randn(3, 200, 3, dtype=torch.float64, requires_grad=True)
    out, _ = run_steps(cell, x, cell.initial_state(3))
    out.pow(2).mean().backward()
    assert torch.isfinite(x.grad).all()
    grads = [p.grad for p in cell.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_per_sample_time_jacobian_with_torch_func(cell):
    """vmap(jacrev(step)) over the stability state, as LSC uses it, equals the autograd Jacobian per sample."""
    B = 3
    x = torch.randn(B, 3, dtype=torch.float64)
    s0 = cell.stability_state(cell.initial_state(B))
    s = s0 + 0.5 * torch.randn_like(s0)
    params = dict(cell.named_parameters()) | dict(cell.named_buffers())

    def time_step(s1: Tensor, x1: Tensor) -> Tensor:
        st = cell.with_stability_state(cell.initial_state(1, dtype=s1.dtype), s1[None])
        _, new = functional_call(cell, params, (x1[None], st))
        return cell.stability_state(new)[0]

    J = vmap(jacrev(time_step))(s, x)
    assert J.shape == (B, s.shape[1], s.shape[1])
    for b in range(B):
        ref = torch.autograd.functional.jacobian(lambda v, b=b: time_step(v, x[b]), s[b])
        torch.testing.assert_close(J[b], ref)


def test_wrong_input_width_is_a_clear_error(cell):
    with pytest.raises(ValueError, match=r"\[batch, 3\]"):
        cell(torch.randn(2, 5, dtype=torch.float64), cell.initial_state(2))


@pytest.mark.parametrize("bad", [0, -4])
def test_non_positive_width_rejected(bad):
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        LSTMCell(3, bad)


# --- golden traces ---------------------------------------------------------------------------------------------
def _one_neuron(cls, reset: str, **kw) -> nn.Module:
    cell = cls(1, 1, tau=1.0 / math.log(2.0), threshold=1.0, reset=reset, spike=surrogate.get("fast_sigmoid"),
               **kw).double()  # decay exactly 0.5
    with torch.no_grad():
        cell.weight_ih.fill_(0.8)
    return cell


def _trace(cell, steps: int = 4) -> list[tuple[float, ...]]:
    state, rows = cell.initial_state(1, dtype=torch.float64), []
    for _ in range(steps):
        z, state = cell(torch.ones(1, 1, dtype=torch.float64), state)
        rows.append((*tuple(round(t.item(), 6) for t in state[:-1]), z.item()))
    return rows


@pytest.mark.parametrize("reset,expected", [
    # v = 0.5 v + 0.8 - 1 * z_prev; z = v > 1
    ("subtract", [(0.8, 0.0), (1.2, 1.0), (0.4, 0.0), (1.0, 0.0)]),
    # v = (0.5 v + 0.8)(1 - z_prev)
    ("multiplicative", [(0.8, 0.0), (1.2, 1.0), (0.0, 0.0), (0.8, 0.0)]),
    # v = 0.5 v (1 - z_prev) + 0.8
    ("mult_leak", [(0.8, 0.0), (1.2, 1.0), (0.8, 0.0), (1.2, 1.0)]),
])
def test_lif_golden_trace(reset, expected):
    assert _trace(_one_neuron(LIFCell, reset)) == expected


@pytest.mark.parametrize("reset,expected", [
    # a = 0.5 a + 0.5 z_prev; thr = 1 + 1 * a; v as for LIF with the reset scaled by the current thr
    # t1: a 0, v .8 | t2: a 0, v 1.2 -> spike | t3: a .5, thr 1.5, v .6+.8-1.5 = -.1 | t4: a .25, v -.05+.8 = .75
    ("subtract", [(0.8, 0.0, 0.0), (1.2, 0.0, 1.0), (-0.1, 0.5, 0.0), (0.75, 0.25, 0.0)]),
    # t3: v = (.6 + .8) * 0 = 0 | t4: v = .8, thr 1.25
    ("multiplicative", [(0.8, 0.0, 0.0), (1.2, 0.0, 1.0), (0.0, 0.5, 0.0), (0.8, 0.25, 0.0)]),
    # t3: v = 0 + .8 = .8, thr 1.5 | t4: v = .4 + .8 = 1.2 < thr 1.25: no spike
    ("mult_leak", [(0.8, 0.0, 0.0), (1.2, 0.0, 1.0), (0.8, 0.5, 0.0), (1.2, 0.25, 0.0)]),
])
def test_alif_golden_trace(reset, expected):
    cell = _one_neuron(ALIFCell, reset, beta=1.0, tau_adapt=1.0 / math.log(2.0))
    assert _trace(cell) == expected


def test_detach_reset_cuts_only_the_reset_path():
    torch.manual_seed(0)
    kw = {"threshold": 0.2, "tau": 5.0}
    a, b = LIFCell(2, 3, detach_reset=True, **kw).double(), LIFCell(2, 3, detach_reset=False, **kw).double()
    b.load_state_dict(a.state_dict())
    v = torch.full((1, 3), 0.5, dtype=torch.float64, requires_grad=True)  # above threshold: z_prev = 1 via SG
    grads = []
    for cell in (a, b):
        st = cell.with_stability_state(cell.initial_state(1, dtype=torch.float64), v)
        _, new = cell(torch.zeros(1, 2, dtype=torch.float64), st)
        (g,) = torch.autograd.grad(new.v.sum(), v)
        grads.append(g)
    assert not torch.allclose(grads[0], grads[1])  # the reset path contributes -thr * f(v - thr)


def test_no_self_connections_by_default():
    cell = LIFCell(2, 4)
    assert torch.all(torch.diagonal(cell.recurrent_weight()) == 0)
    assert torch.any(torch.diagonal(LIFCell(2, 4, self_connections=True).recurrent_weight()) != 0)


def test_time_constant_conversion_roundtrip():
    tau = torch.tensor([0.1, 1.0, 20.0, 500.0], dtype=torch.float64)
    torch.testing.assert_close(tau_from_decay(decay_from_tau(tau)), tau)
    assert decay_from_tau(20.0).item() == pytest.approx(math.exp(-1 / 20))


def test_bad_spiking_options():
    with pytest.raises(ValueError, match="tau must be > 0"):
        LIFCell(2, 3, tau=0.0)
    with pytest.raises(ValueError, match="unknown reset"):
        LIFCell(2, 3, reset="hard")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="per-neuron vector of length 3"):
        ALIFCell(2, 3, beta=torch.ones(4))


def test_lru_time_radius_is_max_eigenvalue_modulus():
    torch.manual_seed(1)
    cell = LRUCell(3, 5, r_min=0.5, r_max=0.9).double()
    lam = cell.eigenvalues()
    assert torch.all(lam.abs() >= 0.5 - 1e-9) and torch.all(lam.abs() <= 0.9 + 1e-9)
    s = torch.randn(1, 10, dtype=torch.float64)

    def f(s1):
        return cell.stability_state(cell(torch.zeros(1, 3, dtype=torch.float64),
                                         cell.with_stability_state(None, s1))[1])

    J = torch.autograd.functional.jacobian(f, s)[0, :, 0, :]
    assert torch.linalg.eigvals(J).abs().max().item() == pytest.approx(lam.abs().max().item(), rel=1e-9)


# --- a user's own cell ----------------------------------------------------------------------------------------
def test_user_cell_passes_the_contract_and_trains():
    from stablernn.data import DataConfig, load_task
    from stablernn.models import DeepRNN
    from stablernn.train import RunConfig, TrainConfig, fit

    torch.manual_seed(0)
    check_cell(LeakyTanhCell(8, 32))
    data = load_task(DataConfig(task="digits", batch_size=64))
    model = DeepRNN([LeakyTanhCell(8, 32), LeakyTanhCell(32, 32)], input_size=8, output_size=10)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        res = fit(RunConfig(name="user", out_dir=d, train=TrainConfig(epochs=3, lr=1e-2, progress=False)),
                  data=data, model=model)
    assert res["test_acc"] > 0.5  # chance is 0.1


# --- scale_time_constants: the optional hook LSC uses to move a leak-bound time radius --------------------------
def test_scale_time_constants_spiking():
    from stablernn.cells import ALIFCell, LIFCell

    lif = LIFCell(3, 5, tau=20.0)
    d0 = lif.decay.clone()
    lif.scale_time_constants(0.5)
    assert torch.allclose(lif.tau, torch.full((5,), 10.0))
    assert torch.allclose(lif.decay, d0 ** 2)  # δ^(1/m)
    alif = ALIFCell(3, 5, tau=20.0, tau_adapt=100.0, learn_tau=True)
    alif.scale_time_constants(1.1)
    assert torch.allclose(alif.tau, torch.full((5,), 22.0)) and torch.allclose(alif.tau_adapt, torch.full((5,), 110.0))
    assert isinstance(alif.tau, torch.nn.Parameter) and alif.tau.grad is None
    with pytest.raises(ValueError, match="> 0"):
        lif.scale_time_constants(0.0)


def test_scale_time_constants_lru():
    from stablernn.cells import LRUCell, ResLRUCell

    torch.manual_seed(0)
    cell = LRUCell(3, 4, 6)
    lam = cell.eigenvalues().detach()
    cell.scale_time_constants(0.5)
    new = cell.eigenvalues().detach()
    assert torch.allclose(new.abs(), lam.abs() ** 2, atol=1e-6)  # |λ| -> |λ|^(1/m)
    assert torch.allclose(new.angle(), lam.angle(), atol=1e-6)
    block = ResLRUCell(4, 4)
    r0 = block.lru.eigenvalues().abs().detach()
    block.scale_time_constants(2.0)
    assert torch.allclose(block.lru.eigenvalues().abs().detach(), r0.sqrt(), atol=1e-6)
    with pytest.raises(ValueError, match="> 0"):
        cell.scale_time_constants(-1.0)


def test_scale_time_constants_stops_at_the_shortest_time_constant():
    from stablernn.cells import MIN_TIME_CONSTANT, ALIFCell, LRUCell

    alif = ALIFCell(3, 5, tau=0.2, tau_adapt=0.3)
    alif.scale_time_constants(0.01)
    assert torch.allclose(alif.tau, torch.full((5,), MIN_TIME_CONSTANT))
    assert torch.allclose(alif.tau_adapt, torch.full((5,), MIN_TIME_CONSTANT))
    lru = LRUCell(3, 4)
    lru.scale_time_constants(1e-6)
    tc = -1.0 / lru.eigenvalues().abs().log()
    assert torch.allclose(tc, torch.full_like(tc, MIN_TIME_CONSTANT), rtol=1e-4)


def test_alif_adaptation_stops_shrinking_at_the_target_decay():
    """δ_a below the target would raise the adaptation feedback eigenvalue δ_a - (1 - δ_a)βσ' toward -β."""
    from stablernn.cells import ALIFCell
    from stablernn.cells.spiking import tau_from_decay

    stop = float(tau_from_decay(0.5))  # 1.4427 steps
    alif = ALIFCell(3, 3, tau=20.0, tau_adapt=torch.tensor([4.0, 2.5, 1.0]))
    alif.scale_time_constants(0.5, target=0.5)
    assert torch.allclose(alif.tau_adapt, torch.tensor([2.0, stop, 1.0]))  # halved / stopped / already shorter
    assert torch.allclose(alif.tau, torch.full((3,), 10.0))  # τ has no such floor
    alif.scale_time_constants(0.5, target=1.0)  # target 1: τ_a does not shrink at all
    assert torch.allclose(alif.tau_adapt, torch.tensor([2.0, stop, 1.0]))
    alif.scale_time_constants(2.0, target=0.5)  # growing is not bounded
    assert torch.allclose(alif.tau_adapt, torch.tensor([4.0, 2 * stop, 2.0]))


def test_lstm_scale_time_constants_moves_every_forget_gate_leak():
    """τ = -1/log f of every unit's forget gate (at zero input) scales by m, through the bias; other gates, the
    weights and the recurrent bias stay; the fused and the step paths still agree."""
    from stablernn.cells import MIN_TIME_CONSTANT, LSTMCell
    from stablernn.cells.base import ScalesTimeConstants

    torch.manual_seed(0)
    cell = LSTMCell(3, 5)
    H = 5
    with torch.no_grad():
        cell.bias_hh.uniform_(-1.0, 1.0)
    assert isinstance(cell, ScalesTimeConstants)

    def tau() -> Tensor:
        return -1.0 / torch.nn.functional.logsigmoid(cell.bias_ih[H:2 * H] + cell.bias_hh[H:2 * H])

    before, hh, w = tau().detach().clone(), cell.bias_hh.detach().clone(), cell.weight_hh.detach().clone()
    others = torch.cat([cell.bias_ih[:H], cell.bias_ih[2 * H:]]).detach().clone()
    cell.scale_time_constants(0.5, target=0.5)
    assert torch.allclose(tau(), 0.5 * before, rtol=1e-4)
    assert torch.equal(cell.bias_hh, hh) and torch.equal(cell.weight_hh, w)
    assert torch.equal(torch.cat([cell.bias_ih[:H], cell.bias_ih[2 * H:]]), others)
    cell.scale_time_constants(3.0)
    assert torch.allclose(tau(), 1.5 * before, rtol=1e-4)
    cell.scale_time_constants(1e-6)  # never below the shortest time constant
    assert torch.allclose(tau(), torch.full((H,), MIN_TIME_CONSTANT), rtol=1e-4)
    x, s = torch.randn(2, 4, 3), cell.initial_state(2)
    from stablernn.cells.base import run_steps

    assert torch.allclose(cell.forward_sequence(x, s)[0], run_steps(cell, x, s)[0], atol=1e-5)
    with pytest.raises(ValueError, match="> 0"):
        cell.scale_time_constants(0.0)
