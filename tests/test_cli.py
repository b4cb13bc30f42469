"""The command line: user errors give one clear line (no traceback); train runs and resumes."""
from __future__ import annotations

import json

import pytest

from stablernn.cli import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.mark.parametrize("argv,msg", [
    (["train", "--cell", "foo"], "unknown cell 'foo'; choose one of lstm, gru"),
    (["train", "--task", "nope"], "unknown task 'nope'; known tasks: adding"),
    (["train", "--width", "-3"], "width must be a positive integer, got -3"),
    (["train", "--optimizer", "lion"], "unknown optimizer 'lion'; choose one of adamw"),
    (["train", "--rate-ramp", "a:b"], "--rate-ramp expects values separated by ':'"),
    (["train", "--config", "missing.toml"], "config file missing.toml does not exist"),
    (["train", "--clip-norm", "abc"], "--clip-norm expects a number or none, got 'abc'"),
])
def test_user_errors_are_one_line(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0]
    assert "Traceback" not in err


def test_malformed_config_file(capsys, tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[model\ncell = 'lstm'")
    code, _, err = _run(["train", "--config", str(p)], capsys)
    assert code == 2 and err.startswith(f"error: malformed config file {p}")


def test_train_writes_a_run_and_options_override_the_config_file(capsys, tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[model]\ncell = "gru"\nwidth = 64\n[train]\nepochs = 5\n')
    argv = ["train", "--config", str(p), "--width", "16", "--epochs", "1", "--out-dir", str(tmp_path / "runs"),
            "--no-progress", "--rate-ramp", "0.1:0.5"]
    code, out, _ = _run(argv, capsys)
    assert code in (0, None)
    run_dir = tmp_path / "runs" / "digits-gru-2x16-lr0.003-e1-s0"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert (cfg["model"]["cell"], cfg["model"]["width"], cfg["train"]["epochs"]) == ("gru", 16, 1)
    assert cfg["train"]["rate_ramp"] == [0.1, 0.5]
    assert "test_acc" in out and str(run_dir) in out


def test_optional_numbers_take_none_on_the_command_line_and_in_config_files(tmp_path):
    """TOML and the shell have no null: "none" turns an optional number off (``--clip-norm none``), as in sweeps."""
    from stablernn.cli.options import build_run_config, option_specs
    from stablernn.lsc.config import LSCConfig
    from stablernn.train.config import TrainConfig

    specs = option_specs({"train": TrainConfig, "lsc": LSCConfig}, prefixed={"lsc": "lsc"})
    run = build_run_config(specs, {"clip_norm": "none", "lsc_time_limit": "None", "lsc_batch_size": "4"}, None)
    assert run.train.clip_norm is None and run.lsc.time_limit is None and run.lsc.batch_size == 4
    assert build_run_config(specs, {"clip_norm": "0.5"}, None).train.clip_norm == 0.5
    p = tmp_path / "c.toml"
    p.write_text('[train]\nclip_norm = "none"\n')
    assert build_run_config(specs, {}, str(p)).train.clip_norm is None


def test_help_lists_every_command(capsys):
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    for cmd in ("train", "demo", "data"):
        assert cmd in out


def test_demo_configs_and_table(tmp_path):
    from stablernn.cli.train import DEMO_LSC_LR, DEMO_LSC_PATIENCE, DEMO_LSC_STEPS, demo_configs, demo_table
    from stablernn.io import atomic_write_json

    runs = demo_configs(str(tmp_path), seed=3, lsc=True)
    assert [r.name for r in runs] == ["lstm", "lstm-lsc", "gru", "gru-lsc", "alif", "alif-lsc"]
    assert all(r.train.seed == 3 and r.train.threads == 1 and r.data.task == "digits" for r in runs)
    assert [r.lsc.max_steps for r in runs if r.lsc] == [DEMO_LSC_STEPS[c] for c in ("lstm", "gru", "alif")]
    assert all(r.lsc.lr == DEMO_LSC_LR and r.lsc.patience == DEMO_LSC_PATIENCE for r in runs if r.lsc)
    atomic_write_json(tmp_path / "gru-lsc" / "lsc_report.json",
                      {"target": {"time": 0.5}, "before": {"time": [0.8, 0.6]}, "after": {"time": [0.5, 0.52]},
                       "seconds": 3.25})
    results = {"lstm": {"test_acc": 0.9}, "gru": {"test_acc": 0.95}, "gru-lsc": {"test_acc": 0.96, "seconds": 12.04}}
    table = demo_table(results, lsc=True, out_dir=tmp_path).splitlines()
    assert table[0].endswith("| depth radius | LSC s | train s |")
    assert table[2] == "| 2x128 LSTM | 90.0% | - | - | - | - | - |"
    assert table[3] == "| 2x128 GRU | 95.0% | 96.0% | 0.70 -> 0.51 (0.5) | - | 3.2 | 12.0 |"
    assert len(table) == 4  # no ALIF result, no row
    atomic_write_json(tmp_path / "gru-lsc" / "lsc_report.json",
                      {"target": {"time": 0.5, "depth": 0.5}, "before": {"time": [0.8], "depth": [0.3]},
                       "after": {"time": [0.5], "depth": [0.48]}, "seconds": 3.25})
    row = demo_table(results, lsc=True, out_dir=tmp_path).splitlines()[3]
    assert row == "| 2x128 GRU | 95.0% | 96.0% | 0.80 -> 0.50 (0.5) | 0.30 -> 0.48 (0.5) | 3.2 | 12.0 |"
