"""Fast whole-sequence paths equal the step loop: outputs, final states and gradients (float64, tight tolerance)."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from stablernn import surrogate
from stablernn.cells import ALIFCell, GRUCell, LIFCell, LRUCell, LSTMCell, ResLRUCell
from stablernn.cells.base import run_steps
from stablernn.cells.fast_gated import gru_cell_sequence, gru_sequence, lstm_cell_sequence, lstm_sequence
from stablernn.cells.fast_spiking import SpikingOptions, spiking_sequence
from stablernn.cells.scan import diagonal_recurrence, diagonal_scan, lru_cell_sequence, lru_sequence
from stablernn.cells.spiking import fast_path_supported, spiking_cell_sequence
from stablernn.models import DeepRNN

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
B, T, IN, N = 3, 34, 4, 5  # T > the backward's 32-step blocks, so a block boundary is crossed


def _random_state(cell: nn.Module, gen: torch.Generator, device: str = "cpu"):
    """A nonzero initial state (requires grad), so gradients to it are tested too."""
    zeros = cell.initial_state(B, device=device, dtype=torch.float64)
    return type(zeros)(*(torch.rand(z.shape, generator=gen, dtype=torch.float64).to(device).requires_grad_()
                         for z in zeros))


def _run(cell: nn.Module, x: torch.Tensor, state, fast: bool):
    """Output, final state and the gradients of a loss reading both, w.r.t. input, state and every parameter."""
    if hasattr(cell, "lru"):
        cell.lru.fast = fast
    else:
        cell.fast = fast
    out, final = cell.forward_sequence(x, state)
    gen = torch.Generator().manual_seed(123)
    w_out = torch.randn(out.shape, generator=gen, dtype=out.dtype).to(out.device)
    loss = (out * w_out).sum() + sum((f * (k + 1.5)).pow(2).sum() for k, f in enumerate(final))
    inputs = [x, *state, *(p for p in cell.parameters() if p.requires_grad)]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return out, final, grads


def _assert_same(cell: nn.Module, x: torch.Tensor, state, rtol: float = 1e-10) -> None:
    out_f, fin_f, g_f = _run(cell, x, state, fast=True)
    out_s, fin_s, g_s = _run(cell, x, state, fast=False)
    torch.testing.assert_close(out_f, out_s, rtol=rtol, atol=rtol)
    for a, b in zip(fin_f, fin_s, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol)
    names = ["x", *(f"state.{f}" for f in state._fields), *(n for n, p in cell.named_parameters() if p.requires_grad)]
    for name, a, b in zip(names, g_f, g_s, strict=True):
        assert (a is None) == (b is None), f"gradient to {name}: fast {a is None}, loop {b is None}"
        if a is not None:
            scale = b.abs().max().clamp(min=1.0)
            torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(scale), msg=f"gradient to {name}")


def _spiking_cell(cls, reset: str, detach: bool, learn: bool, spike="gaussian", **extra) -> nn.Module:
    gen = torch.Generator().manual_seed(7)
    kw = {"reset": reset, "detach_reset": detach, "spike": spike, "learn_tau": learn, "learn_threshold": learn,
              "tau": 1.0 + 6.0 * torch.rand(N, generator=gen), "threshold": 0.2 + 0.5 * torch.rand(N, generator=gen)}
    if cls is ALIFCell:
        kw.update(beta=torch.randn(N, generator=gen), tau_adapt=2.0 + 10.0 * torch.rand(N, generator=gen),
                  learn_beta=learn, learn_tau_adapt=learn)
    kw.update(extra)
    torch.manual_seed(11)
    cell = cls(IN, N, **kw).double()
    with torch.no_grad():  # strong weights, so that neurons spike often and every path carries gradient
        cell.weight_ih.mul_(3.0)
        cell.weight_hh.mul_(2.0)
        cell.bias.uniform_(-0.2, 0.4)
    return cell


def _x(device: str = "cpu", steps: int = T, width: int = IN) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(B, steps, width, generator=gen, dtype=torch.float64).to(device).requires_grad_()


# ---- LIF / ALIF -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "reset", "detach", "learn"),
                         list(itertools.product([LIFCell, ALIFCell], ["subtract", "multiplicative", "mult_leak"],
                                                [True, False], [False, True])))
def test_spiking_fast_path_equals_step_loop(cls, reset, detach, learn):
    cell = _spiking_cell(cls, reset, detach, learn)
    x = _x()
    state = _random_state(cell, torch.Generator().manual_seed(5))
    assert fast_path_supported(cell)
    rate = cell.forward_sequence(x, state)[0].mean().item()
    assert 0.05 < rate < 0.95, f"test network should spike moderately, rate {rate}"
    _assert_same(cell, x, state)


@pytest.mark.parametrize("shape", surrogate.names())
@pytest.mark.parametrize("cls", [LIFCell, ALIFCell])
def test_spiking_fast_path_every_surrogate(cls, shape):
    aliases = getattr(surrogate, "ALIASES", {})  # other libraries' surrogates, set by their own parameter
    spike = surrogate.get(shape) if shape in aliases else surrogate.get(shape, dampening=0.7, sharpness=1.3)
    cell = _spiking_cell(cls, "subtract", False, True, spike=spike)
    _assert_same(cell, _x(), _random_state(cell, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("learnable", [True, "dampening", "sharpness"])
@pytest.mark.parametrize("cls", [LIFCell, ALIFCell])
def test_spiking_fast_path_learnable_surrogate(cls, learnable):
    """Learnable γ/s get the step loop's surrogate-model gradient through the fused path too."""
    gen = torch.Generator().manual_seed(6)
    for shape, reset in (("sigmoid", "subtract"), ("q_pseudospike", "multiplicative")):
        spike = surrogate.get(shape, dampening=0.5 + torch.rand(N, generator=gen, dtype=torch.float64),
                              sharpness=0.5 + torch.rand(N, generator=gen, dtype=torch.float64), learnable=learnable)
        cell = _spiking_cell(cls, reset, False, False, spike=spike)
        assert any(p.requires_grad for p in cell.spike.parameters())
        _assert_same(cell, _x(), _random_state(cell, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("cls", [LIFCell, ALIFCell])
def test_spiking_fast_path_options(cls):
    gen = torch.Generator().manual_seed(2)
    per_neuron = surrogate.get("exponential", dampening=0.3 + torch.rand(N, generator=gen, dtype=torch.float64),
                               sharpness=0.5 + torch.rand(N, generator=gen, dtype=torch.float64))
    for extra in ({"self_connections": True}, {"recurrent": False}, {"spike": per_neuron}):
        for reset, detach in itertools.product(["subtract", "multiplicative", "mult_leak"], [True, False]):
            cell = _spiking_cell(cls, reset, detach, True, **extra)
            _assert_same(cell, _x(), _random_state(cell, torch.Generator().manual_seed(4)))


def test_spiking_fast_path_from_zero_state_and_one_step():
    for steps in (1, 32, 33, 64):
        cell = _spiking_cell(ALIFCell, "subtract", True, True)
        x = _x(steps=steps)
        zero = cell.initial_state(B, dtype=torch.float64)
        _assert_same(cell, x, type(zero)(*(s.clone().requires_grad_() for s in zero)))


@pytest.mark.parametrize("device", DEVICES)
def test_spiking_sequence_function(device):
    """The pure function on explicit tensors, against the step function run by hand."""
    from stablernn.cells.spiking import spiking_step

    cell = _spiking_cell(ALIFCell, "mult_leak", False, False).to(device)
    x = _x(device)
    v0 = torch.zeros(B, N, dtype=torch.float64, device=device)
    cur = torch.nn.functional.linear(x, cell.weight_ih, cell.bias)
    z, v_t, a_t = spiking_sequence(cur, v0, v0, v0, weight_hh=cell.recurrent_weight(), decay=cell.decay,
                                   decay_a=cell.decay_a, threshold=cell.threshold, beta=cell.beta,
                                   reset="mult_leak", detach_reset=False, derivative=cell.spike.derivative)
    v, a, zz, outs = v0, v0, v0, []
    for x_t in x.unbind(1):
        zz, v, a, _ = spiking_step(x_t, v, a, zz, weight_ih=cell.weight_ih, weight_hh=cell.recurrent_weight(),
                                   bias=cell.bias, decay=cell.decay, decay_a=cell.decay_a, threshold=cell.threshold,
                                   beta=cell.beta, reset="mult_leak", detach_reset=False, spike=cell.spike)
        outs.append(zz)
    torch.testing.assert_close(z, torch.stack(outs, 1))
    torch.testing.assert_close(v_t, v)
    torch.testing.assert_close(a_t, a)
    gx_fast = torch.autograd.grad(z.sum() + v_t.sum(), x)[0]
    gx_loop = torch.autograd.grad(torch.stack(outs, 1).sum() + v.sum(), x)[0]
    torch.testing.assert_close(gx_fast, gx_loop)
    # LIF: no adaptation state comes back
    z2, _, a2 = spiking_sequence(cur, v0, None, v0, weight_hh=None, decay=cell.decay, decay_a=None,
                                 threshold=cell.threshold, beta=None, reset="subtract", detach_reset=True,
                                 derivative=cell.spike.derivative)
    assert a2 is None and z2.shape == (B, T, N)


def test_spiking_sequence_bad_input():
    v0 = torch.zeros(B, N)
    kw = {"weight_hh": None, "decay": torch.ones(N), "decay_a": None, "threshold": torch.ones(N), "beta": None,
              "reset": "subtract", "detach_reset": True, "derivative": surrogate.get("gaussian").derivative}
    with pytest.raises(ValueError, match=r"\[batch, time, n\]"):
        spiking_sequence(torch.zeros(B, N), v0, None, v0, **kw)
    with pytest.raises(ValueError, match="at least one time step"):
        spiking_sequence(torch.zeros(B, 0, N), v0, None, v0, **kw)
    with pytest.raises(ValueError, match="needs decay_a and beta"):
        spiking_sequence(torch.zeros(B, 2, N), v0, v0, v0, **kw)
    with pytest.raises(ValueError, match="unknown reset"):
        SpikingOptions("zero", True, torch.sigmoid)
    with pytest.raises(TypeError, match="callable"):
        SpikingOptions("subtract", True, 3.0)
    cell = LIFCell(IN, N)
    with pytest.raises(ValueError, match=r"expects \[batch, time, 4\]"):
        cell.forward_sequence(torch.zeros(B, T, IN + 1), cell.initial_state(B))


def test_spiking_cell_sequence_returns_cell_state():
    cell = _spiking_cell(ALIFCell, "subtract", True, False)
    z, final = spiking_cell_sequence(cell, _x(), cell.initial_state(B, dtype=torch.float64))
    assert type(final).__name__ == "ALIFState" and final.z is not None
    torch.testing.assert_close(final.z, z[:, -1])
    assert type(z.grad_fn).__name__ == "_SpikingSequenceBackward"


def test_fast_path_dispatch():
    """The fused node is used for SpikeFunction spikes (learnable ones included); a user's callable, an overridden
    step or ``fast=False`` fall back to the step loop."""
    x = torch.randn(B, T, IN)

    def uses_fused(cell) -> bool:
        z, _ = cell.forward_sequence(x, cell.initial_state(B))
        return type(z.grad_fn).__name__ == "_SpikingSequenceBackward"

    assert uses_fused(LIFCell(IN, N)) and uses_fused(ALIFCell(IN, N))
    assert not uses_fused(LIFCell(IN, N, fast=False))
    own = LIFCell(IN, N, spike=lambda v: surrogate.get("gaussian")(v))
    assert not fast_path_supported(own) and not uses_fused(own)
    assert uses_fused(LIFCell(IN, N, spike=surrogate.get("gaussian", learnable=True, size=N)))

    class Custom(LIFCell):
        def forward(self, x_t, state):
            return super().forward(x_t, state)

    assert not fast_path_supported(Custom(IN, N)) and not uses_fused(Custom(IN, N))


def test_double_backward_through_fast_path_raises():
    cell = _spiking_cell(LIFCell, "subtract", True, False)
    x = _x()
    z, _ = cell.forward_sequence(x, cell.initial_state(B, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"double backward.*cell\.fast = False"):
        torch.autograd.grad(z.sum(), x, create_graph=True)


def test_backward_twice_with_retain_graph():
    cell = _spiking_cell(ALIFCell, "multiplicative", False, True)
    x = _x()
    z, final = cell.forward_sequence(x, cell.initial_state(B, dtype=torch.float64))
    loss = z.sum() + final.v.sum()
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(g1, g2)


def test_deep_rnn_run_uses_fast_path_and_matches_loop():
    torch.manual_seed(0)
    cells = [_spiking_cell(LIFCell, "subtract", True, True), ALIFCell(N, N, learn_beta=True).double()]
    with torch.no_grad():
        cells[1].weight_ih.mul_(4.0)
    model = DeepRNN(cells, input_size=IN, output_size=3).double()
    x = _x()
    results = []
    for fast in (True, False):
        for c in model.cells:
            c.fast = fast
        logits = model(x)
        grads = torch.autograd.grad(logits.pow(2).sum(), [x, *model.parameters()], allow_unused=True)
        results.append((logits, grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-10)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_spiking_fast_path_float32_close_to_loop():
    """In float32 the fused path reassociates sums, so compare on a case without near-threshold ties."""
    torch.manual_seed(0)
    cell = LIFCell(IN, N, threshold=0.5)
    x = torch.randn(B, 20, IN)
    state = cell.initial_state(B)
    cell.fast = True
    z_f, _ = cell.forward_sequence(x, state)
    cell.fast = False
    z_s, _ = cell.forward_sequence(x, state)
    assert (z_f != z_s).float().mean() < 0.01


# ---- LSTM / GRU -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", [LSTMCell, GRUCell])
def test_gated_fused_equals_step_loop(cls, device):
    torch.manual_seed(0)
    cell = cls(IN, N).double().to(device)
    with torch.no_grad():
        cell.bias_hh.uniform_(-0.5, 0.5)  # nonzero, so the bias gradients are tested too
    x = _x(device)
    _assert_same(cell, x, _random_state(cell, torch.Generator().manual_seed(9), device), rtol=1e-9)


def test_gated_fused_uses_the_cells_own_parameters():
    """No copies: the fused path reads the cell's Parameters, so a change to them changes its output and the
    gradients land on them."""
    torch.manual_seed(0)
    for cls, fn in ((LSTMCell, lstm_cell_sequence), (GRUCell, gru_cell_sequence)):
        cell = cls(IN, N)
        x = torch.randn(B, T, IN)
        out1, _ = fn(cell, x, cell.initial_state(B))
        out1.sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cell.parameters())
        with torch.no_grad():
            cell.weight_hh.mul_(2.0)
        out2, _ = fn(cell, x, cell.initial_state(B))
        assert not torch.allclose(out1, out2)


def test_gated_sequence_functions():
    torch.manual_seed(0)
    lstm, gru = LSTMCell(IN, N).double(), GRUCell(IN, N).double()
    x = _x()
    h0 = torch.zeros(B, N, dtype=torch.float64)
    out, h, c = lstm_sequence(x, h0, h0, weight_ih=lstm.weight_ih, weight_hh=lstm.weight_hh, bias_ih=lstm.bias_ih,
                              bias_hh=lstm.bias_hh)
    ref, st = run_steps(lstm, x, lstm.initial_state(B, dtype=torch.float64))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close((h, c), tuple(st))
    out, h = gru_sequence(x, h0, weight_ih=gru.weight_ih, weight_hh=gru.weight_hh, bias_ih=gru.bias_ih,
                          bias_hh=gru.bias_hh)
    ref, st = run_steps(gru, x, gru.initial_state(B, dtype=torch.float64))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(h, st.h)
    with pytest.raises(ValueError, match=r"expects \[batch, time, 4\]"):
        lstm_cell_sequence(lstm, torch.zeros(B, IN), lstm.initial_state(B))


def test_gated_fast_flag_and_subclass_fall_back():
    class MyGRU(GRUCell):
        def forward(self, x_t, state):
            h, st = super().forward(x_t, state)
            return 2 * h, st

    torch.manual_seed(0)
    cell = MyGRU(IN, N)
    x = torch.randn(B, T, IN)
    out, _ = cell.forward_sequence(x, cell.initial_state(B))
    ref, _ = run_steps(cell, x, cell.initial_state(B))
    torch.testing.assert_close(out, ref)
    assert LSTMCell(IN, N, fast=False).fast is False


# ---- LRU --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recur", [diagonal_scan, diagonal_recurrence])
@pytest.mark.parametrize("steps", [1, 2, 7, 37, 64])
def test_diagonal_scan_equals_loop(steps, recur):
    gen = torch.Generator().manual_seed(steps)
    lam = torch.polar(0.3 + 0.69 * torch.rand(N, generator=gen, dtype=torch.float64),
                      3.0 * torch.rand(N, generator=gen, dtype=torch.float64))
    b = torch.randn(B, steps, N, generator=gen, dtype=torch.complex128)
    x0 = torch.randn(B, N, generator=gen, dtype=torch.complex128)
    leaves = [t.clone().requires_grad_() for t in (lam.real, lam.imag, b.real, b.imag, x0.real, x0.imag)]
    x_re, x_im = recur(*leaves)
    lam_c = torch.complex(leaves[0], leaves[1])
    b_c, x = torch.complex(leaves[2], leaves[3]), torch.complex(leaves[4], leaves[5])
    ref = []
    for t in range(steps):
        x = lam_c * x + b_c[:, t]
        ref.append(x)
    ref = torch.stack(ref, 1)
    torch.testing.assert_close(x_re, ref.real, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_im, ref.imag, rtol=1e-12, atol=1e-12)
    w = torch.randn(ref.shape, generator=gen, dtype=torch.complex128)
    g_fast = torch.autograd.grad((x_re * w.real + x_im * w.imag).sum(), leaves)
    g_ref = torch.autograd.grad((ref.real * w.real + ref.imag * w.imag).sum(), leaves)
    for a, b_ in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b_, rtol=1e-11, atol=1e-11)
    x_re0, _ = recur(lam.real, lam.imag, b.real, b.imag)  # zero initial state
    torch.testing.assert_close(x_re0[:, 0], b.real[:, 0])
    with pytest.raises(ValueError, match="batch, time, N"):
        recur(lam.real, lam.imag, b.real[0], b.imag[0])


def test_diagonal_recurrence_double_backward_raises():
    lam = torch.full((N,), 0.5, dtype=torch.float64)
    b = torch.randn(B, T, N, dtype=torch.float64, requires_grad=True)
    x_re, _ = diagonal_recurrence(lam, lam, b, b)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(x_re.sum(), b, create_graph=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("square", [True, False])
def test_lru_scan_equals_step_loop(square, device):
    torch.manual_seed(0)
    cell = LRUCell(IN, IN if square else N, state_size=6, r_min=0.5, r_max=0.999, max_phase=3.0).double().to(device)
    _assert_same(cell, _x(device), _random_state(cell, torch.Generator().manual_seed(8), device), rtol=1e-9)


def test_res_lru_scan_equals_step_loop():
    torch.manual_seed(0)
    for width in (IN, N):
        cell = ResLRUCell(IN, width).double()
        x = _x(steps=10)  # its step loop is slow (per-step LayerNorm/GLU); the scan itself is tested above
        _assert_same(cell, x, _random_state(cell, torch.Generator().manual_seed(8)), rtol=1e-9)


def test_lru_sequence_functions():
    torch.manual_seed(0)
    cell = LRUCell(IN, N).double()
    x = _x()
    st = cell.initial_state(B, dtype=torch.float64)
    y, re, im = lru_sequence(x, st.re, st.im, nu_log=cell.nu_log, theta=cell.theta, gamma_log=cell.gamma_log,
                             b_re=cell.b_re, b_im=cell.b_im, c_re=cell.c_re, c_im=cell.c_im, d=cell.d)
    ref, final = run_steps(cell, x, st)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close((re, im), tuple(final))
    for method in ("scan", "sequential"):
        y2, final2 = lru_cell_sequence(cell, x, st, method=method)
        torch.testing.assert_close(y2, y)
        torch.testing.assert_close(tuple(final2), (re, im))
    with pytest.raises(ValueError, match="unknown method"):
        lru_cell_sequence(cell, x, st, method="fft")
    with pytest.raises(ValueError, match=r"expects \[batch, time, 4\]"):
        lru_cell_sequence(cell, torch.zeros(B, T, N + 1), st)
