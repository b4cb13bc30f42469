"""Sweep specs, the runner (serial, processes, Ray), resume after a kill, failure recording, and the report's
aggregates on a real micro-sweep."""
from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stablernn.sweep import expand, load_spec, parse_spec, run_status, run_sweep, write_report
from stablernn.sweep.runner import check_out_dir, config_differences, describe_runs, execute_run, plan
from stablernn.sweep.spec import format_value, parse_override, short_labels

torch.set_num_threads(1)


def micro_spec(out_dir: Path, **extra) -> dict:
    """2 cells x 2 lrs x 2 seeds of tiny nets on digits, one short epoch each."""
    spec = {
        "name": "micro",
        "out_dir": str(out_dir),
        "seeds": [0, 1],
        "base": {"model": {"width": 4, "layers": 1}, "data": {"task": "digits", "batch_size": 128},
                 "train": {"epochs": 1, "max_batches": 2, "progress": False}},
        "grid": {"model.cell": ["gru", "relu_rnn"], "train.lr": [1e-2, 3e-3]},
    }
    spec.update(extra)
    return spec


@pytest.fixture(scope="module")
def micro_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("micro")
    spec = parse_spec(micro_spec(out))
    result = run_sweep(spec, progress=False)
    return spec, result


# --- spec -------------------------------------------------------------------------------------------------------
def test_expand_crosses_grid_zip_and_seeds_with_readable_unique_names(tmp_path):
    spec = parse_spec({
        "out_dir": str(tmp_path), "seeds": [0, 1, 2],
        "base": {"model": {"width": 8}, "lsc": {"max_steps": 7}},
        "grid": {"model.cell": ["gru", "lstm"], "lsc.target": ["none", 1.0, 0.5]},
        "zip": [{"train.lr": [1e-2, 1e-3], "train.epochs": [2, 4]}],
    })
    runs = expand(spec)
    assert len(runs) == 2 * 3 * 2 * 3
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    assert names == [r.name for r in expand(spec)]  # deterministic
    assert all(all(c.isalnum() or c in "._+-" for c in n) for n in names)
    first = runs[0]
    assert first.name == "cell-gru_lsc-none_lr-0.01_epochs-2_s0"
    assert first.config.lsc is None and first.config.train.lr == 1e-2 and first.config.train.epochs == 2
    half = next(r for r in runs if r.varied["lsc.target"] == 0.5 and r.seed == 2 and r.varied["train.lr"] == 1e-3)
    assert half.config.lsc.target == 0.5 and half.config.lsc.max_steps == 7  # base LSC options kept
    assert half.config.lsc.seed == 2 and half.config.train.seed == 2  # seeds reach LSC too
    assert half.config.train.epochs == 4 and half.config.model.cell in ("gru", "lstm")
    assert half.run_dir == Path(tmp_path) / half.name
    assert [r.seed for r in runs[:3]] == [0, 1, 2]  # seeds innermost


def test_lsc_axis_accepts_tables_and_none(tmp_path):
    spec = parse_spec({"out_dir": str(tmp_path), "grid": {"lsc": ["none", {"target": "unbalanced", "lr": 0.01}]},
                       "base": {"model": {"cell": "lru"}}})
    off, on = expand(spec)
    assert off.config.lsc is None
    assert on.config.lsc.target == "unbalanced" and on.config.lsc.lr == 0.01
    assert on.name == "lsc-lr-0.01-target-unbalanced_s0"


def test_zip_lists_may_repeat_values(tmp_path):
    spec = parse_spec({"out_dir": str(tmp_path), "zip": [{"model.init": ["glorot", "he", "glorot"],
                                                          "lsc.target": ["none", "none", 1.0]}],
                       "base": {"model": {"cell": "ffn"}}})
    runs = expand(spec)
    assert [(r.config.model.init, r.config.lsc and r.config.lsc.target) for r in runs] == [
        ("glorot", None), ("he", None), ("glorot", 1.0)]
    assert len({r.name for r in runs}) == 3


def test_none_string_means_none_for_ordinary_fields(tmp_path):
    spec = parse_spec({"out_dir": str(tmp_path), "grid": {"train.clip_norm": ["none", 1.0]},
                       "base": {"model": {"tail": "none"}}})
    assert [r.config.train.clip_norm for r in expand(spec)] == [None, 1.0]
    assert expand(spec)[0].config.model.tail is None
    base_none = parse_spec({"out_dir": str(tmp_path), "base": {"train": {"clip_norm": "none"}}})
    assert expand(base_none)[0].config.train.clip_norm is None


def test_colliding_and_long_names_are_made_unique(tmp_path):
    # "a b" and "a-b" sanitise to the same fragment
    spec = parse_spec({"out_dir": str(tmp_path), "grid": {"data.data_dir": ["a b", "a-b", "x" * 300]}})
    names = [r.name for r in expand(spec)]
    assert len(set(names)) == 3 and all(len(n) <= 130 for n in names)
    assert names[0].startswith("data_dir-a-b_s0_") and names[1].startswith("data_dir-a-b_s0_")


def test_short_labels_and_value_format():
    assert short_labels(["model.cell", "lsc.target", "data.seed", "lsc.seed"]) == {
        "model.cell": "cell", "lsc.target": "lsc", "data.seed": "data-seed", "lsc.seed": "lsc-seed"}
    assert [format_value(v) for v in (1e-5, 0.5, None, "none", True, {"target": 0.5})] == [
        "1e-05", "0.5", "none", "none", "true", "target-0.5"]


@pytest.mark.parametrize("bad, match", [
    ({"grid": {"model.nope": [1]}}, "unknown field 'nope'"),
    ({"grid": {"cell": ["gru"]}}, "section.field"),
    ({"grid": {"model.cell": []}}, "non-empty list"),
    ({"grid": {"model.cell": ["gru", "gru"]}}, "repeats a value"),
    ({"zip": [{"train.lr": [1, 2], "train.epochs": [1]}]}, "different lengths"),
    ({"zip": [{"train.lr": [1, 1], "train.epochs": [2, 2]}]}, "repeats a combination"),
    ({"grid": {"train.seed": [1, 2]}}, "set by seeds"),
    ({"grid": {"model.cell": ["gru", "nonsense"]}}, "run cell-nonsense_s0: unknown cell"),
    ({"seeds": []}, "non-empty list of integers"),
    ({"colour": 1}, "unknown spec key"),
    ({"base": {"optim": {}}}, "unknown \\[base\\] section"),
    ({"resources": {"tpus": 1}}, "resources"),
    ({"grid": {"lsc": [0.5]}}, "axis 'lsc'"),
])
def test_bad_specs_are_refused_with_the_reason(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        parse_spec({"out_dir": str(tmp_path), **bad})


def test_spec_needs_out_dir():
    with pytest.raises(ValueError, match="out_dir"):
        parse_spec({"grid": {}})


def test_load_spec_from_toml_with_overrides(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('out_dir = "x"\nseeds = [0]\n[base.train]\nepochs = 5\n[grid]\n"train.lr" = [0.1, 0.01]\n')
    spec = load_spec(path, out_dir=str(tmp_path / "o"), seeds=[3, 4], overrides=["train.epochs=1", "model.cell=gru"])
    runs = expand(spec)
    assert spec.name == "s" and spec.out_dir == str(tmp_path / "o") and len(runs) == 4
    assert {r.config.train.epochs for r in runs} == {1} and {r.config.model.cell for r in runs} == {"gru"}
    assert [r.seed for r in runs] == [3, 4, 3, 4]
    with pytest.raises(FileNotFoundError):
        load_spec(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("out_dir = \n")
    with pytest.raises(ValueError, match="malformed"):
        load_spec(tmp_path / "bad.toml")


def test_lsc_overrides_do_not_switch_lsc_on(tmp_path):
    spec = load_spec({"out_dir": str(tmp_path), "grid": {"lsc.target": ["none", 0.5]}},
                     overrides=["lsc.max_steps=3"])
    off, on = expand(spec)
    assert off.config.lsc is None and on.config.lsc.max_steps == 3 and on.config.lsc.target == 0.5
    plain = load_spec({"out_dir": str(tmp_path)}, overrides=["lsc.max_steps=3"])
    assert expand(plain)[0].config.lsc is None
    with_base = load_spec({"out_dir": str(tmp_path), "base": {"lsc": {"target": 1.0}}},
                          overrides=["lsc.max_steps=3"])
    assert expand(with_base)[0].config.lsc.max_steps == 3
    with pytest.raises(ValueError, match="unknown field 'nope'"):
        parse_spec({"out_dir": str(tmp_path), "lsc_options": {"nope": 1}})


def test_parse_override():
    assert parse_override("train.lr=1e-3") == ("train.lr", 1e-3)
    assert parse_override("model.cell = gru") == ("model.cell", "gru")
    assert parse_override("train.rate_ramp=[0.1, 0.5]") == ("train.rate_ramp", [0.1, 0.5])
    with pytest.raises(ValueError, match=r"section\.field=value"):
        parse_override("train.lr")


# --- running ----------------------------------------------------------------------------------------------------
def test_micro_sweep_runs_every_run_and_indexes_them(micro_sweep):
    spec, result = micro_sweep
    assert len(result.ran) == 8 and result.count("done") == 8
    index = json.loads((Path(spec.out_dir) / "sweep.json").read_text())
    assert [r["status"] for r in index["runs"]] == ["done"] * 8
    assert index["axes"] == ["model.cell", "train.lr"]
    for r in expand(spec):
        final = json.loads((r.run_dir / "final.json").read_text())
        status = json.loads((r.run_dir / "status.json").read_text())
        assert status["status"] == "done" and final["name"] == r.name
        assert result.results[r.name]["test_acc"] == final["test_acc"]
        assert json.loads((r.run_dir / "config.json").read_text())["train"]["seed"] == r.seed


def test_second_call_skips_finished_runs(micro_sweep):
    spec, _ = micro_sweep
    again = run_sweep(spec, progress=False)
    assert again.ran == [] and len(again.skipped) == 8 and again.count("done") == 8
    assert "8 done" in again.summary()


def test_report_aggregates_equal_hand_computed_means(micro_sweep):
    spec, _ = micro_sweep
    rep = write_report(spec.out_dir, make_figures=False)
    rows = list(csv.DictReader(rep.summary_csv.open()))
    assert len(rows) == 4
    for row in rows:
        accs = []
        for seed in spec.seeds:
            name = f"cell-{row['model.cell']}_lr-{format_value(float(row['train.lr']))}_s{seed}"
            accs.append(json.loads((Path(spec.out_dir) / name / "final.json").read_text())["test_acc"])
        assert float(row["test_acc_mean"]) == pytest.approx(sum(accs) / 2, abs=1e-12)
        assert float(row["test_acc_sd"]) == pytest.approx(statistics.stdev(accs), abs=1e-12)
        assert row["n"] == "2" and row["n_failed"] == "0"
    assert "| network | learning rate | n (failed) | test accuracy (%)" in rep.text


def test_failing_run_is_recorded_and_the_sweep_continues(tmp_path):
    # relu RNN, AdamW lr 1e4 without clipping: the activations overflow within two steps -> NonFiniteError
    spec = parse_spec(micro_spec(tmp_path, seeds=[0], grid={"train.lr": [1e4, 1e-2]},
                                 base={"model": {"cell": "relu_rnn", "width": 4, "layers": 2},
                                       "data": {"task": "digits", "batch_size": 128},
                                       "train": {"epochs": 1, "max_batches": 3, "clip_norm": None}}))
    result = run_sweep(spec, progress=False)
    bad, good = (Path(spec.out_dir) / n for n in ("lr-10000_s0", "lr-0.01_s0"))
    assert result.statuses == {"lr-10000_s0": "failed", "lr-0.01_s0": "done"}
    status = json.loads((bad / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("NonFiniteError: non-finite")
    assert "NonFiniteError" in (bad / "traceback.txt").read_text()
    assert (good / "final.json").exists() and not (bad / "final.json").exists()
    # a rerun keeps the failure unless asked to retry it
    assert run_sweep(spec, progress=False).ran == []
    assert run_sweep(spec, progress=False, retry_failed=True).ran == ["lr-10000_s0"]
    rep = write_report(spec.out_dir, make_figures=False)
    assert "## Failed runs" in rep.text and "NonFiniteError" in rep.text
    assert "| 10000 | 0 (1) | – |" in rep.text


def test_interrupted_sweep_resumes_without_losing_finished_runs(tmp_path, monkeypatch):
    import stablernn.train as train

    spec = parse_spec(micro_spec(tmp_path))
    real_fit, calls = train.fit, []

    def fit_then_die(run, **kw):
        calls.append(run.name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third run
        return real_fit(run, **kw)

    monkeypatch.setattr(train, "fit", fit_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, progress=False)
    runs = expand(spec)
    finished = {r.name: (r.run_dir / "final.json").stat().st_mtime_ns for r in runs[:2]}
    assert [run_status(r.run_dir) for r in runs[:3]] == ["done", "done", "interrupted"]
    index = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["status"] for r in index["runs"]][:3] == ["done", "done", "interrupted"]
    monkeypatch.setattr(train, "fit", real_fit)
    result = run_sweep(spec, progress=False)
    assert result.ran == [r.name for r in runs[2:]] and result.count("done") == 8
    assert {n: (tmp_path / n / "final.json").stat().st_mtime_ns for n in finished} == finished


def test_killed_runner_process_loses_no_finished_run(tmp_path):
    """SIGKILL a real `stablernn sweep` process mid-sweep, then resume in-process."""
    spec_dict = micro_spec(tmp_path / "out", grid={"train.lr": [1e-2, 3e-3]})  # 4 runs
    spec_dict["base"]["train"].update(max_batches=None, epochs=3)  # ~1 s a run, so the kill lands mid-sweep
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec_dict))
    code = "import sys; from stablernn.cli import main; main(['sweep', sys.argv[1], '--no-progress'])"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    spec = load_spec(path)
    runs = expand(spec)
    deadline = time.time() + 40
    try:
        while time.time() < deadline and sum((r.run_dir / "final.json").exists() for r in runs) < 2:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = {r.name: (r.run_dir / "final.json").stat().st_mtime_ns for r in runs
                if (r.run_dir / "final.json").exists()}
    assert 2 <= len(finished) < 4, "the runner was not killed mid-sweep"
    result = run_sweep(spec, progress=False)
    assert result.count("done") == 4 and not set(result.ran) & set(finished)
    assert {n: (Path(spec.out_dir) / n / "final.json").stat().st_mtime_ns for n in finished} == finished


def test_changed_config_in_the_same_out_dir_is_refused_up_front(micro_sweep, tmp_path):
    spec, _ = micro_sweep
    changed = parse_spec({**micro_spec(Path(spec.out_dir)), "base": {
        "model": {"width": 6, "layers": 1}, "data": {"task": "digits", "batch_size": 128},
        "train": {"epochs": 1, "max_batches": 2}}})
    with pytest.raises(ValueError, match=r"different config .*model\.width: 4 -> 6"):
        check_out_dir(expand(changed))
    # display options do not count as a change
    old = expand(spec)[0].config.to_dict()
    new = json.loads(json.dumps(old))
    new["train"]["progress"], new["train"]["threads"] = True, 3
    assert config_differences(old, new) == []


def test_dry_run_lists_status_and_plan_filters(micro_sweep):
    spec, _ = micro_sweep
    runs, todo, skipped = plan(spec, only="relu")
    assert len(runs) == 8 and todo == [] and len(skipped) == 8
    text = describe_runs(runs)
    assert text.splitlines()[0].startswith("done") and "model.cell=gru, train.lr=0.01, seed=0" in text


@pytest.mark.slow  # two spawned interpreters importing torch: ~30 s on a busy 2-core machine
def test_worker_processes_run_a_sweep(tmp_path):
    spec = parse_spec(micro_spec(tmp_path, seeds=[0], grid={"train.lr": [1e-2, 3e-3]},
                                 base={"model": {"cell": "gru", "width": 4, "layers": 1},
                                       "data": {"task": "digits", "batch_size": 128},
                                       "train": {"epochs": 1, "max_batches": 2}}))
    result = run_sweep(spec, workers=2, progress=False)
    assert result.count("done") == 2
    assert json.loads((tmp_path / "lr-0.01_s0" / "config.json").read_text())["train"]["threads"] == 1


def test_execute_run_returns_metrics_and_status(tmp_path):
    spec = parse_spec(micro_spec(tmp_path, seeds=[0], grid={}))
    cfg = expand(spec)[0].config.to_dict()
    out = execute_run(cfg, threads=1)
    assert out["status"] == "done" and 0.0 <= out["test_acc"] <= 1.0
    assert json.loads((tmp_path / "s0" / "status.json").read_text())["status"] == "done"


def test_ray_missing_gives_install_hint(tmp_path, no_ray):
    spec = parse_spec(micro_spec(tmp_path, seeds=[0], grid={}))
    with pytest.raises(ImportError, match=r"pip install 'stablernn\[ray\]'"):
        run_sweep(spec, use_ray=True, progress=False)


@pytest.mark.slow  # starting a local Ray takes ~20 s here; run with -m slow when ray is installed
def test_micro_sweep_through_local_ray(tmp_path):
    pytest.importorskip("ray")
    spec = parse_spec(micro_spec(tmp_path))
    result = run_sweep(spec, use_ray=True, ray_init={"num_cpus": 2, "include_dashboard": False}, progress=False)
    assert result.count("done") == 8 and len(result.ran) == 8
    serial = run_sweep(parse_spec(micro_spec(tmp_path / "serial")), progress=False)
    for name, res in result.results.items():  # the same runs give the same numbers wherever they ran
        assert res["test_acc"] == serial.results[name]["test_acc"]


# --- CLI --------------------------------------------------------------------------------------------------------
def cli(*args: str) -> int:
    """Run the console entry point; it always ends with SystemExit (0 on success)."""
    from stablernn.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def test_cli_sweep_dry_run_and_report(tmp_path, capsys):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(micro_spec(tmp_path / "out", seeds=[0], grid={"train.lr": [1e-2]})))
    assert cli("sweep", str(path), "--dry-run", "--set", "model.width=3") == 0
    out = capsys.readouterr().out
    assert "pending" in out and "lr-0.01_s0" in out and "1 runs" in out
    assert cli("sweep", str(path), "--no-progress", "--report", "--set", "model.width=3") == 0
    out = capsys.readouterr().out
    assert "1 done" in out and (tmp_path / "out" / "report" / "report.md").exists()
    assert json.loads((tmp_path / "out" / "lr-0.01_s0" / "config.json").read_text())["model"]["width"] == 3
    assert cli("report", str(tmp_path / "out"), "--no-figures", "--out", str(tmp_path / "rep")) == 0
    assert "| learning rate | n (failed) |" in capsys.readouterr().out
    # a [report] table edited after the sweep ran is taken from --spec
    edited = json.loads(path.read_text())
    edited["report"] = {"pivot": "train.lr"}
    path.write_text(json.dumps(edited))
    assert cli("report", str(tmp_path / "out"), "--no-figures", "--spec", str(path)) == 0
    assert "columns: learning rate" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli("sweep", str(tmp_path / "nope.toml")) == 2
    assert "error: sweep spec" in capsys.readouterr().err
    assert cli("sweep", str(tmp_path / "nope.toml"), "--seeds", "a,b") == 2
    assert "error: --seeds" in capsys.readouterr().err
    assert cli("report", str(tmp_path / "nope")) == 2
    assert "error: " in capsys.readouterr().err


def test_recipes_parse():
    """Every recipe in experiments/ is a valid spec (paper scale included)."""
    root = Path(__file__).resolve().parents[1] / "experiments"
    recipes = sorted(root.glob("*.toml"))
    if not recipes:
        pytest.skip("no recipes")
    for path in recipes:
        spec = load_spec(path)
        assert expand(spec), path.name
