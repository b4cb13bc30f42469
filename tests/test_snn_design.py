"""Condition I+II initializer and the stability design of LIF/ALIF layers."""
from __future__ import annotations

import math

import pytest
import torch

from stablernn.cells import ALIFCell, LIFCell
from stablernn.models import ModelConfig, build_model
from stablernn.snn.conditions import LayerParams, TaskStats, condition_i, condition_ii, condition_iii
from stablernn.snn.design import (
    Design,
    DesignConfig,
    apply_design_,
    design_model,
    draw_recurrent,
    init_conditions_,
    init_recurrent_,
    is_spiking,
    stability_design,
)
from stablernn.surrogate import SpikeFunction

STATS = TaskStats(0.3, 0.14)


def _offdiag(w: torch.Tensor) -> torch.Tensor:
    return w[~torch.eye(w.shape[0], dtype=torch.bool)]


def test_draw_recurrent_mean_and_variance_within_sampling_error():
    n = 300
    mask = 1.0 - torch.eye(n, dtype=torch.float64)
    mean, var = 0.02, 0.004
    w = draw_recurrent(mask, mean, var, generator=torch.Generator().manual_seed(0))
    vals = _offdiag(w)
    m = vals.numel()
    assert torch.all(w.diagonal() == 0)
    assert abs(float(vals.mean()) - mean) < 4 * math.sqrt(var / m)
    # variance of a uniform sample: sd of the sample variance ≈ sqrt((μ4 - σ⁴)/m), μ4 = 9σ⁴/5
    assert abs(float(vals.var()) - var) < 4 * math.sqrt((9 / 5 - 1) * var ** 2 / m)
    half = math.sqrt(3 * var)
    assert float(vals.min()) >= mean - half and float(vals.max()) <= mean + half


def test_draw_recurrent_as_in_code_variance():
    n = 200
    mask = 1.0 - torch.eye(n, dtype=torch.float64)
    w = draw_recurrent(mask, 0.0, 1e-4, generator=torch.Generator().manual_seed(1), as_in_code=True)
    assert float(_offdiag(w).var()) == pytest.approx(math.sqrt(1e-4) / n, rel=0.05)


def test_draw_recurrent_rejects_bad_variance():
    with pytest.raises(ValueError, match="variance"):
        draw_recurrent(torch.ones(3, 3), 0.0, -1.0)
    with pytest.raises(ValueError, match="variance"):
        draw_recurrent(torch.ones(3, 3), 0.0, float("nan"))


@pytest.mark.parametrize("cls", [LIFCell, ALIFCell])
def test_init_conditions_gives_requested_mean_and_variance(cls):
    torch.manual_seed(0)
    cell = cls(20, 200, tau=10.0, threshold=0.5)
    p = LayerParams.from_cell(cell)
    mu = condition_i(p).value
    var = condition_ii(p, STATS, mu).value
    r1, r2 = init_conditions_(cell, STATS, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(r1.value, mu)
    torch.testing.assert_close(r2.value, var)
    w = cell.weight_hh.detach().double()
    assert torch.all(w.diagonal() == 0)
    vals = _offdiag(w)
    m = vals.numel()
    assert abs(float(vals.mean()) - float(mu[0])) < 4 * math.sqrt(float(var[0]) / m)
    assert abs(float(vals.var()) - float(var[0])) < 4 * math.sqrt(0.8 * float(var[0]) ** 2 / m) + 1e-9
    assert torch.all(torch.isfinite(w))


def test_init_conditions_without_ii_keeps_variance():
    torch.manual_seed(0)
    cell = LIFCell(5, 150)
    before = float(_offdiag(cell.weight_hh.detach().double()).var())
    init_conditions_(cell, STATS, use_ii=False, generator=torch.Generator().manual_seed(0))
    after = float(_offdiag(cell.weight_hh.detach().double()).var())
    assert after == pytest.approx(before, rel=0.05)


def test_init_conditions_negative_variance_leaves_weights_untouched():
    torch.manual_seed(0)
    cell = LIFCell(5, 30, threshold=100.0)
    w0 = cell.weight_hh.detach().clone()
    with pytest.raises(ValueError, match="negative recurrent variance"):
        init_conditions_(cell, TaskStats(0.01, 0.001))
    assert torch.equal(cell.weight_hh.detach(), w0) and torch.all(torch.isfinite(cell.weight_hh))


def test_init_recurrent_respects_self_connections():
    cell = LIFCell(3, 10, self_connections=True)
    init_recurrent_(cell, 0.1, 0.01, generator=torch.Generator().manual_seed(0))
    assert torch.all(cell.weight_hh.diagonal() != 0)


def test_stability_design_is_pure_and_applies():
    torch.manual_seed(0)
    cell = ALIFCell(8, 32, tau=20.0)
    state = {k: v.clone() for k, v in cell.state_dict().items()}
    d = stability_design(cell, STATS, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(state[k], v) for k, v in cell.state_dict().items())  # untouched
    assert isinstance(d, Design) and [r.condition for r in d.reports] == ["I", "II", "III", "IV"]
    assert d.dampening.shape == (32,) and d.sharpness.dim() == 0
    assert torch.all(torch.isfinite(d.dampening)) and torch.isfinite(d.sharpness)
    # Condition III is evaluated on the Condition I+II weights
    p = LayerParams.from_cell(cell, weight_hh=d.weight_hh)
    torch.testing.assert_close(d.dampening, condition_iii(p).value)
    d.apply_(cell)
    assert isinstance(cell.spike, SpikeFunction)
    torch.testing.assert_close(cell.spike.dampening.double(), d.dampening, rtol=1e-6, atol=0)
    torch.testing.assert_close(cell.weight_hh.detach().double(), d.weight_hh, rtol=1e-6, atol=1e-9)
    assert "SG fast_sigmoid" in d.summary() and d.to_dict()["reports"][0]["condition"] == "I"
    # the designed cell runs
    out, _ = cell.forward_sequence(torch.rand(4, 6, 8), cell.initial_state(4))
    assert out.shape == (4, 6, 32)


def test_stability_design_variants():
    torch.manual_seed(0)
    cell = LIFCell(8, 24, tau=2.0)
    d = stability_design(cell, STATS, DesignConfig(shape="q_pseudospike", conditions=("I", "II", "III", "tail"),
                                                  per_neuron_dampening=False))
    assert d.tail is not None and d.tail > 1 and d.dampening.dim() == 0
    d2 = stability_design(cell, STATS, DesignConfig(conditions=("III",), shape="gaussian"))
    assert d2.weight_hh is None and d2.shape == "gaussian"
    d3 = stability_design(cell, STATS, DesignConfig(conditions=("I",), shape="snntorch_atan"))
    assert d3.shape == "cauchy" and float(d3.dampening) == 1.0  # the alias's own γ = α/2 = 1
    d4 = stability_design(cell, STATS, DesignConfig(conditions=("III", "IV"), per_neuron_sharpness=True,
                                                   sharpness_bounds=(1e-3, 1e3)))
    assert d4.sharpness.shape == (24,)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"conditions": ("V",)}, "unknown condition"),
    ({"shape": "nope"}, "unknown surrogate"),
    ({"conditions": ("tail",)}, "q_pseudospike"),
    ({"conditions": ("II",)}, "include 'I'"),
])
def test_design_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DesignConfig(**kwargs)


def test_stability_design_no_root_raise():
    torch.manual_seed(0)
    cell = LIFCell(8, 24, tau=20.0)
    with pytest.raises(ValueError, match="no sharpness"):
        stability_design(cell, STATS, DesignConfig(on_no_root="raise"))


def test_stability_design_rejects_non_spiking():
    from stablernn.cells import GRUCell

    assert not is_spiking(GRUCell(3, 4)) and is_spiking(LIFCell(3, 4))
    with pytest.raises(ValueError, match="LIF/ALIF"):
        stability_design(GRUCell(3, 4), STATS)


def test_design_model_and_apply():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="alif", layers=2, width=16), input_size=8, output_size=10, seq_len=8)
    designs = design_model(model, STATS, seed=1)
    assert len(designs) == 2 and all(d is not None for d in designs)
    # layer 1 is fed by spikes: its Condition II uses Bernoulli(1/2) statistics
    p1 = LayerParams.from_cell(model.cells[1])
    torch.testing.assert_close(designs[1].report("II").value,
                               condition_ii(p1, TaskStats.spikes(0.5), condition_i(p1).value).value)
    again = design_model(model, STATS, seed=1)
    torch.testing.assert_close(designs[0].weight_hh, again[0].weight_hh)  # seeded
    apply_design_(model, designs)
    out = model.run(torch.rand(3, 8, 8))
    assert out.logits.shape == (3, 8, 10) and torch.all(torch.isfinite(out.logits))
    # a designed model's state dict loads into a freshly built one (per-neuron γ replaces the scalar)
    fresh = build_model(ModelConfig(cell="alif", layers=2, width=16), input_size=8, output_size=10, seq_len=8)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.cells[0].spike.dampening, model.cells[0].spike.dampening)
    with pytest.raises(ValueError, match="designs"):
        apply_design_(model, designs[:1])
    gru = build_model(ModelConfig(cell="gru", layers=1, width=4), input_size=8, output_size=10)
    with pytest.raises(ValueError, match="no LIF/ALIF"):
        design_model(gru, STATS)
