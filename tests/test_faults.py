"""Fault injection: SIGKILL at random points of training, LSC and sweeps (serial, with workers, two at once), then
check that nothing is lost, duplicated or corrupt and that a rerun ends with the metrics of an uninterrupted run.
Plus one test per user error of issue 17 (one line with the fix, exit 2, nothing written) and property-based
fuzzing of config values and malformed files.

Every subprocess is started through the ``procs`` fixture, which SIGKILLs whatever is still alive at teardown
(children included), so a failing test leaves no process behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stablernn import MissingDependencyError, RunBusyError, check_cell
from stablernn.cli import main
from stablernn.data.config import DataConfig
from stablernn.io import RunLock, atomic_write_json, file_mode, is_locked, load_checkpoint
from stablernn.lsc.config import LSCConfig
from stablernn.lsc.pretrain import lsc_pretrain
from stablernn.models import DeepRNN, ModelConfig, build_model
from stablernn.sweep import expand, parse_spec, run_status, run_sweep, write_report
from stablernn.sweep.runner import INDEX_FILE
from stablernn.train import DivergenceWarning, RunConfig, TrainConfig, fit
from stablernn.train.config import dataclass_from_dict, load_config_file

torch.set_num_threads(1)
RNG = random.Random(17)  # the kill points: random, but the same on every CI run
SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


# --- helpers ----------------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (Linux /proc), zombies excluded."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.fixture
def procs():
    """Start subprocesses that are SIGKILLed (with their children) at teardown if still alive."""
    started: list[subprocess.Popen] = []
    kids: set[int] = set()

    def start(code: str, *args: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", code, *args], env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        started.append(p)
        return p

    start.kids = kids  # type: ignore[attr-defined]
    yield start
    for p in started:
        if sys.platform.startswith("linux"):
            kids.update(_children(p.pid))
        if p.poll() is None:
            p.kill()
        p.wait()
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()
    for k in kids:
        if _alive(k):
            os.kill(k, signal.SIGKILL)


# a synthetic task: no dataset import in every subprocess, ~0.1 s an epoch for these nets
XOR = {"task": "delayed_xor", "seq_len": 10, "n_train": 640, "n_test": 64}


def _run_config(out: Path, name: str = "r", epochs: int = 5, lsc: LSCConfig | None = None) -> RunConfig:
    return RunConfig(name=name, out_dir=str(out), model=ModelConfig(cell="gru", layers=1, width=8),
                     data=DataConfig(**XOR, batch_size=32),
                     train=TrainConfig(epochs=epochs, lr=1e-2, progress=False, threads=1), lsc=lsc)


FIT = ("import json, sys; from stablernn.train import RunConfig, fit; run = RunConfig.from_dict(json.load("
       "open(sys.argv[1]))); print('start', flush=True); fit(run)")


def _rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(r).items() if k != "seconds"}
            for r in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _final(run_dir: Path) -> dict:
    f = json.loads((run_dir / "final.json").read_text())
    return {k: v for k, v in f.items() if k not in ("seconds", "run_dir")}


def _no_temp_files(folder: Path) -> list[Path]:
    return list(folder.rglob(".*.tmp"))


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- SIGKILL during training and LSC ----------------------------------------------------------------------------
def test_sigkill_during_training_then_rerun_matches_an_uninterrupted_run(tmp_path, procs):
    ref = _run_config(tmp_path / "ref")
    fit(ref)
    run = _run_config(tmp_path / "killed")
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(run.to_dict()))
    p = procs(FIT, str(cfg))
    metrics = run.run_dir / "metrics.jsonl"
    _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 1, 60, "the first epoch")
    time.sleep(RNG.uniform(0.0, 0.4))  # somewhere inside epochs 2-3 (an epoch takes ~0.5 s here)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (run.run_dir / "final.json").exists(), "the kill came too late to test anything"
    assert not is_locked(run.run_dir)  # the kernel freed the dead process's lock
    load_checkpoint(run.run_dir / "checkpoint.pt")  # the checkpoint on disk is whole
    fit(run)
    assert _rows(run.run_dir) == _rows(ref.run_dir)
    assert _final(run.run_dir) == _final(ref.run_dir)
    assert not _no_temp_files(tmp_path)


def test_sigkill_during_lsc_leaves_nothing_half_done(tmp_path, procs):
    lsc = LSCConfig(target=1.0, max_steps=25, time_limit=None, progress=False)
    ref = _run_config(tmp_path / "ref", epochs=1, lsc=lsc)
    fit(ref)
    run = _run_config(tmp_path / "killed", epochs=1, lsc=lsc)
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(run.to_dict()))
    p = procs(FIT, str(cfg))
    assert p.stdout.readline().strip() == "start"
    time.sleep(RNG.uniform(0.1, 0.6))  # inside LSC (it takes a few seconds here)
    p.send_signal(signal.SIGKILL)
    p.wait()
    if not (run.run_dir / "checkpoint.pt").exists():  # killed before the first checkpoint: no config, no report
        left = {f.name for f in run.run_dir.iterdir()} if run.run_dir.exists() else set()
        assert left <= {".lock"} | {f.name for f in _no_temp_files(run.run_dir)}
    fit(run)
    assert _final(run.run_dir) == _final(ref.run_dir)
    assert json.loads((run.run_dir / "lsc_report.json").read_text()) | {"seconds": 0} == \
        json.loads((ref.run_dir / "lsc_report.json").read_text()) | {"seconds": 0}
    assert not _no_temp_files(tmp_path)


def test_orphaned_temp_files_are_cleaned_on_the_next_start(tmp_path):
    run = _run_config(tmp_path, epochs=1)
    run.run_dir.mkdir(parents=True)
    orphan = run.run_dir / ".checkpoint.pt.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    fit(run)
    assert not orphan.exists() and (run.run_dir / "final.json").exists()


def test_run_files_are_readable_per_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert file_mode() == 0o644
        fit(_run_config(tmp_path, epochs=1))
        for name in ("config.json", "checkpoint.pt", "best.pt", "final.json", "metrics.jsonl"):
            assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == 0o644, name
        os.umask(0o077)
        atomic_write_json(tmp_path / "private.json", {})
        assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_run_being_trained_elsewhere_is_refused(tmp_path, procs):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    # a bare flock on .lock, as any holder takes it (no torch import: keeps the test fast)
    holder = procs("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                   "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                   str(run_dir / ".lock"))
    assert holder.stdout.readline().strip() == "locked"
    assert is_locked(run_dir)
    with pytest.raises(RunBusyError, match="being trained by another process"):
        fit(_run_config(tmp_path, epochs=1))
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not is_locked(run_dir)  # a crashed holder frees it
    with RunLock(run_dir), RunLock(run_dir):  # re-entrant within one process
        assert is_locked(run_dir)
    assert not is_locked(run_dir)


# --- sweeps -----------------------------------------------------------------------------------------------------
def _spec(out: Path, epochs: int = 3) -> dict:
    return {"name": "faults", "out_dir": str(out), "seeds": [0, 1],
            "base": {"model": {"width": 8, "layers": 1}, "data": {**XOR, "batch_size": 32},
                     "train": {"epochs": epochs, "progress": False}},
            "grid": {"model.cell": ["gru", "relu_rnn"]}}


SWEEP = ("import json, sys; from stablernn.sweep import parse_spec, run_sweep; spec = parse_spec(json.load("
         "open(sys.argv[1]))); print('start', flush=True); r = run_sweep(spec, workers=int(sys.argv[2]), "
         "progress=False); print(json.dumps(r.ran), flush=True)")


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "sweep"
    run_sweep(parse_spec(_spec(out)), progress=False)
    return {r.name: _final(r.run_dir) for r in expand(parse_spec(_spec(out)))}


def _same_finals(out: Path, reference: dict) -> None:
    got = {r.name: _final(r.run_dir) for r in expand(parse_spec(_spec(out)))}
    assert got == reference


def test_sigkill_serial_sweep_keeps_index_truthful_and_rerun_matches(tmp_path, procs, reference_sweep):
    out = tmp_path / "sweep"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_spec(out)))
    runs = expand(parse_spec(_spec(out)))
    p = procs(SWEEP, str(path), "1")
    _wait_for(lambda: (runs[0].run_dir / "final.json").exists(), 60, "the first run")
    time.sleep(RNG.uniform(0.0, 0.3))
    p.send_signal(signal.SIGKILL)
    p.wait()
    index = json.loads((out / INDEX_FILE).read_text())
    recorded = {r["name"]: r["status"] for r in index["runs"]}
    truth = {r.name: run_status(r.run_dir) for r in runs}
    assert "running" not in truth.values()  # the dead runner's run is not "running": its lock died with it
    done = {n for n, s in truth.items() if s == "done"}
    assert 1 <= len(done) < len(runs), "the kill did not land mid-sweep"
    assert {n for n, s in recorded.items() if s == "done"} <= done  # the index never claims more than is done
    assert len(done - {n for n, s in recorded.items() if s == "done"}) <= 1  # and lags by at most the last run
    result = run_sweep(parse_spec(_spec(out)), progress=False)
    assert result.count("done") == len(runs) and not set(result.ran) & done
    _same_finals(out, reference_sweep)
    index = json.loads((out / INDEX_FILE).read_text())
    assert {r["status"] for r in index["runs"]} == {"done"}
    assert not _no_temp_files(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_sigkill_parent_of_workers_leaves_no_live_worker(tmp_path, procs, reference_sweep):
    out = tmp_path / "sweep"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_spec(out)))
    p = procs(SWEEP, str(path), "2")
    assert p.stdout.readline().strip() == "start"
    runs = expand(parse_spec(_spec(out)))
    _wait_for(lambda: sum(is_locked(r.run_dir) for r in runs) >= 2, 60, "two workers training")
    time.sleep(RNG.uniform(0.0, 0.3))
    kids = _children(p.pid)
    procs.kids.update(kids)
    assert len(kids) >= 2
    p.send_signal(signal.SIGKILL)
    p.wait()
    t0 = time.time()
    while any(_alive(k) for k in kids) and time.time() - t0 < 10:
        time.sleep(0.05)
    assert not any(_alive(k) for k in kids), "a worker outlived its parent by 10 s"
    assert "running" not in {run_status(r.run_dir) for r in runs}
    result = run_sweep(parse_spec(_spec(out)), progress=False)
    assert result.count("done") == len(runs)
    _same_finals(out, reference_sweep)


def test_two_concurrent_sweeps_train_each_run_exactly_once(tmp_path, procs, reference_sweep):
    out = tmp_path / "sweep"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_spec(out)))
    a, b = procs(SWEEP, str(path), "1"), procs(SWEEP, str(path), "1")
    ran = []
    for p in (a, b):
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        ran.append(json.loads(stdout.strip().splitlines()[-1]))
    names = [r.name for r in expand(parse_spec(_spec(out)))]
    assert sorted(ran[0] + ran[1]) == sorted(names)  # every run trained, none twice
    for name in names:  # one uninterrupted pass each: epochs rows, no duplicates
        assert [r["epoch"] for r in _rows(out / name)] == [1, 2, 3]
    _same_finals(out, reference_sweep)


def test_report_counts_pending_and_running_runs(tmp_path):
    out = tmp_path / "sweep"
    spec = parse_spec(_spec(out, epochs=1))
    runs = expand(spec)
    run_sweep(spec, only=runs[0].name, progress=False)
    with RunLock(runs[1].run_dir):  # a live process is training this one
        rep = write_report(out, make_figures=False)
    assert f"{len(runs)} runs" in rep.text and "1 done" in rep.text and "1 running" in rep.text
    assert f"{len(runs) - 2} pending" in rep.text
    assert not _no_temp_files(out)


# --- every user error one line, nothing written -----------------------------------------------------------------
def _cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


QUICK = ["--task", "delayed_xor", "--seq-len", "10", "--n-train", "200", "--n-test", "50", "--cell", "gru",
         "--layers", "1", "--width", "8", "--epochs", "1", "--max-batches", "2", "--no-progress"]


@pytest.mark.parametrize("extra,msg", [
    (["--lsc", "0"], "LSC target (--lsc) must be a positive finite number"),
    (["--lsc", "1", "--lsc-batches", "0"], "LSC batches (--lsc-batches) must be an integer >= 1"),
    (["--rate-ramp", "0.6:0.2"], "--rate-ramp must be START:END with 0 <= START <= END <= 1"),
    (["--max-batches", "0"], "--max-batches must be an integer >= 1"),
    (["--threads", "0"], "--threads must be an integer >= 1"),
    (["--data-dir", "/nonexistent/stablernn"], "--data-dir /nonexistent/stablernn is not a folder"),
    (["--lr", "inf"], "--lr must be a positive finite number"),
])
def test_bad_train_options_write_nothing(extra, msg, tmp_path, capsys):
    code, _, err = _cli(["train", *QUICK, "--out-dir", str(tmp_path / "runs"), *extra], capsys)
    assert code == 2 and msg in _one_line(err)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_changed_config_names_the_field_and_overwrite_starts_again(tmp_path, capsys):
    base = ["train", *QUICK, "--out-dir", str(tmp_path), "--name", "x"]
    assert _cli(base, capsys)[0] in (0, None)
    code, _, err = _cli([*base, "--clip-norm", "0.5"], capsys)
    line = _one_line(err)
    assert code == 2 and "train.clip_norm: 1.0 -> 0.5" in line and "--overwrite" in line and "--name" in line
    assert _cli([*base, "--clip-norm", "0.5", "--overwrite"], capsys)[0] in (0, None)
    assert json.loads((tmp_path / "x" / "config.json").read_text())["train"]["clip_norm"] == 0.5
    # default names carry lr and epochs, so changing either is a new run rather than a refusal
    d = ["train", *QUICK, "--out-dir", str(tmp_path / "d")]
    assert _cli(d, capsys)[0] in (0, None) and _cli([*d, "--lr", "0.01"], capsys)[0] in (0, None)
    assert len(list((tmp_path / "d").iterdir())) == 2


def test_non_finite_training_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    argv = ["train", *QUICK, "--cell", "relu_rnn", "--max-batches", "5", "--lr", "1e6", "--clip-norm", "0",
            "--out-dir", str(tmp_path)]
    code, _, err = _cli(argv, capsys)
    assert code == 2 and "non-finite" in _one_line(err) and "lower the learning rate" in err
    monkeypatch.setenv("STABLERNN_DEBUG", "1")
    with pytest.raises(RuntimeError, match="non-finite"):
        main([*argv, "--overwrite"])


def test_a_loss_that_grows_without_nan_is_warned_about(tmp_path):
    from stablernn.train.loop import _RunState, _warn_growth

    run = _run_config(tmp_path)
    state = _RunState(first_loss=2.3)
    with pytest.warns(DivergenceWarning, match=r"train_loss 2\.2e\+06 at epoch 3 is over 10x"):
        _warn_growth(run, state, {"train_loss": 2.2e6}, "epoch 3")
    ok = _RunState(first_loss=2.3)
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error")
        _warn_growth(run, ok, {"train_loss": 2.0, "val_loss": float("nan")}, "epoch 1")


def test_gru_with_clipping_and_a_huge_lr_finishes_with_a_warning(tmp_path, capsys):
    argv = ["train", *QUICK, "--epochs", "2", "--lr", "1e6", "--out-dir", str(tmp_path)]
    with pytest.warns(DivergenceWarning, match=r"training is diverging; lower --lr \(now 1e\+06\) or lower "
                      r"--clip-norm \(now 1\)"):
        code, out, _ = _cli(argv, capsys)
    assert code in (0, None) and "test_loss" in out


def test_init_from_with_other_sizes_names_layers_and_sizes(tmp_path, capsys):
    small = build_model(ModelConfig(cell="gru", layers=1, width=16), input_size=2, output_size=2)
    torch.save(small.state_dict(), tmp_path / "w.pt")
    code, _, err = _cli(["train", *QUICK, "--width", "32", "--init-from", str(tmp_path / "w.pt"), "--out-dir",
                         str(tmp_path / "runs")], capsys)
    line = _one_line(err)
    assert code == 2 and "do not fit this model" in line and "is [48, 2] there, [96, 2] here" in line
    assert not (tmp_path / "runs").exists()


def test_sweep_ray_missing_is_one_line(tmp_path, capsys, no_ray):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_spec(tmp_path / "out")))
    code, _, err = _cli(["sweep", str(path), "--ray", "--no-progress"], capsys)
    assert code == 2 and "pip install 'stablernn[ray]'" in _one_line(err)
    with pytest.raises(MissingDependencyError):  # an ImportError, for code that catches those
        run_sweep(parse_spec(_spec(tmp_path / "out")), use_ray=True, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint", b"PK\x03\x04" + b"\x00" * 40])
def test_corrupt_checkpoint_suggests_the_fix_and_never_the_unsafe_option(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "delete it" in msg and "--overwrite" in msg and "weights_only=False" not in msg and "\n" not in msg


def test_crafted_pickle_is_refused_without_unsafe_advice(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError) as e:
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists() and "weights_only=False" not in str(e.value)


@pytest.mark.parametrize("argv", [["-h"], ["demo", "-h"], ["data", "-h"], ["train", "-h"], ["sweep", "-h"],
                                  ["report", "-h"], ["data", "list", "-h"]])
def test_short_help_everywhere(argv, capsys):
    code, out, _ = _cli(argv, capsys)
    assert code == 0 and "Usage" in out


# --- LSC inputs and the cell contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("x,msg", [
    (torch.zeros(4, 0, 8), "zero time steps"),
    (torch.zeros(0, 5, 8), "is empty"),
    (torch.full((4, 5, 8), float("nan")), "NaN or inf"),
])
def test_lsc_refuses_unmeasurable_batches(x, msg):
    model = build_model(ModelConfig(cell="gru", layers=1, width=8), input_size=8, output_size=3)
    with pytest.raises(ValueError, match=msg):
        lsc_pretrain(model, x, max_steps=2, progress=False)


def test_lsc_refuses_an_infinite_target():
    model = build_model(ModelConfig(cell="gru", layers=1, width=8), input_size=8, output_size=3)
    with pytest.raises(ValueError, match="positive finite"):
        lsc_pretrain(model, torch.zeros(2, 3, 8), target=float("inf"))


class _NoKeywords(torch.nn.Module):
    """A cell whose initial_state lacks the device/dtype keywords."""

    def __init__(self):
        super().__init__()
        self.input_size = self.hidden_size = 4
        self.lin = torch.nn.Linear(4, 4)

    def initial_state(self, batch_size):
        from user_cell import LeakyState

        return LeakyState(torch.zeros(batch_size, 4))

    def forward(self, x, state):
        h = torch.tanh(self.lin(x) + state.h)
        return h, type(state)(h)

    def stability_state(self, state):
        return state.h

    def with_stability_state(self, state, s):
        return type(state)(s)


class _TensorOnly(_NoKeywords):
    def initial_state(self, batch_size, *, device=None, dtype=None):
        from user_cell import LeakyState

        return LeakyState(torch.zeros(batch_size, 4, device=device, dtype=dtype))

    def forward(self, x, state):
        return torch.tanh(self.lin(x) + state.h)


class _NoStability(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.input_size = self.hidden_size = 4

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return (torch.zeros(batch_size, 4),)

    def forward(self, x, state):
        return x, state


@pytest.mark.parametrize("cell,msg", [
    (_NoKeywords(), r"initial_state must accept initial_state\(batch_size, \*, device=None, dtype=None\)"),
    (_TensorOnly(), r"must return a pair \(out \[batch, output_size\], new_state\), got Tensor"),
    (_NoStability(), r"needs a method stability_state"),
])
def test_check_cell_and_deeprnn_refuse_broken_cells(cell, msg):
    with pytest.raises(TypeError, match=msg):
        check_cell(cell)
    with pytest.raises(TypeError, match="layer 0: .*" + msg):
        DeepRNN([cell], input_size=4, output_size=2)


def test_checking_a_cell_leaves_the_rng_alone():
    from user_cell import LeakyTanhCell

    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    DeepRNN([LeakyTanhCell(4, 8)], input_size=4, output_size=2)  # check_cell runs inside, after the init draws
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), a)


# --- fuzzing ----------------------------------------------------------------------------------------------------
_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=4), st.lists(st.floats(-1, 2), max_size=3))
_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.dictionaries(st.sampled_from(list(TrainConfig.__dataclass_fields__)), _values, max_size=4))
def test_fuzz_train_config_values_are_accepted_or_refused_with_a_value_error(values):
    try:
        tc = dataclass_from_dict(TrainConfig, values, "train")
    except ValueError as e:
        assert "\n" not in str(e)
        return
    run = RunConfig(train=tc)  # what is accepted round-trips through config.json
    stored = json.loads(json.dumps(run.to_dict()))
    assert json.loads(json.dumps(RunConfig.from_dict(stored).to_dict())) == stored


@_FUZZ
@given(st.dictionaries(st.sampled_from(list(LSCConfig.__dataclass_fields__)), _values, max_size=4))
def test_fuzz_lsc_config_values_are_accepted_or_refused_with_a_value_error(values):
    try:
        dataclass_from_dict(LSCConfig, values, "lsc")
    except ValueError as e:
        assert "\n" not in str(e)


@_FUZZ
@given(st.binary(max_size=64))
def test_fuzz_malformed_idx_checkpoint_and_config_files(tmp_path_factory, raw):
    from stablernn.data.base import DataError
    from stablernn.data.mnist import read_idx

    d = tmp_path_factory.mktemp("fuzz")
    (d / "x.idx").write_bytes(raw)
    with contextlib.suppress(DataError):  # and never anything else
        read_idx(d / "x.idx")
    (d / "c.pt").write_bytes(raw)
    with pytest.raises(ValueError, match="delete it"):
        load_checkpoint(d / "c.pt")
    (d / "c.toml").write_bytes(raw)
    # random bytes are rarely a valid TOML run config, but may be; otherwise malformed TOML, bad UTF-8
    # (UnicodeDecodeError is a ValueError) or unknown fields: a ValueError and never anything else
    with contextlib.suppress(ValueError):
        load_config_file(d / "c.toml")


@pytest.mark.parametrize("x,msg", [(torch.zeros(2, 0, 8), "zero time steps"), (torch.zeros(0, 3, 8), "is empty"),
                                   (torch.full((2, 3, 8), float("inf")), "NaN or inf")])
def test_diagnostics_refuse_unmeasurable_batches(x, msg):
    from stablernn.diagnostics import firing_rates, gradient_grid

    model = build_model(ModelConfig(cell="lif", layers=1, width=8), input_size=8, output_size=3)
    with pytest.raises(ValueError, match="gradient_grid: batch 1 .*" + msg):
        gradient_grid(model, x, torch.zeros(x.shape[0], dtype=torch.long))
    with pytest.raises(ValueError, match="firing_rates: batch 1 .*" + msg):
        firing_rates(model, x)


def test_demo_table_says_why_lsc_missed_its_target(tmp_path):
    from stablernn.cli.train import demo_table

    atomic_write_json(tmp_path / "lstm-lsc" / "lsc_report.json",
                      {"target": {"time": 0.5}, "before": {"time": [1.0, 0.98]}, "after": {"time": [0.97, 0.95]},
                       "stop_reason": "max_steps (40) reached", "steps": 40})
    atomic_write_json(tmp_path / "gru-lsc" / "lsc_report.json",
                      {"target": {"time": 0.5}, "before": {"time": [0.8, 0.6]}, "after": {"time": [0.5, 0.52]},
                       "stop_reason": "max_steps (130) reached", "steps": 130})
    atomic_write_json(tmp_path / "alif-lsc" / "lsc_report.json",
                      {"target": {"time": 0.5, "depth": 0.5}, "before": {"time": [1.0, 1.1], "depth": [0.2]},
                       "after": {"time": [0.5, 0.5], "depth": [0.59]}, "stop_reason": "max_steps (100) reached"})
    results = {c: {"test_acc": 0.9} for c in ("lstm", "lstm-lsc", "gru", "gru-lsc", "alif", "alif-lsc")}
    text = demo_table(results, lsc=True, out_dir=tmp_path)
    notes = [line for line in text.splitlines() if "demo budget" in line]
    assert len(notes) == 2 and notes[0].startswith("LSTM: LSC stopped at its demo budget (max_steps (40) reached)")
    assert "time radius at 0.96, not yet at 0.5" in notes[0]
    assert notes[1].startswith("ALIF:") and "depth radius at 0.59" in notes[1] and "time radius" not in notes[1]


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path):
    run = _run_config(tmp_path / "runs", lsc=LSCConfig(target=1.0, max_steps=3, progress=False))
    data = __import__("stablernn").load_task(run.data)
    data.train = [(torch.full((4, 10, 2), float("nan")), torch.zeros(4, dtype=torch.long))]  # LSC refuses NaN
    with pytest.raises(ValueError, match="NaN or inf"):
        fit(run, data=data)
    assert not (tmp_path / "runs").exists()


_spec_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.floats(allow_nan=False),
                          st.text(max_size=6), st.sampled_from(["none", "gru", "model.cell", "train.lr", "lsc.target"]))
_spec_values = st.recursive(_spec_scalars, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(
    st.sampled_from(["model", "train", "cell", "lr", "model.cell", "train.lr", "lsc", "target", "cpus"]), c,
    max_size=3)), max_leaves=6)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "base", "grid", "zip", "seeds", "seed_keys", "resources", "report",
                                        "lsc_options", "description"]), _spec_values, max_size=5))
def test_fuzz_sweep_specs_are_accepted_or_refused_with_a_value_error(spec):
    # found by this test before the fix: "zip = none" or "seed_keys = [none]" crashed with a TypeError
    try:
        parse_spec({**spec, "out_dir": "unused"})  # parsing writes nothing
    except ValueError as e:
        assert str(e)


def test_a_run_failed_by_another_sweep_meanwhile_is_not_retrained(tmp_path):
    from stablernn.sweep.runner import STATUS_FILE, execute_run

    run = expand(parse_spec(_spec(tmp_path, epochs=1)))[0]
    run.run_dir.mkdir(parents=True)
    atomic_write_json(run.run_dir / STATUS_FILE, {"status": "failed", "error": "ValueError: x"})
    res = execute_run(run.config.to_dict(), retry_failed=False)
    assert res["status"] == "failed" and res["trained"] is False and not (run.run_dir / "final.json").exists()
    res = execute_run(run.config.to_dict(), retry_failed=True)
    assert res["status"] == "done" and res["trained"] is True
    assert execute_run(run.config.to_dict())["trained"] is False  # done meanwhile: skipped
