"""Firing-rate control: the initial-rate bias fit, the sparsity loss and its ramp."""
from __future__ import annotations

import math

import pytest
import torch

from stablernn.models import ModelConfig, build_model
from stablernn.snn.rates import fit_initial_rate, layer_rates, parse_ramp, ramp, sparsity_loss, spiking_mask


@pytest.mark.parametrize(("p", "expect"), [(0.0, 0.0), (0.19, 0.0), (0.2, 0.0), (0.4, 0.5), (0.6, 1.0), (0.9, 1.0)])
def test_linear_ramp(p, expect):
    assert ramp(p, 0.2, 0.6) == pytest.approx(expect)


def test_cosine_ramp_and_step():
    assert ramp(0.4, 0.2, 0.6, "cosine") == pytest.approx(0.5)
    assert ramp(0.3, 0.2, 0.6, "cosine") == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)))
    vals = [ramp(p / 100, 0.2, 0.6, "cosine") for p in range(101)]
    assert all(0.0 <= v <= 1.0 for v in vals) and vals == sorted(vals)
    assert ramp(0.49, 0.5, 0.5) == 0.0 and ramp(0.5, 0.5, 0.5) == 1.0


@pytest.mark.parametrize(("args", "match"), [((0.5, 0.6, 0.2), "start <= end"), ((0.5, -0.1, 0.2), "start"),
                                              ((0.5, 0.2, 1.5), "end"), ((float("nan"), 0.2, 0.6), "finite")])
def test_ramp_errors(args, match):
    with pytest.raises(ValueError, match=match):
        ramp(*args)
    with pytest.raises(ValueError, match="kind"):
        ramp(0.5, 0.2, 0.6, "exp")  # type: ignore[arg-type]


def test_parse_ramp():
    assert parse_ramp("0.2:0.6") == (0.2, 0.6)
    for bad in ("0.2", "a:b", "0.7:0.2"):
        with pytest.raises(ValueError):
            parse_ramp(bad)


def test_sparsity_loss_value_and_gradient():
    a = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], requires_grad=True)  # rate 0.75
    b = torch.zeros(1, 2, 3)  # rate 0
    c = torch.full((1, 2, 5), 7.0)  # not spiking: ignored
    loss = sparsity_loss([a, b, c], [True, True, False], 0.25)
    assert float(loss.detach()) == pytest.approx(((0.75 - 0.25) ** 2 + 0.25 ** 2) / 2)
    loss.backward()
    torch.testing.assert_close(a.grad, torch.full_like(a, 2 * 0.5 / 4 / 2))
    assert float(sparsity_loss([c], [False], 0.1)) == 0.0
    with pytest.raises(ValueError, match="mask"):
        sparsity_loss([a], [True, False], 0.1)
    with pytest.raises(ValueError, match="target"):
        sparsity_loss([a], [True], 1.5)
    assert [float(r.detach()) for r in layer_rates([a, b], [True, False])] == [0.75]


def _snn(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(cell="alif", layers=2, width=24, dropout=0.0), input_size=8, output_size=10,
                       seq_len=8)


@pytest.mark.parametrize("target", [0.5, 0.2])
def test_fit_initial_rate_hits_target_and_only_moves_biases(target):
    torch.set_num_threads(1)
    model = _snn()
    model.readout.weight.requires_grad_(False)  # a user's frozen parameter must stay frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(32, 8, 8, generator=g), torch.zeros(32)) for _ in range(3)]
    rep = fit_initial_rate(model, batches, target, steps=400, lr=0.05, tol=0.02)
    assert rep.converged, rep.summary()
    assert all(abs(r - target) > 0.1 for r in rep.before)  # the untuned rates were far from the target
    with torch.no_grad():
        rates = [float(r) for r in layer_rates(model.run(batches[0][0]).layer_outputs, spiking_mask(model))]
    assert all(abs(r - target) < 0.05 for r in rates), rates
    assert abs(float(rep) - target) < 0.05
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(".bias") and k.startswith("cells.") for k in changed)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert "initial firing rate fit" in rep.summary()


def test_fit_initial_rate_errors_and_restores_on_failure():
    model = _snn()
    with pytest.raises(ValueError, match="target"):
        fit_initial_rate(model, [torch.rand(2, 8, 8)], 0.0)
    with pytest.raises(ValueError, match="no batches"):
        fit_initial_rate(model, [], 0.5)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(ValueError):  # wrong input width: fails inside the fit
        fit_initial_rate(model, [torch.rand(2, 8, 3)], 0.5)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    gru = build_model(ModelConfig(cell="gru", layers=1, width=4), input_size=8, output_size=10)
    with pytest.raises(ValueError, match="no spiking layer"):
        fit_initial_rate(gru, [torch.rand(2, 8, 8)], 0.5)
    assert spiking_mask(gru) == [False]


def test_fit_initial_rate_one_shot_iterator():
    model = _snn(1)
    it = iter([torch.rand(16, 8, 8) for _ in range(3)])
    rep = fit_initial_rate(model, it, 0.3, steps=50)
    assert rep.steps <= 4  # ran out of the iterator's 3 batches (or converged) without error
