"""The stabilisers users use today (recurrent init, chrono, LSUV, layer norm), the theory targets, LSC's activity
guard and ``--stable auto`` (issue 16)."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import Tensor

from stablernn.cells import ALIFCell, ElmanCell, GRUCell, LSTMCell, check_cell, run_steps
from stablernn.cells.fast_gated import gru_cell_sequence, lstm_cell_sequence
from stablernn.data import DataConfig, load_task
from stablernn.inits import chrono_init_, init_model_, lsuv_init_, recurrent_init_
from stablernn.lsc.activity import (
    ActivityReport,
    activity_penalty,
    check_activity,
    guard_activity,
    refit_goal,
    refit_rates_,
    refittable,
    spiking_rates,
)
from stablernn.lsc.config import LSCConfig
from stablernn.lsc.pretrain import LSCReport, lsc_pretrain, resolve_targets
from stablernn.lsc.theory import OWN_CLOCK_CELLS, log10_gradient_bound, stable_targets, theory_targets
from stablernn.models import ModelConfig, build_model
from stablernn.train import RunConfig, TrainConfig, fit
from stablernn.train.stable import (
    AUTO_CONDITIONS,
    FALLBACK_CONDITIONS,
    IDENTITY_INIT_CELLS,
    LAYER_NORM_CELLS,
    lsuv_for_run,
    resolve_stable,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return load_task(DataConfig(task="digits", batch_size=32))


def _x(digits, n: int = 32) -> Tensor:
    return next(iter(digits.train))[0][:n]


# --- recurrent init -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", [ElmanCell(3, 6, "relu"), GRUCell(3, 6), LSTMCell(3, 6)])
def test_recurrent_init_orthogonal_and_identity_per_gate_block(cell):
    H = cell.hidden_size
    assert recurrent_init_(cell, "orthogonal", gain=2.0)
    for k in range(cell.weight_hh.shape[0] // H):
        b = cell.weight_hh[k * H:(k + 1) * H].detach()
        assert torch.allclose(b @ b.T, 4.0 * torch.eye(H), atol=1e-5)
    assert recurrent_init_(cell, "identity")
    for k in range(cell.weight_hh.shape[0] // H):
        assert torch.equal(cell.weight_hh[k * H:(k + 1) * H].detach(), torch.eye(H))
    if isinstance(cell, ElmanCell):  # IRNN: zero biases too
        assert torch.count_nonzero(cell.bias) == 0


def test_recurrent_init_default_and_other_cells_are_left_alone():
    cell = ElmanCell(3, 5)
    w = cell.weight_hh.detach().clone()
    assert not recurrent_init_(cell, "default") and torch.equal(cell.weight_hh, w)
    alif = ALIFCell(3, 5)
    w = alif.weight_hh.detach().clone()
    assert not recurrent_init_(alif, "orthogonal") and torch.equal(alif.weight_hh, w)
    with pytest.raises(ValueError, match="unknown rec_init 'eye'; choose one of default, orthogonal, identity"):
        recurrent_init_(cell, "eye")


def test_build_model_applies_identity_init_irnn():
    m = build_model(ModelConfig(cell="relu_rnn", layers=2, width=8, rec_init="identity"), input_size=3,
                    output_size=2)
    for c in m.cells:
        assert torch.equal(c.weight_hh.detach(), torch.eye(8)) and torch.count_nonzero(c.bias) == 0


# --- chrono -------------------------------------------------------------------------------------------------------
def test_chrono_init_lstm_and_gru_biases():
    torch.manual_seed(0)
    lstm, gru, T = LSTMCell(2, 400), GRUCell(2, 400), 50
    assert chrono_init_(lstm, T) and chrono_init_(gru, T)
    H = 400
    bf = lstm.bias_ih[H:2 * H].detach()
    assert bf.min() >= 0.0 and bf.max() <= math.log(T - 1) + 1e-6 and bf.max() > math.log(T - 1) - 0.1
    assert torch.equal(lstm.bias_ih[:H].detach(), -bf)
    assert torch.count_nonzero(lstm.bias_hh[:2 * H]) == 0
    # forgetting times 1/(1 - σ(b_f)) spread up to about T_max
    times = 1.0 / (1.0 - torch.sigmoid(bf))
    assert times.max() > 0.8 * T and times.min() >= 1.9
    bz = gru.bias_ih[H:2 * H].detach()
    assert bz.min() >= 0.0 and bz.max() <= math.log(T - 1) + 1e-6
    assert not chrono_init_(ElmanCell(2, 3), T)
    with pytest.raises(ValueError, match="t_max > 2"):
        chrono_init_(lstm, 2)


def test_build_model_chrono_uses_the_task_sequence_length():
    torch.manual_seed(0)
    m = build_model(ModelConfig(cell="lstm", layers=1, width=300, chrono=True), input_size=2, output_size=2,
                    seq_len=20)
    bf = m.cells[0].bias_ih[300:600].detach()
    assert bf.max() <= math.log(19) + 1e-6 and bf.max() > math.log(19) - 0.2
    m = build_model(ModelConfig(cell="lstm", layers=1, width=300, chrono=True, chrono_t_max=1000.0),
                    input_size=2, output_size=2, seq_len=20)
    assert m.cells[0].bias_ih[300:600].max() > math.log(19) + 1.0


@pytest.mark.parametrize("kw,msg", [
    ({"cell": "alif", "rec_init": "orthogonal"}, "rec_init='orthogonal' applies to lstm, gru"),
    ({"cell": "relu_rnn", "chrono": True}, "chrono init applies to lstm and gru, not to cell 'relu_rnn'"),
    ({"cell": "alif", "layer_norm": True}, "layer_norm applies to lstm, gru"),
    ({"cell": "lru", "lsuv": True}, "lsuv scales input weights (weight_ih), which cell 'lru'"),
    ({"cell": "lstm", "chrono": True, "chrono_t_max": 1.0}, "chrono_t_max must be > 2"),
    ({"rec_init": "eye"}, "unknown rec_init 'eye'"),
])
def test_model_config_rejects_stabilisers_a_cell_cannot_take(kw, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**kw)


def test_init_model_ignores_models_without_cells():
    class Opts:
        rec_init, chrono, chrono_t_max = "identity", True, None

    lin = torch.nn.Linear(2, 2)
    assert init_model_(lin, Opts(), 10) is lin


# --- layer norm ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: ElmanCell(3, 5, "tanh", layer_norm=True),
                                  lambda: GRUCell(3, 5, layer_norm=True), lambda: LSTMCell(3, 5, layer_norm=True)])
def test_layer_norm_cells_keep_the_contract_and_the_sequence_path_is_the_step_loop(make):
    torch.manual_seed(0)
    cell = make()
    check_cell(cell)
    x = torch.randn(4, 7, 3)
    out, st = cell.forward_sequence(x, cell.initial_state(4))
    ref, st_ref = run_steps(cell, x, cell.initial_state(4))
    assert torch.allclose(out, ref, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(st, st_ref, strict=True))


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_fused_kernel_would_ignore_layer_norm_so_it_is_not_used(kind):
    torch.manual_seed(0)
    cell = GRUCell(3, 5, layer_norm=True) if kind == "gru" else LSTMCell(3, 5, layer_norm=True)
    with torch.no_grad():
        cell.weight_ih.mul_(5.0)
    x = torch.randn(4, 6, 3)
    fused = (gru_cell_sequence if kind == "gru" else lstm_cell_sequence)(cell, x, cell.initial_state(4))[0]
    out = cell.forward_sequence(x, cell.initial_state(4))[0]
    assert not torch.allclose(out, fused, atol=1e-3)  # the kernel ignores layer norm: a different network


def test_layer_norm_makes_the_elman_step_invariant_to_the_weights_scale():
    torch.manual_seed(0)
    a, b = ElmanCell(3, 6, "tanh", layer_norm=True), ElmanCell(3, 6, "tanh", layer_norm=True)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.weight_ih.mul_(30.0)
        b.weight_hh.mul_(30.0)
    x = torch.randn(5, 9, 3)
    ya, yb = run_steps(a, x, a.initial_state(5))[0], run_steps(b, x, b.initial_state(5))[0]
    assert torch.allclose(ya, yb, atol=1e-4)
    plain = ElmanCell(3, 6, "tanh")  # without layer norm the same scaling saturates the units
    with torch.no_grad():
        plain.weight_ih.mul_(30.0)
    assert run_steps(plain, x, plain.initial_state(5))[0].abs().mean() > ya.abs().mean() + 0.2


def test_model_config_layer_norm_builds_layer_norm_cells():
    m = build_model(ModelConfig(cell="gru", layers=2, width=8, layer_norm=True), input_size=3, output_size=2)
    assert all(c.layer_norm for c in m.cells)
    assert "cells.0.ln_ih_gain" in m.state_dict()


# --- LSUV ---------------------------------------------------------------------------------------------------------
def _input_var(model, x: Tensor, layer: int) -> float:
    seen = []

    def hook(l, inp, out, st):
        if l == layer:
            seen.append(inp)
        return out, st

    with torch.no_grad():
        states = model.initial_states(x.shape[0])
        for x_t in x.unbind(1):
            states = model.step(x_t, states, hook=hook, decode=False).states
    return float((torch.cat(seen) @ model.cells[layer].weight_ih.detach().t()).var())


@pytest.mark.parametrize("cell", ["tanh_rnn", "lstm", "alif"])
def test_lsuv_brings_every_layers_input_preactivation_variance_to_one(cell, digits):
    torch.manual_seed(0)
    m = build_model(ModelConfig(cell=cell, layers=3, width=16), digits.info)
    x = _x(digits)
    before = lsuv_init_(m, x)
    assert any(abs(v - 1.0) > 0.2 for v in before)  # there was something to fix
    for l in range(3):
        assert _input_var(m, x, l) == pytest.approx(1.0, rel=1e-3)


def test_lsuv_skips_cells_without_input_weights_and_rejects_non_stacks(digits):
    m = build_model(ModelConfig(cell="lru", layers=2, width=8), digits.info)
    assert all(math.isnan(v) for v in lsuv_init_(m, _x(digits, 4)))
    with pytest.raises(TypeError, match="lsuv_init_ needs a stack"):
        lsuv_init_(torch.nn.Linear(2, 2), torch.zeros(2, 3, 2))


def test_fit_applies_lsuv_before_training(digits, tmp_path):
    run = RunConfig(name="lsuv", out_dir=str(tmp_path), model=ModelConfig(cell="gru", layers=2, width=8, lsuv=True),
                    train=TrainConfig(epochs=1, max_batches=2, progress=False))
    fit(run, data=digits)
    rows = [json.loads(s) for s in (tmp_path / "lsuv" / "metrics.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r.get("phase") == "lsuv")
    assert len(row["var_before"]) == 2
    assert lsuv_for_run(RunConfig(), torch.nn.Linear(1, 1), []) == []  # lsuv off: nothing


# --- theory targets -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("L,T", [(2, 100), (4, 100), (8, 784), (5, 8)])
def test_theory_targets_split_one_and_beat_the_other_splits_on_the_worst_path(L, T):
    t = theory_targets(L, T)
    assert t["time"] + t["depth"] == pytest.approx(1.0)
    dts = np.arange(T)

    def worst(rt, rl):
        return float(np.min(log10_gradient_bound(dts, L - 1, rt, rl)))

    mine = worst(t["time"], t["depth"])
    assert mine >= worst(0.5, 0.5) and mine >= worst(T / (L + T), L / (L + T))
    assert t["time"] > t["depth"] or T < 2 * L  # long sequences favour time


def test_theory_targets_single_layer_and_bad_input():
    assert theory_targets(1, 100)["time"] == 1.0 and "depth" not in theory_targets(1, 100)
    with pytest.raises(ValueError, match="L >= 1 layers and T >= 1 steps"):
        theory_targets(0, 10)


def test_resolve_targets_theory_mode():
    m = build_model(ModelConfig(cell="gru", layers=4, width=8), input_size=3, output_size=2)
    got = resolve_targets(m, LSCConfig(target="theory"), seq_len=100)
    want = theory_targets(4, 100)
    assert got["time"] == pytest.approx(want["time"]) and got["depth"] == pytest.approx(want["depth"])
    assert got["encoder"] == 1.0 and got["decoder"] == 1.0
    one = build_model(ModelConfig(cell="gru", layers=1, width=8), input_size=3, output_size=2)
    assert resolve_targets(one, LSCConfig(target="theory"), seq_len=100)["time"] == 1.0


# --- activity guard -----------------------------------------------------------------------------------------------
def _alif(digits, layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(cell="alif", layers=layers, width=16, threshold=0.5), digits.info)


_SHORT = {"max_steps": 12, "progress": False, "batch_size": 16, "measure_steps": 2}


@pytest.mark.parametrize("layers", [2, 4])
def test_no_spiking_layer_leaves_lsc_silent_or_saturated(layers, digits):
    m = _alif(digits, layers)
    report = lsc_pretrain(m, [_x(digits)], target=0.5, **_SHORT)
    act = ActivityReport(**report.activity)
    assert act.in_range
    rates = spiking_rates(m, [_x(digits, 16)])
    assert all(0.01 <= r <= 0.9 for r in rates)


def test_guard_refits_a_layer_lsc_left_silent_and_says_so(digits):
    x = [_x(digits, 16)]
    for guard in ((0.01, 0.9), None):
        m = _alif(digits)
        with torch.no_grad():
            m.cells[1].bias.fill_(-20.0)  # layer 1 silent whatever LSC does in a few steps
        report = lsc_pretrain(m, x, target=0.5, activity=guard, **_SHORT)
        rates = spiking_rates(m, x)
        if guard is None:  # the user turned the guard off: the silent layer stays silent, no activity report
            assert rates[1] < 0.01 and report.activity is None
        else:
            act = ActivityReport(**report.activity)
            assert act.silenced == [1] and 1 in act.refit and act.in_range
            assert 0.01 <= rates[1] <= 0.9
            assert "silencing layer(s) [1]" in report.table()
            assert LSCReport.from_json(json.loads(json.dumps(report.to_json()))).activity == report.activity


def test_guard_off_for_nets_without_spikes_and_refit_checks(digits):
    m = build_model(ModelConfig(cell="gru", layers=2, width=8), digits.info)
    assert guard_activity(m, [_x(digits, 4)], (0.01, 0.9), None) is None
    assert spiking_rates(m, [_x(digits, 4)]) == [None, None]
    alif = _alif(digits)
    assert refit_rates_(alif, [_x(digits, 4)], [], 0.1) == 0
    with pytest.raises(ValueError, match=r"goal firing rate must lie in \(0, 1\)"):
        refit_rates_(alif, [_x(digits, 4)], [0], 1.5)
    assert refittable(alif.cells[0]) and not refittable(m.cells[0])  # a trainable per-neuron bias, or not
    assert refit_goal(0.01, 0.9) == pytest.approx(0.0949, abs=1e-4)  # the geometric mean of the range
    assert refit_goal(0.0, 0.9) == pytest.approx((1e-4 * 0.9) ** 0.5)  # a zero floor counts as 1e-4


def test_activity_penalty_costs_one_per_silent_layer_and_nothing_in_range(digits):
    from stablernn.cells import ALIFState

    m = _alif(digits)
    B, n = 4, 16
    silent = [ALIFState(torch.zeros(B, n), torch.zeros(B, n), torch.zeros(B, n)) for _ in range(2)]
    busy = [ALIFState(torch.zeros(B, n), torch.zeros(B, n), (torch.rand(B, n) < 0.3).float()) for _ in range(2)]
    assert float(activity_penalty(m, silent, (0.01, 0.9))) == pytest.approx(2.0)
    assert float(activity_penalty(m, busy, (0.01, 0.9))) == 0.0
    saturated = [ALIFState(torch.zeros(B, n), torch.zeros(B, n), torch.ones(B, n)) for _ in range(2)]
    assert float(activity_penalty(m, saturated, (0.01, 0.9))) == pytest.approx(2.0)
    assert activity_penalty(m, silent, None) is None


@pytest.mark.parametrize("bad", [(0.5, 0.1), (0.1,), "x", (-0.1, 0.5)])
def test_activity_range_is_checked(bad):
    with pytest.raises(ValueError, match="LSC activity"):
        check_activity(bad)
    with pytest.raises(ValueError, match="LSC activity"):
        lsc_pretrain(ElmanCell(2, 3), torch.zeros(2, 3, 2), activity=bad)


# --- --stable auto ------------------------------------------------------------------------------------------------
def test_stable_targets_keep_every_signal_edge_at_one_and_leave_own_clocks_alone():
    assert stable_targets(4, "tanh_rnn") == {"time": 1.0, "depth": 1.0, "encoder": 1.0, "decoder": 1.0}
    assert stable_targets(1, "relu_rnn") == {"time": 1.0, "encoder": 1.0, "decoder": 1.0}
    for cell in ("gru", "lstm", "alif", "lif", "lru"):
        assert cell in OWN_CLOCK_CELLS and "time" not in stable_targets(3, cell)
        assert stable_targets(3, cell)["depth"] == 1.0
    with pytest.raises(ValueError, match="L >= 1"):
        stable_targets(0, "gru")


def test_resolve_stable_expands_to_stable_targets_and_the_spiking_design(digits):
    assert resolve_stable(RunConfig()) == RunConfig()
    alif = resolve_stable(RunConfig(model=ModelConfig(cell="alif", layers=4), train=TrainConfig(stable="auto")))
    assert alif.lsc.target == {"depth": 1.0, "encoder": 1.0, "decoder": 1.0} and alif.lsc.activity == (0.01, 0.9)
    assert set(alif.lsc.families) == {"depth", "encoder", "decoder"}  # the ALIF's leak keeps its own time radius
    assert alif.model.conditions == AUTO_CONDITIONS
    assert not alif.model.layer_norm
    with pytest.raises(ValueError, match="families are limited"):
        resolve_stable(RunConfig(model=ModelConfig(cell="alif"), lsc=LSCConfig(families=("time",)),
                                 train=TrainConfig(stable="auto")))
    own = resolve_stable(RunConfig(model=ModelConfig(cell="lif", conditions=("I",)), lsc=LSCConfig(target=0.7,
                                   max_steps=5), train=TrainConfig(stable="auto")))
    assert own.model.conditions == ("I",) and own.lsc.target == 0.7 and own.lsc.max_steps == 5
    # with the task: Condition II is kept where it has a solution (a LIF on digits), dropped where it has none
    lif = resolve_stable(RunConfig(model=ModelConfig(cell="lif", width=8), train=TrainConfig(stable="auto")),
                         digits.info)
    assert lif.model.conditions == AUTO_CONDITIONS
    weak = resolve_stable(RunConfig(model=ModelConfig(cell="alif", width=8), train=TrainConfig(stable="auto")),
                          digits.info)
    assert weak.model.conditions == FALLBACK_CONDITIONS
    with pytest.raises(ValueError, match="--stable auto is for recurrent nets"):
        resolve_stable(RunConfig(model=ModelConfig(cell="ffn"), train=TrainConfig(stable="auto")))


@pytest.mark.parametrize("cell", ["tanh_rnn", "relu_rnn", "gru", "lstm"])
def test_resolve_stable_gives_the_classic_cells_layer_norm_and_no_lsc(cell):
    auto = RunConfig(model=ModelConfig(cell=cell, layers=4), train=TrainConfig(stable="auto"))
    got = resolve_stable(auto)
    assert cell in LAYER_NORM_CELLS
    assert got.model.layer_norm and got.lsc is None and got.model.conditions == ()
    assert resolve_stable(got) == got  # a resolved config (config.json) resolves to itself
    # [lsc] options without a target of their own are dropped with LSC; a target the run names is kept
    assert resolve_stable(dataclasses.replace(auto, lsc=LSCConfig(max_steps=5))).lsc is None
    own = resolve_stable(dataclasses.replace(auto, lsc=LSCConfig(target=0.7)))
    assert own.model.layer_norm and own.lsc.target == 0.7
    assert resolve_stable(dataclasses.replace(auto, train=TrainConfig(stable="off"))).model.layer_norm is False
    # the ReLU cell also gets the identity recurrent init (IRNN), unless the run chose a recurrent init itself
    assert got.model.rec_init == ("identity" if cell in IDENTITY_INIT_CELLS else "default")
    chosen = resolve_stable(dataclasses.replace(auto, model=ModelConfig(cell=cell, layers=4, rec_init="orthogonal")))
    assert chosen.model.rec_init == "orthogonal"


def test_train_stable_auto_gives_a_gru_layer_norm_and_no_lsc_from_the_command_line(capsys, tmp_path):
    from stablernn.cli import main

    argv = ["train", "--cell", "gru", "--layers", "2", "--width", "8", "--epochs", "1", "--max-batches", "2",
            "--stable", "auto", "--out-dir", str(tmp_path), "--name", "auto", "--no-progress"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code in (0, None), capsys.readouterr().err
    cfg = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert cfg["model"]["layer_norm"] is True and cfg.get("lsc") is None
    assert not (tmp_path / "auto" / "lsc_report.json").exists()


def test_train_stable_auto_from_the_command_line(capsys, tmp_path):
    from stablernn.cli import main

    argv = ["train", "--cell", "alif", "--layers", "2", "--width", "8", "--epochs", "1", "--max-batches", "2",
            "--stable", "auto", "--lsc-max-steps", "3", "--lsc-batches", "1", "--lsc-measure-steps", "2",
            "--out-dir", str(tmp_path), "--name", "auto", "--no-progress", "--no-lsc-progress"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code in (0, None), capsys.readouterr().err
    run_dir = tmp_path / "auto"
    cfg = json.loads((run_dir / "config.json").read_text())
    # digits' pixel rows at threshold 1 leave Condition II without a solution for a 2x8 ALIF: auto adds no condition
    assert cfg["model"]["conditions"] == list(FALLBACK_CONDITIONS)
    assert cfg["lsc"]["target"] == stable_targets(2, "alif")
    report = json.loads((run_dir / "lsc_report.json").read_text())
    # what LSC pre-trained: depth, encoder and decoder to 1; the ALIF's time radius (its leak) is not a target
    assert report["target"] == pytest.approx(stable_targets(2, "alif")) and "activity" in report


# --- the benchmark specs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,runs", [("stability_auto_gated", 12), ("stability_auto_ln", 54),
                                       ("stability_auto_relu", 6), ("stability_auto_relu_irnn", 6)])
def test_stable_auto_probe_specs_expand(name, runs):
    from pathlib import Path

    from stablernn.sweep import load_spec
    from stablernn.sweep.runner import expand

    got = expand(load_spec(Path(__file__).resolve().parents[1] / "experiments" / f"{name}.toml"))
    assert len(got) == runs
    assert any(r.config.train.stable == "auto" or r.config.model.rec_init == "identity" for r in got)
    assert all(r.config.model.layers == 4 for r in got)


@pytest.mark.parametrize("name,runs", [("stability_bench_quick", 144), ("stability_bench_full", 1197),
                                       ("stability_calibration", 20), ("stability_calibration_b", 5)])
def test_stability_benchmark_specs_expand_to_valid_runs(name, runs):
    from pathlib import Path

    from stablernn.sweep import load_spec
    from stablernn.sweep.runner import expand

    spec = load_spec(Path(__file__).resolve().parents[1] / "experiments" / f"{name}.toml")
    got = expand(spec)
    assert len(got) == runs
    auto = [r for r in got if r.config.train.stable == "auto"]
    assert auto and all(r.config.lsc is not None and r.config.model.layers > 1 for r in auto)
    # every stabiliser arm is compared with a 1-layer default net of its cell on the same task (calibration b
    # shares calibration a's 1-layer ALIF)
    shallow = {(r.config.model.cell, r.config.data.task, r.config.data.seq_len) for r in got
               if r.config.model.layers == 1}
    assert all((r.config.model.cell, r.config.data.task, r.config.data.seq_len) in shallow for r in got
               if name != "stability_calibration_b" or r.config.model.cell != "alif")
