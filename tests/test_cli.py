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
    (["train", "--optimizer", "lion"], "--optimizer must be one of adamw"),
    (["train", "--rate-ramp", "a:b"], "--rate-ramp expects values separated by ':'"),
    (["train", "--config", "missing.toml"], "config file missing.toml does not exist"),
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
    run_dir = tmp_path / "runs" / "digits-gru-2x16-s0"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert (cfg["model"]["cell"], cfg["model"]["width"], cfg["train"]["epochs"]) == ("gru", 16, 1)
    assert cfg["train"]["rate_ramp"] == [0.1, 0.5]
    assert "test_acc" in out and str(run_dir) in out


def test_help_lists_every_command(capsys):
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    for cmd in ("train", "demo", "data"):
        assert cmd in out
