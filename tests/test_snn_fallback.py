"""Condition IV and the tail fit where they have no root: the on_no_root choices (clip, match, raise), the
measured-voltage gain the match fallback solves, and the least-violating search (issue 16 item 3)."""
from __future__ import annotations

import math

import pytest
import torch

from stablernn.cells import ALIFCell, LIFCell
from stablernn.data.base import TaskInfo
from stablernn.models import ModelConfig, build_model
from stablernn.snn.conditions import (
    LayerParams,
    TaskStats,
    VoltageSamples,
    condition_iv,
    expected_sq_gain,
    fit_tail,
)
from stablernn.snn.design import (
    DesignConfig,
    design_model,
    measure_layer,
    simulated_inputs,
    stability_design,
)
from stablernn.snn.solve import least_violating, solve_per_neuron
from stablernn.surrogate import SHAPES, get

F64 = torch.float64
STATS = TaskStats(0.3, 0.14)


def _lif(n: int = 16, n_in: int = 8, seed: int = 0, **kw) -> LIFCell:
    torch.manual_seed(seed)
    return LIFCell(n_in, n, tau=20.0, threshold=0.5, **kw)


def _inputs(cell, batch: int = 64, steps: int = 12, seed: int = 0) -> torch.Tensor:
    return simulated_inputs(STATS, batch, steps, cell.input_size, generator=torch.Generator().manual_seed(seed))


# --- least-violating search -----------------------------------------------------------------------------------------
def test_least_violating_finds_interior_minimum_where_the_bound_is_not_it():
    # |fn| has its minimum 0.3 at x = 2 (no root): the bound (0.1 or 10) is not the least-violating value
    centre = torch.tensor([2.0, 0.5], dtype=F64)

    def fn(x):
        return 0.3 + (torch.log(x) - torch.log(centre[:, None])) ** 2

    x = least_violating(fn, 2, 0.1, 10.0)
    torch.testing.assert_close(x, centre, rtol=1e-6, atol=0)
    scan = solve_per_neuron(fn, 2, 0.1, 10.0)  # what clip returns: the best scan point, within one grid step
    assert not bool(scan.found.any())
    assert torch.all((scan.x / centre - 1).abs() < 0.03)


def test_least_violating_is_the_bound_for_a_monotone_quantity():
    x = least_violating(lambda x: 2.0 + x, 1, 0.1, 10.0)
    assert float(x[0]) == pytest.approx(0.1)
    x = least_violating(lambda x: 2.0 - x / 20.0, 1, 0.1, 10.0, log=False)
    assert float(x[0]) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="lo < hi"):
        least_violating(lambda x: x, 1, 1.0, 0.5)


# --- the measured-voltage gain ----------------------------------------------------------------------------------------
def test_measured_gain_is_the_mean_squared_column_norm_of_the_cells_jacobian():
    """The gain on measured voltages equals the mean, over the same samples, of the squared column norms of the cell's
    own autograd time Jacobian v[t-1] -> v[t] (through its surrogate): the quantity the match fallback sets to 1."""
    n = 10
    cell = LIFCell(4, n, tau=6.0, threshold=0.7, detach_reset=False).double()
    cell.spike = get("exponential", torch.tensor(0.8, dtype=F64), torch.tensor(0.7, dtype=F64))
    samples, _ = measure_layer(cell, torch.rand(32, 10, 4, dtype=F64, generator=torch.Generator().manual_seed(1)))
    p = LayerParams.from_cell(cell)
    v_prev = samples.u + p.threshold  # LIF: the threshold in force is the constant one
    st0 = cell.initial_state(1, dtype=F64)
    x = torch.zeros(1, 4, dtype=F64)

    def step(v):
        st_ = cell.with_stability_state(st0, v[None])
        return cell.stability_state(cell(x, st_)[1])[0]

    jac = torch.func.vmap(torch.func.jacrev(step))(v_prev)  # [S, n, n]
    col_sq = (jac ** 2).sum(dim=1).mean(0)
    spike = cell.spike
    measured = expected_sq_gain(p, spike.shape, spike.dampening, spike.sharpness, cross_term=True, samples=samples)
    torch.testing.assert_close(measured, col_sq, rtol=1e-9, atol=1e-12)


def test_measure_layer_alif_uses_the_adapted_threshold_and_rejects_bad_inputs():
    torch.manual_seed(0)
    cell = ALIFCell(3, 6, tau=5.0, threshold=0.3, beta=1.0)
    x = torch.rand(8, 20, 3)
    samples, spikes = measure_layer(cell, x)
    assert samples.u.shape == (8 * 20, 6) and spikes.shape == (8, 20, 6)
    st = cell.initial_state(8)
    us = []
    for t in range(20):
        _, st = cell(x[:, t], st)
        us.append(st.v - (cell.threshold + cell.beta * st.a))
    torch.testing.assert_close(samples.u, torch.stack(us, 1).reshape(-1, 6).double())
    torch.testing.assert_close(samples.rate, spikes.reshape(-1, 6).mean(0).double())
    with pytest.raises(ValueError, match=r"inputs must be \[B, T, 3\]"):
        measure_layer(cell, torch.rand(8, 20, 4))
    with pytest.raises(ValueError, match="voltage samples must be"):
        VoltageSamples(torch.zeros(5), torch.zeros(5))
    with pytest.raises(ValueError, match="rate must be"):
        VoltageSamples(torch.zeros(5, 3), torch.zeros(4))


# --- Condition IV / tail: clip, match, raise --------------------------------------------------------------------------
def test_match_re_solves_condition_iv_on_measured_voltages_where_the_model_has_no_root():
    cell = _lif()
    p = LayerParams.from_cell(cell)
    samples, _ = measure_layer(cell, _inputs(cell))
    clip = condition_iv(p, "exponential", 1.0, bounds=(0.1, 10.0), on_no_root="clip")
    match = condition_iv(p, "exponential", 1.0, bounds=(0.1, 10.0), on_no_root="match", samples=samples)
    # at tau = 20 the uniform-voltage model's gain stays below 1 (the leak gives δ² = 0.905): clip takes the bound
    assert not bool(clip.solved.any()) and float(clip.value[0]) == pytest.approx(0.1)
    assert "clip: search bound used" in clip.summary()
    # the measured voltages sit near threshold, so the measured gain crosses 1 and match takes that root
    assert not bool(match.solved.any()) and 0.1 < float(match.value[0]) < 10.0
    sg = SHAPES["exponential"]
    gain = expected_sq_gain(p, sg, torch.ones(p.n, dtype=F64), match.value, samples=samples)
    assert float(gain.mean()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(match.prediction, gain)
    assert "match: root of the measured-voltage gain for 1 layer" in match.summary()
    assert match.to_dict()["fallback"].startswith("match:")


def test_match_keeps_the_default_where_the_measured_gain_is_flat():
    cell = _lif()
    p = LayerParams.from_cell(cell)
    samples, _ = measure_layer(cell, _inputs(cell))
    # γ tiny (as Condition III gives at tau = 20): s cannot move the gain; match does not move s
    r = condition_iv(p, "exponential", 1e-3, bounds=(0.1, 10.0), on_no_root="match", samples=samples, default=1.3)
    torch.testing.assert_close(r.value, torch.full((p.n,), 1.3, dtype=F64))
    assert "default 1.3 kept" in r.summary()
    # with flat_tol = 0 it takes the least-violating value of the measured gain: the widest SG here
    r0 = condition_iv(p, "exponential", 1e-3, bounds=(0.1, 10.0), on_no_root="match", samples=samples,
                      default=1.3, flat_tol=0.0)
    assert float(r0.value[0]) == pytest.approx(0.1)
    assert "least-violating value of the measured-voltage gain" in r0.summary()


def test_match_tail_takes_the_least_violating_q_not_a_bound_when_the_gain_is_not_monotone():
    """With every measured |v - ϑ| at 3 (2s|u| = 6 > 2), q-PseudoSpike's value there rises then falls with q: the
    measured gain has an interior maximum below 1, and match returns it instead of a bound."""
    n = 8
    cell = _lif(n=n, n_in=4)
    p = LayerParams.from_cell(cell)
    samples = VoltageSamples(torch.full((50, n), 3.0, dtype=F64), torch.full((n,), 0.2, dtype=F64))
    gamma = torch.full((n,), 0.5, dtype=F64)
    r = fit_tail(p, gamma, 1.0, bounds=(1.01, 101.0), on_no_root="match", samples=samples, flat_tol=0.0)
    q = float(r.value[0])
    qs = torch.logspace(math.log10(0.01), math.log10(100.0), 801, dtype=F64) + 1.0
    sg = SHAPES["q_pseudospike"]
    g = torch.stack([expected_sq_gain(p, sg, gamma, torch.ones(n, dtype=F64), qq, samples=samples).mean()
                     for qq in qs])
    assert float(g.max()) < 1.0  # no root: the least-violating value is the maximum of the gain
    best = float(qs[g.argmax()])
    assert 1.05 < best < 50 and q == pytest.approx(best, rel=0.01)
    assert "least-violating value" in r.summary()
    assert not bool(r.solved.any())
    flat = fit_tail(p, torch.full((n,), 1e-4, dtype=F64), 1.0, on_no_root="match", samples=samples)
    assert "default q = 1.56 kept" in flat.summary() and "over q in [1.001, 101]" in flat.summary()
    torch.testing.assert_close(flat.value, torch.full((n,), 1.56, dtype=F64))


def test_raise_and_match_without_samples_raise_clear_errors():
    cell = _lif()
    p = LayerParams.from_cell(cell)
    with pytest.raises(ValueError, match=r"no sharpness s in .*or 'match'"):
        condition_iv(p, "exponential", 1.0, bounds=(0.1, 10.0), on_no_root="raise")
    with pytest.raises(ValueError, match="on_no_root='match' needs the layer's measured voltages"):
        condition_iv(p, "exponential", 1.0, bounds=(0.1, 10.0), on_no_root="match")
    with pytest.raises(ValueError, match="on_no_root must be one of 'raise', 'clip', 'match'"):
        condition_iv(p, "exponential", 1.0, on_no_root="nope")
    samples = VoltageSamples(torch.zeros(4, 3, dtype=F64), torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="samples are for 3 neurons"):
        expected_sq_gain(p, SHAPES["exponential"], torch.ones(p.n, dtype=F64), torch.ones(p.n, dtype=F64),
                         samples=samples)


# --- the design and the builder ---------------------------------------------------------------------------------------
def test_design_summary_says_which_condition_had_no_root_and_what_match_chose():
    cell = _lif()
    cfg = DesignConfig(shape="exponential", conditions=("IV",), on_no_root="match")
    d = stability_design(cell, STATS, cfg, inputs=_inputs(cell))
    text = d.summary()
    assert "Condition IV" in text and "no exact solution for 16/16 neuron(s): match: root" in text
    assert d.to_dict()["reports"][0]["fallback"].startswith("match:")
    clip = stability_design(cell, STATS, DesignConfig(shape="exponential", conditions=("IV",)))
    assert "clip: search bound used" in clip.summary() and float(clip.sharpness) == pytest.approx(0.1)


def test_design_config_validation_one_line_errors():
    for kw, msg in [({"on_no_root": "nope"}, "on_no_root"), ({"match_batch": 0}, "match_batch must be >= 1"),
                    ({"match_steps": 0}, "match_steps must be >= 1"), ({"flat_tol": -1.0}, "flat_tol must be"),
                    ({"match_samples": 0}, "match_samples must be >= 1")]:
        with pytest.raises(ValueError, match=msg) as err:
            DesignConfig(**kw)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="condition_fallback"):
        ModelConfig(cell="lif", conditions=("IV",), condition_fallback="nope")  # type: ignore[arg-type]


def test_builder_match_changes_only_the_fallback_values():
    """Same weights under clip and match (the simulation draws from its own generator); only the sharpness / tail
    where the model had no root differ; per layer the deeper one is simulated on the spikes of the one below."""
    task = TaskInfo("synthetic", input_size=8, output_size=3, seq_len=12, input_mean=0.3, input_var=0.14)
    nets = {}
    for fb in ("clip", "match"):
        cfg = ModelConfig(cell="lif", layers=2, width=16, threshold=0.5, surrogate="exponential",
                          conditions=("I", "II", "IV"), condition_fallback=fb)
        torch.manual_seed(3)  # the builder's own init draws from the global generator (the train loop seeds it)
        nets[fb] = build_model(cfg, task, seed=3)
    for a, b in zip(nets["clip"].cells, nets["match"].cells, strict=True):
        torch.testing.assert_close(a.weight_hh, b.weight_hh)
        torch.testing.assert_close(a.weight_ih, b.weight_ih)
        assert float(a.spike.sharpness) == pytest.approx(0.1)
    assert any(float(c.spike.sharpness) > 0.1 for c in nets["match"].cells)


def test_design_model_match_with_real_inputs_and_seq_len():
    torch.manual_seed(0)
    from stablernn.models import DeepRNN  # noqa: F401  (the builder's stack)

    task = TaskInfo("synthetic", input_size=5, output_size=2, seq_len=10, input_mean=0.5, input_var=0.08)
    model = build_model(ModelConfig(cell="alif", layers=2, width=12, threshold=0.4), task, seed=0)
    cfg = DesignConfig(shape="q_pseudospike", conditions=("tail",), on_no_root="match")
    x = torch.rand(16, 10, 5, generator=torch.Generator().manual_seed(0))
    designs = design_model(model, STATS, cfg, seed=0, inputs=x)
    assert len(designs) == 2 and all(d is not None and d.tail is not None for d in designs)
    again = design_model(model, STATS, cfg, seed=0, inputs=x)
    assert [d.tail for d in designs] == [d.tail for d in again]  # deterministic
    sim = design_model(model, STATS, cfg, seed=0, seq_len=10)
    assert all(d is not None and 1.01 <= d.tail <= 101.0 for d in sim)


def test_measure_layer_keeps_at_most_max_samples_rows():
    cell = _lif(n=4, n_in=3)
    x = torch.rand(10, 30, 3)
    samples, _ = measure_layer(cell, x, max_samples=50)
    full, _ = measure_layer(cell, x)
    assert samples.u.shape == (50, 4) and full.u.shape == (300, 4)
    assert bool((samples.u[:, None, :] == full.u[None]).all(-1).any(1).all())  # a subset of the rows
    torch.testing.assert_close(samples.rate, full.rate)
