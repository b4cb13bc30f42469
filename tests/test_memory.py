"""Linear memory capacity and readout-size scaling (dynamics/memory.py)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from stablernn import ElmanCell, ModelConfig, build_model, check_cell
from stablernn.dynamics.memory import (
    collect_features,
    input_vector,
    memory_capacity,
    memory_capacity_from_features,
    memory_capacity_from_split,
    memory_split,
    network_capacity,
    readout_scaling,
    uniform_drive,
)

torch.set_num_threads(1)


class XState(NamedTuple):
    x: Tensor


class DelayLineCell(nn.Module):
    """A shift register of N units (a user cell): x[t] = (u[t], x_0[t-1], ..., x_{N-2}[t-1])."""

    def __init__(self, n: int):
        super().__init__()
        self.input_size, self.hidden_size = 1, n

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return XState(torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype))

    def forward(self, u, state):
        x = torch.cat([u, state.x[:, :-1]], dim=1)
        return x, XState(x)

    def stability_state(self, state):
        return state.x

    def with_stability_state(self, state, s):
        return XState(s)


class NoiseCell(DelayLineCell):
    """A 'network' whose state is fresh noise, independent of its input."""

    def __init__(self, n: int, seed: int = 0):
        super().__init__(n)
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, u, state):
        x = torch.randn(state.x.shape, generator=self.gen, dtype=state.x.dtype)
        return x, XState(x)


def test_user_cells_satisfy_the_interface():
    check_cell(DelayLineCell(5))
    check_cell(NoiseCell(5))


def test_delay_line_memory_capacity_is_its_size():
    N = 20
    # with the current input counted (lag 0), a shift register of N units recalls exactly N inputs
    full = memory_capacity(DelayLineCell(N), k_max=2 * N, min_lag=0, n_steps=1500, streams=4)
    assert full.total == pytest.approx(N, rel=0.01)
    # ReservoirPy counts lags from 1: the same register holds u(t-1) .. u(t-N+1)
    mc = memory_capacity(DelayLineCell(N), k_max=2 * N, n_steps=1500, streams=4)
    assert mc.total == pytest.approx(N - 1, rel=0.01)
    assert np.allclose(mc.per_lag[: N - 1], 1.0, atol=1e-6)
    assert np.all(mc.per_lag[N - 1:] < 0.01)
    assert list(mc.lags) == list(range(1, 2 * N + 1))


def test_noise_network_has_no_memory():
    mc = memory_capacity(NoiseCell(20), k_max=40, n_steps=2000, streams=4)
    assert mc.total < 0.2, mc.total
    assert np.all((mc.per_lag >= 0) & (mc.per_lag <= 1))


@pytest.mark.parametrize("cell", ["gru", "alif", "lstm"])
def test_per_lag_capacities_are_in_unit_interval_and_decay(cell):
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell=cell, layers=2, width=16), input_size=3, output_size=2, seq_len=20)
    mc = memory_capacity(model, k_max=30, n_steps=800, streams=4)
    assert mc.per_lag.shape == (30,)
    assert np.all((mc.per_lag >= 0) & (mc.per_lag <= 1))
    assert mc.total == pytest.approx(mc.per_lag.sum())
    assert mc.per_lag[:3].mean() > mc.per_lag[-5:].mean()  # recent inputs are remembered better
    assert mc.total <= mc.n_features


def test_state_and_output_features():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="lstm", layers=2, width=6), input_size=3, output_size=2)
    u = uniform_drive(50, 2, seed=1)
    state = collect_features(model, u)
    out = collect_features(model, u, features="output")
    assert state.shape == (2, 50, 24) and out.shape == (2, 50, 12)  # (h, c) per layer vs h per layer
    assert torch.allclose(state[..., :6], out[..., :6])  # layer 1's h is in both
    cell = ElmanCell(4, 7)
    assert collect_features(cell, u).shape == (2, 50, 7)


def test_input_vector_is_fixed_random_signs():
    cell = ElmanCell(5, 3)
    w = input_vector(cell, seed=3, scale=0.5)
    assert torch.equal(w, input_vector(cell, seed=3, scale=0.5))
    assert set(w.abs().tolist()) == {0.5}
    token_model = build_model(ModelConfig(cell="gru", layers=1, width=4), input_size=10, output_size=10,
                              tokens=True)
    with pytest.raises(ValueError, match="token ids"):
        input_vector(token_model)


def test_uniform_drive_is_seeded_and_in_range():
    u = uniform_drive(1000, 3, seed=5)
    assert u.shape == (3, 1000) and u.min() >= -1 and u.max() <= 1
    assert torch.equal(u, uniform_drive(1000, 3, seed=5))
    assert abs(float(u.mean())) < 0.05 and float(u.var()) == pytest.approx(1 / 3, rel=0.05)


def test_split_and_subsets():
    u = uniform_drive(600, 2, seed=0)
    X = collect_features(DelayLineCell(8), u)
    split = memory_split(X, u, k_max=10, test_fraction=0.25)
    assert split.train.n + split.test.n == 2 * (600 - 10)
    # any subset of 3 register cells recalls exactly 3 lags (or 2 if it holds the current input)
    idx = torch.tensor([1, 4, 6])
    mc = memory_capacity_from_split(split, idx)
    assert mc.total == pytest.approx(3, abs=0.02) and mc.n_features == 3
    assert memory_capacity_from_split(split, torch.tensor([0, 2])).total == pytest.approx(1, abs=0.02)
    direct = memory_capacity_from_features(X, u, 10, test_fraction=0.25)
    assert direct.total == pytest.approx(memory_capacity_from_split(split).total)


def test_ridge_chosen_on_validation_time_resists_overfitting():
    """ALIF states (rare spikes, adaptation variables) overfit a tiny ridge; the penalty chosen on validation time
    (never the test time) recalls better on the test time."""
    from stablernn.dynamics.memory import RIDGE_GRID, choose_ridge

    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="alif", layers=2, width=64), input_size=8, output_size=10, seq_len=8)
    u = uniform_drive(1200, 4, seed=0)
    split = memory_split(collect_features(model, u), u, k_max=50)
    r = choose_ridge(split)
    assert r in RIDGE_GRID
    chosen = memory_capacity_from_split(split)
    tiny = memory_capacity_from_split(split, ridge=1e-8)
    assert chosen.ridge == r and tiny.ridge == 1e-8
    assert chosen.total > tiny.total + 0.2, (chosen.total, tiny.total)


def test_readout_scaling_delay_line_is_linear_and_uncorrelated():
    N = 16
    u = uniform_drive(1200, 2, seed=0)
    X = collect_features(DelayLineCell(N), u)
    sc = readout_scaling(X, u, sizes=[2, 4, 8, 16], draws=3, k_max=20, max_degree=2, window=4)
    assert sc.mc.shape == (4, 3) and sc.correlation.shape == (4, 3) and set(sc.capacity) == {1, 2}
    # each register cell holds one distinct past input: MC grows with n (one cell may hold u(t), lag 0)
    # (plus chance-level correlations of the lags it does not hold, ~1 / n_test each)
    assert np.all(sc.mc >= np.array([2, 4, 8, 16])[:, None] - 1 - 0.02)
    assert np.all(sc.mc <= np.array([2, 4, 8, 16])[:, None] + 0.1)
    assert np.nanmax(sc.correlation) < 0.05  # the cells are independent inputs
    assert np.all(sc.capacity[2] < 0.05)  # a linear system has no quadratic capacity
    rows = sc.table()
    assert [r["n"] for r in rows] == [2, 4, 8, 16] and "ipc1" in rows[0] and "ipc2_sd" in rows[0]
    with pytest.raises(ValueError, match="readout sizes"):
        readout_scaling(X, u, sizes=[32], k_max=20)


def test_correlated_features_add_no_memory():
    """Duplicated (perfectly correlated) neurons: readout size grows, MC does not - the sublinear mechanism."""
    u = uniform_drive(1000, 2, seed=0)
    X = collect_features(DelayLineCell(4), u)
    mix = torch.randn(4, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    Xc = X @ mix  # 32 neurons, all linear mixtures of 4 cells
    sc = readout_scaling(Xc, u, sizes=[4, 32], draws=2, k_max=10, max_degree=0)
    assert sc.mc[0].mean() == pytest.approx(3.0, abs=0.05)
    assert sc.mc[1].mean() == pytest.approx(3.0, abs=0.05)
    assert np.nanmean(sc.correlation[1]) > 0.2


def test_network_capacity_of_a_stack():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="tanh_rnn", layers=1, width=12), input_size=2, output_size=2)
    cap = network_capacity(model, max_degree=2, window=5, n_steps=1500, streams=2)
    assert cap.total <= 12 + 0.1 and cap.by_degree()[1] > 1.0


def test_reservoirpy_gives_the_same_memory_capacity():
    """Optional: an ESN with the same weights in ReservoirPy (installed with --no-deps) gives the same MC."""
    pytest.importorskip("reservoirpy")
    from reservoirpy.nodes import Reservoir, Ridge
    from reservoirpy.observables import memory_capacity as rpy_memory_capacity

    rng = np.random.default_rng(0)
    N, k_max, T = 40, 50, 2000
    W = rng.normal(size=(N, N))
    W *= 0.9 / np.abs(np.linalg.eigvals(W)).max()
    Win = rng.uniform(-1, 1, size=(N, 1))
    series = rng.uniform(-1, 1, size=(T, 1))
    ref = rpy_memory_capacity(Reservoir(N, W=W, Win=Win, bias=0.0, lr=1.0) >> Ridge(ridge=1e-7), k_max,
                              as_list=True, series=series, test_size=0.2)
    cell = ElmanCell(1, N).double()
    with torch.no_grad():
        cell.weight_hh.copy_(torch.from_numpy(W))
        cell.weight_ih.copy_(torch.from_numpy(Win) * input_vector(cell))  # undo our random input sign
        cell.bias.zero_()
    u = torch.from_numpy(series[:, 0])[None]
    # ReservoirPy trains after 2 * k_max steps (its stream starts at k_max, plus a k_max warmup) and tests on the
    # last round(0.2 T) steps: the same split here
    n_test = round(0.2 * T)
    ours = memory_capacity_from_features(collect_features(cell, u), u, k_max, warmup=2 * k_max,
                                         test_fraction=n_test / (T - 2 * k_max), ridge=1e-9)
    assert ours.n_test == n_test
    assert ours.total == pytest.approx(float(ref.sum()), abs=0.05)
    assert np.allclose(ours.per_lag, ref, atol=0.01)


def test_task_stream_lays_examples_end_to_end():
    from stablernn.cli.dynamics import task_stream

    batches = [(torch.arange(5 * 8 * 2, dtype=torch.float32).reshape(5, 8, 2), torch.zeros(5))]
    x = task_stream(batches, streams=3, steps=20)  # 3 examples of 8 steps per stream, the 5 examples cycled
    assert x.shape == (3, 24, 2)
    assert torch.equal(x[0, 8:16], batches[0][0][1])
    assert torch.equal(x[2, 0:8], batches[0][0][1])  # example 6 is example 1 again
    with pytest.raises(ValueError, match="no batches"):
        task_stream([], 1, 5)


def test_dynamics_profile_and_cli(tmp_path):
    """The one-call profile and the `stablernn dynamics` command on a small network (fast settings)."""
    from typer.testing import CliRunner

    from stablernn.cli import app
    from stablernn.dynamics.memory import DynamicsConfig, dynamics_profile

    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", layers=2, width=6), input_size=3, output_size=2)
    cfg = DynamicsConfig(lyapunov=3, memory=10, ipc_degree=2, n_steps=300, streams=2, sizes=(2, 12), draws=2)
    prof = dynamics_profile(model, torch.randn(2, 60, 3), cfg)
    s = prof.summary()
    assert len(s["lyapunov"]) == 3 and len(s["mc_per_lag"]) == 10 and set(s["ipc"]) == {"1", "2"}
    assert [r["n"] for r in s["scaling"]] == [2, 12] and s["n_features"] == 12
    with pytest.raises(ValueError, match="lyapunov_inputs"):
        dynamics_profile(model, None, cfg)

    result = CliRunner().invoke(app, ["dynamics", "--task", "digits", "--cell", "gru", "--layers", "1", "--width",
                                      "4", "--lyapunov", "2", "--lyapunov-steps", "40", "--memory", "8",
                                      "--ipc-degree", "2", "--steps", "200", "--streams", "2", "--draws", "1",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "lambda_1" in result.output and "readout-size scaling" in result.output
    for name in ("summary.json", "spectrum.png", "memory.png", "readout.png"):
        assert (tmp_path / name).is_file(), name
    bad = CliRunner().invoke(app, ["dynamics", "--memory", "100", "--steps", "50", "--out", str(tmp_path)])
    assert bad.exit_code != 0
