"""Stability Conditions I–IV, the tail fit and the root-finder (spec §4)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stablernn.cells import LIFCell
from stablernn.snn.conditions import (
    LayerParams,
    TaskStats,
    condition_i,
    condition_ii,
    condition_iii,
    condition_iii_gain,
    condition_iv,
    expected_sq_gain,
    fit_tail,
    input_current_second_moment,
    negative_sum,
    positive_sum,
    sg_moment,
    stationary_mean_voltage,
    voltage_range,
)
from stablernn.snn.solve import solve_per_neuron
from stablernn.surrogate import SHAPES

F64 = torch.float64
PROPS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_params(seed: int, n: int = 24, n_in: int = 10, *, scale: float = 1.0, tau: float = 20.0,
                threshold: float = 1.0, reset: str = "subtract", detach_reset: bool = True, bias: float = 0.0
                ) -> LayerParams:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, n, generator=g, dtype=F64) * scale / math.sqrt(n)
    w_in = torch.randn(n, n_in, generator=g, dtype=F64) * scale / math.sqrt(n_in)
    tau_v = tau * (0.5 + torch.rand(n, generator=g, dtype=F64))
    thr = threshold * (0.5 + torch.rand(n, generator=g, dtype=F64))
    return LayerParams.create(w, w_in, tau=tau_v, threshold=thr, bias=bias, reset=reset, detach_reset=detach_reset)


# --- inputs -------------------------------------------------------------------------------------------------------
def test_sums_are_per_row_of_post_pre_matrix():
    w = torch.tensor([[0.0, 2.0, -1.0], [3.0, 0.0, -4.0], [-0.5, 0.25, 0.0]], dtype=F64)
    torch.testing.assert_close(positive_sum(w), torch.tensor([2.0, 3.0, 0.25], dtype=F64))
    torch.testing.assert_close(negative_sum(w), torch.tensor([-1.0, -4.0, -0.5], dtype=F64))


def test_layer_params_from_cell_reads_mask_and_alif_threshold():
    from stablernn.cells import ALIFCell

    cell = ALIFCell(3, 5, tau=10.0, threshold=0.5, beta=2.0)
    p = LayerParams.from_cell(cell, rate=0.25)
    torch.testing.assert_close(p.threshold, torch.full((5,), 0.5 + 2.0 * 0.25, dtype=F64))
    torch.testing.assert_close(p.decay, torch.full((5,), math.exp(-0.1), dtype=F64))
    assert torch.all(p.w_rec.diagonal() == 0) and torch.all(p.n_pre == 4)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"tau": -1.0}, "tau"),
    ({"tau": 0.0}, "tau"),
    ({"reset": "bogus"}, "reset"),
    ({"threshold": float("nan")}, "NaN"),
])
def test_layer_params_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LayerParams.create(torch.zeros(3, 3), torch.zeros(3, 2), **kwargs)


def test_layer_params_decay_out_of_range():
    with pytest.raises(ValueError, match="τ > 0"):
        LayerParams(torch.zeros(2, 2), torch.zeros(2, 1), torch.tensor([0.5, 1.5]), torch.ones(2), torch.zeros(2))


def test_task_stats():
    x = torch.rand(7, 5, 3, generator=torch.Generator().manual_seed(0))
    s = TaskStats.from_batches([(x[:4], None), (x[4:], None)])
    assert s.mean == pytest.approx(float(x.double().mean()))
    assert s.var == pytest.approx(float(x.double().var(unbiased=False)))
    assert TaskStats.spikes(0.5) == TaskStats(0.5, 0.25)
    with pytest.raises(ValueError):
        TaskStats(0.0, -1.0)
    with pytest.raises(ValueError, match="no input"):
        TaskStats.from_batches([])


# --- Condition I --------------------------------------------------------------------------------------------------
def test_condition_i_reproduces_spec_formulas_at_rate_half():
    p = make_params(0)
    d, thr, n = p.decay, p.threshold, p.n - 1
    torch.testing.assert_close(condition_i(p).value, (3 - 2 * d) * thr / n)
    pl = make_params(0, reset="mult_leak")
    torch.testing.assert_close(condition_i(pl).value, (2 - pl.decay) * pl.threshold / n)
    pm = make_params(0, reset="multiplicative")  # derived: (4 - 2δ)ϑ/(n-1); the code's 2(1-δ)ϑ lacks the reset
    torch.testing.assert_close(condition_i(pm).value, (4 - 2 * pm.decay) * pm.threshold / n)


@PROPS
@given(seed=st.integers(0, 10_000), rate=st.floats(0.05, 0.95), reset=st.sampled_from(["subtract", "multiplicative",
                                                                                        "mult_leak"]))
def test_condition_i_puts_mean_voltage_at_threshold(seed, rate, reset):
    p = make_params(seed, reset=reset)
    r = condition_i(p, rate)
    torch.testing.assert_close(stationary_mean_voltage(p, r.value, rate), p.threshold, rtol=1e-10, atol=0)
    torch.testing.assert_close(r.prediction, torch.ones(p.n, dtype=F64))


@pytest.mark.parametrize("reset", ["subtract", "multiplicative", "mult_leak"])
def test_stationary_mean_voltage_matches_simulation(reset):
    """The mean-field formula against a simulated layer whose presynaptic spikes are Bernoulli(rate)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    n, T, B, rate, burn = 40, 1200, 96, 0.3, 100
    p = make_params(3, n=n, tau=5.0, reset=reset)
    mu = torch.full((n,), 0.05, dtype=F64)
    w = (mu[:, None] + 0.02 * torch.randn(n, n, dtype=F64)) * p.mask
    v = torch.zeros(B, n, dtype=F64)
    z_prev = torch.zeros(B, n, dtype=F64)
    acc = torch.zeros(B, n, dtype=F64)
    for t in range(T):
        cur = (torch.rand(B, n, dtype=F64) < rate).to(F64) @ w.T
        if reset == "subtract":
            v = p.decay * v + cur - p.threshold * z_prev
        elif reset == "multiplicative":
            v = (p.decay * v + cur) * (1 - z_prev)
        else:
            v = p.decay * v * (1 - z_prev) + cur
        z_prev = (torch.rand(B, n, dtype=F64) < rate).to(F64)  # the model's own spikes: Bernoulli, independent of v
        if t >= burn:
            acc += v
    sim = acc.mean(0) / (T - burn)
    pred = stationary_mean_voltage(p, w.sum(1) / (n - 1), rate)  # each neuron's realised weight mean
    torch.testing.assert_close(sim, pred, rtol=0.0, atol=0.04)  # ≈ 4 standard errors


# --- Condition II -------------------------------------------------------------------------------------------------
def test_condition_ii_formula_and_prediction():
    p = make_params(1)
    stats = TaskStats(0.2, 0.05)
    mu = condition_i(p).value
    r = condition_ii(p, stats, mu)
    var_in = float(p.weight_ih.var(unbiased=False))
    expect = (0.05 + 0.04) * var_in * p.n_in / (p.n - 1) - mu ** 2 / 2
    torch.testing.assert_close(r.value, expect)
    torch.testing.assert_close(r.prediction, torch.ones(p.n, dtype=F64))
    assert input_current_second_moment(p, stats) == pytest.approx(0.09 * var_in * p.n_in)


def test_condition_ii_negative_variance_is_a_clear_error():
    p = make_params(1, threshold=50.0)  # a huge Condition I mean
    with pytest.raises(ValueError, match="negative recurrent variance"):
        condition_ii(p, TaskStats(0.01, 0.001), condition_i(p).value)


# --- Condition III ------------------------------------------------------------------------------------------------
@PROPS
@given(seed=st.integers(0, 10_000), detach=st.booleans(), scale=st.floats(0.2, 3.0), tau=st.floats(0.1, 50.0))
def test_condition_iii_makes_its_gain_one(seed, detach, scale, tau):
    p = make_params(seed, scale=scale, tau=tau, detach_reset=detach)
    r = condition_iii(p)
    assert torch.all(r.value > 0) and torch.all(torch.isfinite(r.value))
    gain = condition_iii_gain(p, r.value)
    torch.testing.assert_close(gain, torch.ones(p.n, dtype=F64), rtol=0, atol=1e-6)


def test_condition_iii_is_spec_type_c():
    p = make_params(2, detach_reset=False)  # the reset carries gradient: ϑ' = ϑ
    w = p.w_rec
    sp, sn = positive_sum(w), negative_sum(w)
    expect = sn / (sp * (sn - p.threshold)) * (1 - p.decay)
    torch.testing.assert_close(condition_iii(p).value, expect)
    pd = make_params(2, detach_reset=True)  # detached reset: ϑ' = 0, γ = (1 - δ)/S⁺
    torch.testing.assert_close(condition_iii(pd).value, (1 - pd.decay) / sp)


def test_condition_iii_matches_spec_sanity_value():
    """Spec §4: SHD shapes, glorot weights, τ = 0.1, ϑ = 0.01 give γ ≈ 0.144 ± 0.011."""
    torch.manual_seed(0)
    cell = LIFCell(700, 256, tau=0.1, threshold=0.01)
    r = condition_iii(LayerParams.from_cell(cell))
    assert 0.13 < float(r.value.mean()) < 0.16 and 0.005 < float(r.value.std()) < 0.02


def test_condition_iii_errors():
    w = torch.full((3, 3), -0.1, dtype=F64)  # no excitatory weight
    with pytest.raises(ValueError, match="excitatory"):
        condition_iii(LayerParams.create(w, torch.zeros(3, 1)))
    p = make_params(0)
    with pytest.raises(ValueError, match="input"):
        condition_iii(p, input_dampening=100.0)


# --- Condition IV -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", list(SHAPES))
def test_sg_moment_matches_sampling(shape):
    sg = SHAPES[shape]
    lo, hi = torch.tensor([-2.0, 0.3], dtype=F64), torch.tensor([1.5, 0.3], dtype=F64)
    g, s = torch.tensor(0.8, dtype=F64), torch.tensor(1.7, dtype=F64)
    u = torch.linspace(0, 1, 400_001, dtype=F64)
    vals = g * sg.g(s * (lo[0] + (hi[0] - lo[0]) * u), 1.56)
    m1 = sg_moment(sg, 1, lo, hi, g, s, 1.56)
    m2 = sg_moment(sg, 2, lo, hi, g, s, 1.56)
    assert float(m1[0]) == pytest.approx(float(torch.trapezoid(vals, u)), rel=1e-5)
    assert float(m2[0]) == pytest.approx(float(torch.trapezoid(vals ** 2, u)), rel=1e-5)
    assert float(m1[1]) == pytest.approx(float(g * sg.g(s * lo[1], 1.56)))  # zero-width range: a point


@PROPS
@given(seed=st.integers(0, 10_000), shape=st.sampled_from(list(SHAPES)), per_neuron=st.booleans(),
       reset=st.sampled_from(["subtract", "multiplicative", "mult_leak"]), detach=st.booleans(),
       cross=st.booleans())
def test_condition_iv_solves_the_gain_equation(seed, shape, per_neuron, reset, detach, cross):
    if reset != "subtract":
        detach = True
    p = make_params(seed, reset=reset, detach_reset=detach, tau=3.0)
    # a dampening large enough that the flattest SG overshoots gain 1 (a root then exists)
    out_sq = (p.w_rec ** 2).sum(0)
    gamma = 3.0 / out_sq.sqrt()
    r = condition_iv(p, shape, gamma, rate=0.5, per_neuron=per_neuron, bounds=(1e-4, 1e4), cross_term=cross)
    assert bool(r.solved.all())
    gain = expected_sq_gain(p, SHAPES[shape], gamma, r.value, 1.56, rate=0.5, cross_term=cross)
    if per_neuron:
        torch.testing.assert_close(gain, torch.ones(p.n, dtype=F64), rtol=0, atol=1e-6)
    else:
        assert torch.allclose(r.value, r.value[0])
        assert float(gain.mean()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("detach", [True, False])
def test_expected_sq_gain_matches_cell_jacobians(detach):
    """Monte Carlo: the mean squared column norm of the LIF cell's own time Jacobian dv[t]/dv[t-1] (autograd through
    the surrogate) with v uniform on its reachable range equals the formula (subtractive reset, both detach modes)."""
    from stablernn.surrogate import get

    torch.manual_seed(0)
    n, B = 12, 4000
    cell = LIFCell(4, n, tau=4.0, threshold=0.7, detach_reset=detach).double()
    spike = get("gaussian", torch.tensor(0.9, dtype=F64), torch.tensor(0.6, dtype=F64))
    cell.spike = spike
    p = LayerParams.from_cell(cell)
    y_max, y_min = voltage_range(p)
    v0 = y_min + (y_max - y_min) * torch.rand(B, n, dtype=F64)
    st0 = cell.initial_state(1, dtype=F64)
    x = torch.zeros(1, 4, dtype=F64)

    def step(v):  # one sample: v [n] -> v_new [n]
        st_ = cell.with_stability_state(st0, v[None])
        return cell.stability_state(cell(x, st_)[1])[0]

    jac = torch.func.vmap(torch.func.jacrev(step))(v0)  # [B, n, n]: d v_new / d v_old
    col_sq = (jac ** 2).sum(dim=1).mean(0)  # per presynaptic (old) neuron i
    pred = expected_sq_gain(p, spike.shape, spike.dampening, spike.sharpness, cross_term=True)
    torch.testing.assert_close(col_sq, pred, rtol=0.06, atol=0.0)


def test_condition_iv_no_root():
    p = make_params(4)
    with pytest.raises(ValueError, match="no sharpness s in"):
        condition_iv(p, "exponential", 0.01, bounds=(0.3, 1.6))
    r = condition_iv(p, "exponential", 0.01, bounds=(0.3, 1.6), on_no_root="clip", per_neuron=True)
    assert not bool(r.solved.any()) and torch.all(torch.isfinite(r.value))
    torch.testing.assert_close(r.value, torch.full((p.n,), 0.3, dtype=F64))  # the gain is too low: widest SG
    with pytest.raises(ValueError, match="on_no_root"):
        condition_iv(p, "exponential", 1.0, on_no_root="ignore")


def test_condition_iv_rejects_multiplicative_reset_with_gradient():
    p = make_params(0, reset="mult_leak", detach_reset=False)
    with pytest.raises(ValueError, match="detach_reset=True"):
        condition_iv(p, "fast_sigmoid", 1.0)


@PROPS
@given(seed=st.integers(0, 10_000), per_neuron=st.booleans(), reset=st.sampled_from(["subtract", "mult_leak"]))
def test_fit_tail_solves_the_gain_equation(seed, per_neuron, reset):
    p = make_params(seed, reset=reset, tau=3.0)
    out_sq = (p.w_rec ** 2).sum(0)
    # γ, s for which q near 1 (narrow peak, mass in the tails) undershoots and q -> inf (exponential) overshoots
    gamma = 1.4 / out_sq.sqrt()
    res = [expected_sq_gain(p, SHAPES["q_pseudospike"], gamma, torch.tensor(0.05, dtype=F64),
                            torch.tensor(q, dtype=F64)) for q in (1.001, 101.0)]
    r = fit_tail(p, gamma, 0.05, per_neuron=per_neuron, on_no_root="clip")
    gain = expected_sq_gain(p, SHAPES["q_pseudospike"], gamma, torch.tensor(0.05, dtype=F64), r.value)
    crosses = ((res[0] - 1) * (res[1] - 1) <= 0)
    if per_neuron:
        assert torch.equal(r.solved, crosses)
        torch.testing.assert_close(gain[crosses], torch.ones_like(gain[crosses]), rtol=0, atol=1e-6)
    elif bool(r.solved.all()):
        assert float(gain.mean()) == pytest.approx(1.0, abs=1e-6)
    assert torch.all(torch.isfinite(r.value)) and torch.all(r.value > 1)


def test_fit_tail_errors():
    p = make_params(0)
    with pytest.raises(ValueError, match="q must be > 1"):
        fit_tail(p, 1.0, 1.0, bounds=(0.5, 3.0))
    with pytest.raises(ValueError, match="no tail"):
        fit_tail(p, 1e-4, 1.0)


# --- the root-finder ----------------------------------------------------------------------------------------------
def test_solve_per_neuron_roots_and_no_root():
    a = torch.tensor([0.04, 1.0, 30.0, 1e6], dtype=F64)
    res = solve_per_neuron(lambda x: x * x - a[:, None], 4, 1e-3, 1e2)
    torch.testing.assert_close(res.x[:3], a[:3].sqrt(), rtol=1e-12, atol=0)
    assert res.found.tolist() == [True, True, True, False]
    assert float(res.x[3]) == pytest.approx(1e2)  # closest bound
    lin = solve_per_neuron(lambda x: x - 0.25, 1, -1.0, 1.0, log=False)
    assert float(lin.x[0]) == pytest.approx(0.25, abs=1e-12)
    with pytest.raises(ValueError, match="lo < hi"):
        solve_per_neuron(lambda x: x, 1, 0.0, 1.0)
    with pytest.raises(ValueError, match="not finite"):
        solve_per_neuron(lambda x: x / 0.0 * 0.0, 1, 0.1, 1.0)


def test_reports_summary_and_dict():
    p = make_params(0)
    r = condition_iii(p)
    assert "Condition III" in r.summary() and r.to_dict()["unsolved"] == 0
    r4 = condition_iv(p, "fast_sigmoid", 0.01, on_no_root="clip", bounds=(0.5, 2.0))
    assert "no exact solution" in r4.summary()
