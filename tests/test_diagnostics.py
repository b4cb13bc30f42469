"""Diagnostics: radii over time, the gradient-norm grid, firing rates, figures; and the pretrain / diagnose CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from stablernn.diagnostics import (
    GradientGrid,
    default_sequence_loss,
    firing_rates,
    gradient_grid,
    plot_gradient_grid,
    plot_radii_over_time,
)
from stablernn.lsc.measures import spectral_radius
from stablernn.lsc.radii import RadiiTrace, batch_x, measured_steps, radii_over_time
from stablernn.lsc.transitions import rnn_transitions
from stablernn.models import FFN, ModelConfig, build_model

torch.set_num_threads(1)


def _model(kind: str = "gru", layers: int = 3, width: int = 8, **kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(cell=kind, layers=layers, width=width, **kw), input_size=4, output_size=5)


def test_measured_steps():
    assert measured_steps(5, None) == [0, 1, 2, 3, 4]
    assert measured_steps(100, 3) == [0, 50, 99]
    assert measured_steps(4, 10) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        measured_steps(10, 0)


def test_radii_over_time_shapes_and_values():
    model = _model()
    x = torch.rand(6, 7, 4)
    tr = radii_over_time(model, x, steps=3)
    assert isinstance(tr, RadiiTrace) and tr.times == [0, 3, 6]
    assert {f: tuple(v.shape) for f, v in tr.radii.items()} == {"time": (3, 3), "depth": (3, 2), "encoder": (3, 1),
                                                               "decoder": (3, 1)}
    # the first measured step starts from zero states: compare with the engine directly
    first = rnn_transitions(model.eval(), x[:, 0], model.initial_states(6), ["time"]).transitions
    with torch.no_grad():
        expected = [float(spectral_radius(t.jacobian()).mean()) for t in first]
    torch.testing.assert_close(tr.radii["time"][0], torch.tensor(expected), rtol=1e-5, atol=1e-6)
    means = tr.mean()
    assert len(means["time"]) == 3 and all(math.isfinite(v) for v in means["time"])


def test_radii_over_time_ffn():
    torch.manual_seed(0)
    ffn = FFN(4, 8, input_size=6, output_size=3)
    tr = radii_over_time(ffn, torch.randn(5, 6))
    assert tr.times == [0] and tr.radii["depth"].shape == (1, 3)


def test_gradient_grid_matches_autograd_on_the_models_own_states():
    # GRU: the cell's output and its state are the same tensor, so dL/dh from the model's own step loop is dL/ds
    model = _model("gru").eval()
    x, y = torch.rand(4, 6, 4), torch.randint(0, 5, (4,))
    grid = gradient_grid(model, x, y)
    assert grid.norms.shape == (6, 3) and grid.node == ["state"] * 3
    assert all(p.grad is None for p in model.parameters())  # parameters' gradients untouched
    states = model.initial_states(4)
    hs, logits = [], []
    for x_t in x.unbind(1):
        lt, states, _ = model.step(x_t, states)
        for s in states:
            s.h.retain_grad()
        hs.append([s.h for s in states])
        logits.append(lt)
    loss = F.cross_entropy(torch.stack(logits, 1).mean(1), y, reduction="none")
    loss.sum().backward()
    ref = torch.tensor([[float(h.grad.norm(dim=-1).mean()) for h in row] for row in hs])
    torch.testing.assert_close(grid.norms, ref, rtol=1e-5, atol=1e-8)
    assert grid.loss == pytest.approx(float(loss.mean().detach()), rel=1e-6)


def test_gradient_grid_nodes_for_lru_and_ffn():
    g = gradient_grid(_model("lru", 2), torch.rand(3, 5, 4), torch.randint(0, 5, (3,)))
    assert g.node == ["output", "output"] and torch.all(g.norms > 0)
    torch.manual_seed(0)
    ffn = FFN(4, 8, input_size=6, output_size=3)
    gf = gradient_grid(ffn, torch.randn(5, 6), torch.randint(0, 3, (5,)))
    assert gf.norms.shape == (1, 4)


def test_default_sequence_loss_kinds():
    logits = torch.randn(3, 4, 5)
    assert default_sequence_loss(logits, torch.tensor([0, 1, 2])).shape == (3,)
    y = torch.randint(0, 5, (3, 4))
    y[0, :2] = -100
    per = default_sequence_loss(logits, y)
    ref0 = F.cross_entropy(logits[0, 2:], y[0, 2:])
    assert per[0] == pytest.approx(float(ref0), rel=1e-5)
    assert default_sequence_loss(logits, torch.randn(3, 5)).shape == (3,)


def test_firing_rates():
    model = _model("lif", 2, threshold=0.1)
    x = torch.rand(4, 6, 4) * 3
    rates = firing_rates(model, x)
    out = model.eval().run(x)
    assert rates == pytest.approx([float(o.detach().mean()) for o in out.layer_outputs], rel=1e-6)
    assert rates[0] > 0
    assert firing_rates(_model("gru", 2), x) == [None, None]


def test_batch_x():
    x = torch.zeros(2, 3)
    assert batch_x(x) is x and batch_x((x, None)) is x
    with pytest.raises(TypeError):
        batch_x("x")


def test_figures(tmp_path):
    model = _model()
    x, y = torch.rand(4, 6, 4), torch.randint(0, 5, (4,))
    g = gradient_grid(model, x, y)
    assert isinstance(g, GradientGrid)
    p = plot_gradient_grid({"a": g, "b": g}, tmp_path / "grid.png")
    q = plot_radii_over_time(radii_over_time(model, x, steps=2), tmp_path / "r.png", targets={"time": 0.5})
    assert p.stat().st_size > 1000 and q.stat().st_size > 1000


# --- CLI -----------------------------------------------------------------------------------------------------------
def test_cli_pretrain_writes_loadable_weights(tmp_path):
    from stablernn.cli import app

    out = tmp_path / "pt"
    res = CliRunner().invoke(app, ["pretrain", "--task", "digits", "--cell", "gru", "--layers", "2", "--width", "8",
                                   "--target", "0.5", "--max-steps", "3", "--measure-steps", "1", "--no-progress",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "time" in res.output and "stop:" in res.output
    sd = torch.load(out / "pretrained.pt", weights_only=True)
    model = build_model(ModelConfig(cell="gru", layers=2, width=8), input_size=8, output_size=10)
    model.load_state_dict(sd)
    rep = json.loads((out / "lsc_report.json").read_text())
    assert rep["target"]["time"] == 0.5 and rep["steps"] == 3
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["init_from"].endswith("pretrained.pt") and cfg["lsc"] is None
    assert json.loads((out / "lsc_config.json").read_text())["target"] == 0.5


def test_cli_diagnose_before_after(tmp_path):
    from stablernn.cli import app

    out = tmp_path / "diag"
    res = CliRunner().invoke(app, ["diagnose", "--task", "digits", "--cell", "lif", "--layers", "2", "--width", "8",
                                   "--threshold", "0.2", "--steps", "2", "--samples", "4", "--before-after-lsc",
                                   "--lsc-steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "firing rates" in res.output and "after LSC" in res.output
    for name in ("gradient_grid.png", "radii.png", "radii_after_lsc.png", "diagnostics.json"):
        assert (out / name).is_file(), name
    d = json.loads((out / "diagnostics.json").read_text())
    assert len(d["before"]["gradient_grid"]) == 8 and len(d["before"]["gradient_grid"][0]) == 2
    assert "lsc_report" in d
    assert res.output.count("dynamics: top Lyapunov exponent") == 2  # before and after LSC (issue 8)
    for key in ("before", "after_lsc"):
        dyn = d[key]["dynamics"]
        assert set(dyn) == {"top_lyapunov", "mc"} and 0.0 <= dyn["mc"] <= 30.0


def test_cli_bad_option_is_a_user_error(tmp_path):
    from stablernn.cli import app

    res = CliRunner().invoke(app, ["diagnose", "--task", "digits", "--samples", "0", "--out", str(tmp_path)])
    assert res.exit_code != 0 and isinstance(res.exception, ValueError)
