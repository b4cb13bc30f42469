"""The Jacobian engine: per-sample Jacobians of every family equal torch.autograd.functional.jacobian of the same
step computed on the whole batch; measures; the matrix-free engine against the exact one."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.autograd.functional import jacobian

from stablernn.cells import GRUCell, LRUCell
from stablernn.lsc.measures import (
    Transition,
    arnoldi,
    choose_engine,
    matrix_free_norm,
    matrix_free_radius,
    measure_jacobian,
    probe_norm,
    spectral_norm,
    spectral_radius,
    square,
    square_indices,
    transition_measure,
)
from stablernn.lsc.transitions import ffn_transitions, rnn_transitions
from stablernn.models import FFN, DeepRNN, ModelConfig, build_model

torch.set_num_threads(1)
B, T_WARM = 3, 3


class TinyState(NamedTuple):
    h: Tensor


class TinyCell(nn.Module):
    """A user's own cell: implements only the four interface methods (no output())."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.w = nn.Linear(input_size, hidden_size)
        self.u = nn.Linear(hidden_size, hidden_size, bias=False)

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> TinyState:
        return TinyState(torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype or self.w.weight.dtype))

    def forward(self, x: Tensor, state: TinyState) -> tuple[Tensor, TinyState]:
        h = torch.tanh(self.w(x) + self.u(state.h)) * 0.9 + 0.1 * state.h
        return h, TinyState(h)

    def stability_state(self, state: TinyState) -> Tensor:
        return state.h

    def with_stability_state(self, state: TinyState, s: Tensor) -> TinyState:
        return TinyState(s)


def _model(kind: str, **kw: Any) -> nn.Module:
    torch.manual_seed(0)
    if kind == "user":
        m = DeepRNN([TinyCell(5, 7), TinyCell(7, 6)], input_size=5, output_size=4)
    elif kind == "embedding":
        m = build_model(ModelConfig(cell="lstm", layers=3, width=6), input_size=11, output_size=11, tokens=True)
    else:
        extra = {"threshold": 0.2} if kind in ("lif", "alif") else {}
        m = build_model(ModelConfig(cell=kind, layers=3, width=6, **extra, **kw), input_size=5, output_size=4)
    return m.double().eval()


def _warm_states(model: DeepRNN, x: Tensor) -> list[Any]:
    states = model.initial_states(x.shape[0], dtype=torch.float64)
    for t in range(T_WARM):
        _, states, _ = model.step(x[:, t], states)
    return [type(s)(*[p.detach() for p in s]) for s in states]


def _per_sample(func, source: Tensor) -> Tensor:
    """Reference: Jacobian of a whole-batch function at each sample's row, by torch.autograd.functional.jacobian."""
    out = []
    for b in range(source.shape[0]):
        def f(row: Tensor, b: int = b) -> Tensor:
            src = torch.cat([source[:b], row[None], source[b + 1:]])
            return func(src)[b]
        out.append(jacobian(f, source[b]))
    return torch.stack(out)


def _reference(model: DeepRNN, tr: Transition, x_t: Tensor, states: list[Any]) -> Tensor:
    """The same transition written at batch level with the model's own methods (no vmap, no wrapper)."""
    cells = list(model.cells)
    L = len(cells)
    h = model.encode(x_t)
    inputs, new = [], []
    for l, c in enumerate(cells):
        inp = model.layer_input(l, h)
        out, st = c(inp, states[l])
        inputs.append(inp)
        new.append(st)
        h = model.layer_output(l, out, inp)
    l = tr.layer
    if tr.family == "time":
        def func(S: Tensor) -> Tensor:
            st = list(states)
            st[l] = cells[l].with_stability_state(states[l], S)
            return cells[l].stability_state(model.step(x_t, st)[1][l])
        return _per_sample(func, cells[l].stability_state(states[l]))
    if tr.family == "encoder":
        if isinstance(model.encoder, nn.Embedding):
            def func(E: Tensor) -> Tensor:
                return cells[0].stability_state(cells[0](model.layer_input(0, E), states[0])[1])
            return _per_sample(func, model.encode(x_t))

        def func(X: Tensor) -> Tensor:
            return cells[0].stability_state(model.step(X, states)[1][0])
        return _per_sample(func, x_t)
    if tr.family == "depth":
        below = cells[l - 1]
        if hasattr(below, "output"):
            def func(S: Tensor) -> Tensor:
                o = below.output(below.with_stability_state(new[l - 1], S))
                hh = model.layer_output(l - 1, o, inputs[l - 1])
                return cells[l].stability_state(cells[l](model.layer_input(l, hh), states[l])[1])
            return _per_sample(func, below.stability_state(new[l - 1]))

        def func(U: Tensor) -> Tensor:
            return cells[l].stability_state(cells[l](model.layer_input(l, U), states[l])[1])
        return _per_sample(func, tr.source)
    if tr.family == "decoder":
        last = cells[-1]
        if hasattr(last, "output"):
            def func(S: Tensor) -> Tensor:
                o = last.output(last.with_stability_state(new[-1], S))
                return model.decode(model.layer_output(L - 1, o, inputs[-1]))
            return _per_sample(func, last.stability_state(new[-1]))
        return _per_sample(model.decode, tr.source)
    raise AssertionError(tr.family)


KINDS = ["lstm", "gru", "tanh_rnn", "relu_rnn", "lif", "alif", "lru", "reslru", "user", "embedding"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_family_matches_autograd(kind):
    model = _model(kind)
    if kind == "embedding":
        x = torch.randint(0, 11, (B, T_WARM + 1))
    else:
        x = torch.rand(B, T_WARM + 1, 5, dtype=torch.float64) * 2
    states = _warm_states(model, x)
    res = rnn_transitions(model, x[:, T_WARM], states)
    fams = {(tr.family, tr.layer) for tr in res.transitions}
    assert fams == {("encoder", 0), ("time", 0), ("time", 1), ("depth", 1), *(
        {("time", 2), ("depth", 2), ("decoder", 2)} if kind != "user" else {("decoder", 1)})}
    for tr in res.transitions:
        J = tr.jacobian()
        ref = _reference(model, tr, x[:, T_WARM], states)
        assert J.shape == ref.shape, (tr.family, tr.layer)
        torch.testing.assert_close(J, ref, atol=1e-5, rtol=0, msg=f"{kind} {tr.family} layer {tr.layer}")
        assert J.abs().sum() > 0 or (tr.family == "time" and kind in ("lif", "alif"))


def test_residual_and_dropout_models_in_eval_mode():
    torch.manual_seed(1)
    model = build_model(ModelConfig(cell="gru", layers=3, width=6, residual=True, dropout=0.3, encoder="linear"),
                        input_size=5, output_size=4).double().eval()
    x = torch.rand(B, T_WARM + 1, 5, dtype=torch.float64)
    states = _warm_states(model, x)
    for tr in rnn_transitions(model, x[:, T_WARM], states).transitions:
        torch.testing.assert_close(tr.jacobian(), _reference(model, tr, x[:, T_WARM], states), atol=1e-5, rtol=0)


def test_depth_jacobian_of_spiking_layer_runs_through_the_surrogate():
    model = _model("lif")
    x = torch.rand(B, T_WARM + 1, 5, dtype=torch.float64) * 2
    states = _warm_states(model, x)
    depth = next(tr for tr in rnn_transitions(model, x[:, T_WARM], states).transitions if tr.family == "depth")
    J = depth.jacobian()
    # the lower layer's spikes are recomputed from v with their surrogate derivative: J = W_ih diag(f(v - thr))
    below = model.cells[0]
    v = depth.source
    slope = below.spike.derivative(v - below.threshold)
    expected = model.cells[1].weight_ih[None] * slope[:, None, :]
    torch.testing.assert_close(J, expected, atol=1e-10, rtol=0)


def test_lru_time_radius_is_max_abs_lambda():
    torch.manual_seed(0)
    cell = LRUCell(4, 5, 6).double()
    model = DeepRNN([cell], input_size=4, output_size=3).double().eval()
    x = torch.randn(B, 4, dtype=torch.float64)
    tr = next(t for t in rnn_transitions(model, x, model.initial_states(B, dtype=torch.float64)).transitions
          if t.family == "time")
    r = spectral_radius(tr.jacobian())
    torch.testing.assert_close(r, cell.eigenvalues().abs().max().expand(B).double(), atol=1e-10, rtol=0)


def test_ffn_transitions_match_autograd():
    torch.manual_seed(0)
    ffn = FFN(4, 7, input_size=5, output_size=3, activation="tanh").double()
    x = torch.randn(B, 5, dtype=torch.float64)
    trs = ffn_transitions(ffn, x)
    assert [(t.family, t.layer) for t in trs] == [("encoder", 0), ("depth", 1), ("depth", 2), ("depth", 3),
                                                  ("decoder", 3)]
    hs = [x, *ffn.hidden(x)]
    for tr in trs:
        if tr.family == "decoder":
            ref = _per_sample(ffn.out, hs[-1])
        else:
            ref = _per_sample(lambda h, l=tr.layer: ffn.layer_forward(l, h), hs[tr.layer])
        torch.testing.assert_close(tr.jacobian(), ref, atol=1e-10, rtol=0)
    assert [t.layer for t in ffn_transitions(ffn, x, ["depth"], layers=[2])] == [2]


def test_bare_cell_is_a_one_layer_stack():
    torch.manual_seed(0)
    cell = GRUCell(3, 5).double()
    x = torch.randn(B, 3, dtype=torch.float64)
    res = rnn_transitions(cell, x, [cell.initial_state(B)])
    assert {t.family for t in res.transitions} == {"time", "encoder"}
    assert res.logits is None


def test_unknown_family_and_bad_model():
    model = _model("gru")
    with pytest.raises(ValueError, match="unknown transition families"):
        rnn_transitions(model, torch.zeros(2, 5, dtype=torch.float64), model.initial_states(2), ["spatial"])
    with pytest.raises(TypeError, match="neither a stack"):
        rnn_transitions(nn.Linear(2, 2), torch.zeros(2, 2), [])


# --- measures ---------------------------------------------------------------------------------------------------
def test_measures_against_numpy():
    torch.manual_seed(0)
    J = torch.randn(4, 6, 6, dtype=torch.float64)
    ref_r = np.abs(np.linalg.eigvals(J.numpy())).max(-1)
    ref_n = np.linalg.norm(J.numpy(), ord=2, axis=(1, 2))
    np.testing.assert_allclose(spectral_radius(J).numpy(), ref_r, rtol=1e-10)
    np.testing.assert_allclose(spectral_norm(J).numpy(), ref_n, rtol=1e-10)
    p = probe_norm(J, n_probes=16, generator=torch.Generator().manual_seed(0))
    assert torch.all(p <= spectral_norm(J) + 1e-12) and torch.all(p > 0.3 * spectral_norm(J))
    with pytest.raises(ValueError, match="unknown measure"):
        measure_jacobian(J, "trace")  # type: ignore[arg-type]


def test_square_subsampling():
    g = torch.Generator().manual_seed(0)
    r, c = square_indices(10, 4, g)
    assert c is None and r is not None and r.shape == (4,) and torch.all(r[1:] > r[:-1])
    J = torch.randn(2, 3, 9)
    S = square(J, torch.Generator().manual_seed(1))
    assert S.shape == (2, 3, 3)
    cols = square_indices(3, 9, torch.Generator().manual_seed(1))[1]
    torch.testing.assert_close(S, J[:, :, cols])
    assert square_indices(5, 5) == (None, None)


def test_radius_is_differentiable_in_the_weights():
    model = _model("gru")
    x = torch.rand(B, T_WARM + 1, 5, dtype=torch.float64)
    tr = next(t for t in rnn_transitions(model, x[:, 0], _warm_states(model, x)).transitions if t.family == "time")
    spectral_radius(tr.jacobian()).sum().backward()
    assert model.cells[0].weight_hh.grad is not None and model.cells[0].weight_hh.grad.abs().sum() > 0


def _random_transition(n: int, B: int = 4, seed: int = 0, m: int | None = None) -> Transition:
    torch.manual_seed(seed)
    W = (torch.randn(B, m or n, n, dtype=torch.float64) / n**0.5).requires_grad_(True)
    return Transition("time", 0, lambda s, w: torch.tanh(w @ s), torch.randn(B, n, dtype=torch.float64) * 0.5,
                      (W,)), W


def test_arnoldi_is_exact_at_full_dimension():
    torch.manual_seed(0)
    A = torch.randn(2, 7, 7, dtype=torch.float64)
    res = arnoldi(lambda v: torch.einsum("bij,bj->bi", A, v), torch.randn(2, 7, dtype=torch.float64), 50)
    assert res.iterations == 7
    top = torch.linalg.eigvals(res.H).abs().amax(-1)
    torch.testing.assert_close(top, torch.linalg.eigvals(A).abs().amax(-1))


@pytest.mark.parametrize("n", [24])
def test_matrix_free_matches_exact_small(n):
    tr, W = _random_transition(n)
    J = tr.jacobian()
    g = torch.Generator().manual_seed(0)
    # tol=0: run to the full dimension, where Arnoldi is exact (eigenvectors included)
    r_mf, it = matrix_free_radius(tr, max_iter=n, tol=0.0, generator=g)
    n_mf, _ = matrix_free_norm(tr, max_iter=n, tol=0.0, generator=g)
    assert it == 2 * n
    torch.testing.assert_close(r_mf, spectral_radius(J), rtol=1e-6, atol=0)
    torch.testing.assert_close(n_mf, spectral_norm(J), rtol=1e-6, atol=0)
    # the gradient through the converged vectors equals the gradient of the exact radius / norm
    (gw_mf,) = torch.autograd.grad(r_mf.sum() + n_mf.sum(), W)
    (gw_ex,) = torch.autograd.grad(spectral_radius(J).sum() + spectral_norm(J).sum(), W)
    torch.testing.assert_close(gw_mf, gw_ex, rtol=1e-5, atol=1e-8)


def test_matrix_free_rectangular_radius_uses_the_same_square_subsample():
    tr, _ = _random_transition(12, m=20)
    exact = spectral_radius(tr.jacobian(), torch.Generator().manual_seed(3))
    mf, _ = matrix_free_radius(tr, max_iter=12, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(mf, exact, rtol=1e-6, atol=0)


@pytest.mark.slow
def test_matrix_free_within_two_percent_at_width_256():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", layers=2, width=256), input_size=8, output_size=10).eval()
    x = torch.rand(4, 6, 8)
    states = model.initial_states(4)
    for t in range(5):
        _, states, _ = model.step(x[:, t], states)
    states = [type(s)(*[p.detach() for p in s]) for s in states]
    for tr in rnn_transitions(model, x[:, 5], states, ["time", "depth"]).transitions:
        with torch.no_grad():
            J = tr.jacobian()
            r_ex, n_ex = spectral_radius(J), spectral_norm(J)
            r_mf, it_r = matrix_free_radius(tr, max_iter=160, tol=1e-5)
            n_mf, it_n = matrix_free_norm(tr, max_iter=64)
        print(tr.family, tr.layer, "radius iterations", it_r, "norm iterations", it_n)
        assert torch.all((r_mf - r_ex).abs() / r_ex < 0.02)
        assert torch.all((n_mf - n_ex).abs() / n_ex < 0.02)


def test_engine_choice_and_rectangular_option():
    tr, _ = _random_transition(6, m=9)
    assert choose_engine(tr, "auto", exact_max_dim=8) == "exact"
    assert choose_engine(tr, "auto", exact_max_dim=5) == "matrix_free"
    assert choose_engine(tr, "matrix_free") == "matrix_free"
    with pytest.raises(ValueError, match="unknown engine"):
        choose_engine(tr, "fast")  # type: ignore[arg-type]
    with torch.no_grad():
        torch.testing.assert_close(transition_measure(tr, "radius", rectangular="norm"), spectral_norm(tr.jacobian()))
        torch.testing.assert_close(transition_measure(tr, "radius", "matrix_free", rectangular="norm"),
                                   spectral_norm(tr.jacobian()), rtol=1e-4, atol=0)


def test_auto_engine_measures_a_wide_rectangular_norm_matrix_free():
    """A decoder over a large vocabulary is never materialised for its norm (one backward pass per row)."""
    from types import SimpleNamespace

    from stablernn.lsc.measures import choose_engine

    def tr(n_in, n_out):
        return SimpleNamespace(source=torch.zeros(2, n_in), out_dim=lambda: n_out)

    assert choose_engine(tr(64, 10000), "auto", 256, "norm") == "matrix_free"
    assert choose_engine(tr(64, 200), "auto", 256, "norm") == "exact"
    assert choose_engine(tr(64, 10000), "auto", 256, "radius") == "exact"  # square subsample of side 64
    assert choose_engine(tr(300, 300), "auto", 256, "radius") == "matrix_free"
    assert choose_engine(tr(64, 10000), "exact", 256, "norm") == "exact"
