"""The one training loop: :func:`fit` trains a :class:`RunConfig` and writes a self-describing run directory.

Why one module of ~500 lines: validation before writing, locking, resume, the epoch and its loss terms, and
the final evaluation are the steps of one loop (each a short function) sharing its job and state.

``runs/<name>/``: ``config.json`` (every option), ``metrics.jsonl`` (one line per epoch), ``checkpoint.pt`` (last
epoch: model, optimizer, progress, RNG), ``best.pt`` (best-by-validation weights), ``final.json`` (validation and
test metrics of the best weights), and ``lsc_report.json`` when LSC pre-training ran. Every file is written
atomically; a rerun of the same config resumes after the last finished epoch and produces the same metrics as an
uninterrupted run.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..cells.base import HasCells, is_spiking
from ..data import load_task
from ..data.base import TaskData, TaskInfo
from ..errors import NonFiniteError
from ..io import (
    RunLock,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    clean_temp_files,
    load_checkpoint,
    load_state_dict_from,
    load_weights_into,
)
from ..models import DeepRNN, build_model, detach_states
from ..optim import lr_factor, make_optimizer, set_lr
from .config import RunConfig, flatten_config
from .losses import LocalLoss, MetricSum, score_key, task_loss
from .stable import lsuv_for_run, resolve_stable


class DivergenceWarning(RuntimeWarning):
    """A loss grew far past its first value without becoming NaN/inf (training is diverging)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def build_for_task(run: RunConfig, info: TaskInfo) -> nn.Module:
    """The model of ``run`` for the task: :func:`stablernn.models.build_model` (conditions included) with the run's
    seed."""
    return build_model(run.model, info, seed=run.train.seed)


def forward(model: nn.Module, x: Tensor, states: Any = None) -> tuple[Tensor, Any, list[Tensor]]:
    """Logits, final states and per-layer outputs of any model (FFNs have no states or layer outputs)."""
    if isinstance(model, DeepRNN):
        out = model.run(x, states)
        return out.logits, out.states, out.layer_outputs
    return model(x), None, []


def spiking_layers(model: nn.Module) -> list[bool]:
    """Which layers of ``model`` emit spikes (their outputs count for firing-rate control); none for an FFN."""
    return [is_spiking(c) for c in model.cells] if isinstance(model, HasCells) else []


def first_non_finite(named: list[tuple[str, Tensor | None]]) -> str | None:
    for name, t in named:
        if t is not None and not torch.isfinite(t).all():
            return name
    return None


@torch.no_grad()
def evaluate(model: nn.Module, loader, info: TaskInfo, seq_loss: str, device: torch.device, prefix: str
             ) -> dict[str, float]:
    """Loss and accuracy (perplexity for language models) of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    acc, states, rates = MetricSum(info, seq_loss), None, []
    spiking = spiking_layers(model)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits, new_states, outs = forward(model, x, states if info.stateful else None)
        states = new_states if info.stateful else None
        acc.add(logits, y)
        rates.extend(float(o.float().mean()) for o, s in zip(outs, spiking, strict=False) if s)
    model.train(was_training)
    res = acc.result(prefix)
    if rates:
        res[f"{prefix}_rate"] = float(np.mean(rates))
    return res


class _Progress:
    """A tqdm bar over an epoch's batches (or nothing when disabled)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    def update(self, **postfix: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    @staticmethod
    def write(msg: str, enabled: bool) -> None:
        if enabled:
            from tqdm.auto import tqdm

            tqdm.write(msg)


RUN_FILES = ("config.json", "task.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "final.json",
             "lsc_report.json", "status.json", "traceback.txt")
# a loss this many times its first value (or 1, if larger) is a divergence even while it stays finite
LOSS_GROWTH = 10.0


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted fields where two run configs differ, display options (progress, threads) and the name/out_dir
    ignored, as ``"section.field: old -> new"``."""
    a, b = flatten_config(_comparable(old)), flatten_config(_comparable(new))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = json.loads(json.dumps(cfg, default=list))
    cfg.pop("name", None)
    cfg.pop("out_dir", None)
    cfg.get("train", {}).pop("progress", None)  # display options do not change a run
    cfg.get("train", {}).pop("threads", None)
    if cfg.get("lsc"):
        cfg["lsc"].pop("progress", None)
    return cfg


def _check_existing_config(run_dir: Path, cfg: dict[str, Any]) -> None:
    """Refuse to continue a run directory made with another config, naming the fields and the way out."""
    path = run_dir / "config.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ValueError(f"{path} is not valid JSON; delete it or pass --overwrite to start the run over") from None
    diff = config_differences(old, cfg)
    if diff:
        shown = "; ".join(diff[:4]) + (f" (and {len(diff) - 4} more)" if len(diff) > 4 else "")
        raise ValueError(f"run directory {run_dir} holds a run with a different config ({shown}); pick another "
                         "--name, or pass --overwrite to delete that run and start again")


def check_run_inputs(run: RunConfig) -> None:
    """What the configs cannot check on their own (the filesystem): refuse before anything is written."""
    name = run.name
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"run name {name!r} must be a plain folder name (no '/', not '.' or '..'); pass --name")
    dd = run.data.data_dir
    if dd and not Path(dd).expanduser().is_dir():
        raise ValueError(f"--data-dir {dd} is not a folder; pass the folder holding the task's files")
    if run.train.init_from and not Path(run.train.init_from).is_file():
        raise FileNotFoundError(f"--init-from {run.train.init_from} does not exist; pass a weights or checkpoint "
                                "file (e.g. written by stablernn pretrain)")


def clear_run(run_dir: Path) -> None:
    """Delete a run's files (``--overwrite``); other files in the folder are left alone."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    clean_temp_files(run_dir)


@dataclass
class _RunState:
    """Where training stands; saved in ``checkpoint.pt`` so a resumed run continues exactly."""

    epoch: int = 0
    step: int = 0
    best: float | None = None
    stale: int = 0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    first_loss: float | None = None
    warned: bool = False


@dataclass
class _Job:
    """Everything one epoch needs."""

    run: RunConfig
    model: nn.Module
    data: TaskData
    device: torch.device
    opt: torch.optim.Optimizer
    steps_per_epoch: int
    total_steps: int
    spiking: list[bool]
    local: LocalLoss | None = None  # DECOLLE-style per-layer local losses (TrainConfig.local_loss)


def fit(run: RunConfig, *, data: TaskData | None = None, model: nn.Module | None = None,
        overwrite: bool = False) -> dict[str, Any]:
    """Train ``run`` (resuming from ``run_dir/checkpoint.pt`` if present) and return the final metrics.

    ``data`` and ``model`` may be passed to reuse a loaded task or to train a custom model (e.g. a DeepRNN of your
    own cells); otherwise both are built from the config. Everything is validated (configs, data, model,
    ``init_from`` weights) before the run directory is created; a run that fails before its first checkpoint
    leaves no directory behind. ``overwrite``: delete an earlier run of that name first. The run directory is
    locked (:class:`~stablernn.io.RunLock`) while training, so two processes never train one run.
    """
    tc = run.train
    check_run_inputs(run)
    device = resolve_device(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    seed_everything(tc.seed)
    data = data if data is not None else load_task(run.data)
    run = resolve_stable(run, data.info)  # --stable auto -> explicit LSC / design settings (train/stable.py)
    model = model if model is not None else build_for_task(run, data.info)
    if tc.init_from:
        load_weights_into(model, load_state_dict_from(tc.init_from), f"--init-from {tc.init_from}")
    model.to(device)
    run_dir = run.run_dir
    new_dirs = [d for d in (run_dir, run_dir.parent) if not d.exists()]
    with RunLock(run_dir):
        started = False
        try:
            job, state = _start(run, model, data, device, overwrite)
            started = True
            return _train(job, state)
        finally:
            if new_dirs and not started:  # nothing worth keeping was written: leave no folder behind
                shutil.rmtree(run_dir, ignore_errors=True)
                for d in new_dirs[1:]:
                    with contextlib.suppress(OSError):  # only if still empty
                        d.rmdir()


def _start(run: RunConfig, model: nn.Module, data: TaskData, device: torch.device, overwrite: bool
           ) -> tuple[_Job, _RunState]:
    """Under the run's lock: clear or check the run directory, then resume from its checkpoint or pre-train and
    write ``config.json`` plus the epoch-0 checkpoint."""
    tc, run_dir = run.train, run.run_dir
    if overwrite:
        clear_run(run_dir)
    clean_temp_files(run_dir)  # orphans of a killed writer; we hold the lock, so no one else is writing here
    cfg_dict = run.to_dict()
    _check_existing_config(run_dir, cfg_dict)
    opt = make_optimizer(model.parameters(), tc.optimizer, tc.lr, tc.weight_decay)
    steps_per_epoch = len(data.train) if tc.max_batches is None else min(len(data.train), tc.max_batches)
    if steps_per_epoch < 1:
        raise ValueError(f"task {data.info.name} has no training batches; check --n-train and --batch-size")
    local = LocalLoss(tc.local_loss, data.info.output_size, tc.seed) if tc.local_loss else None  # DECOLLE
    job = _Job(run, model, data, device, opt, steps_per_epoch, max(1, steps_per_epoch * tc.epochs),
               spiking_layers(model), local)
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        state = _resume(job, ckpt_path)
        _Progress.write(f"resuming {run.name} after epoch {state.epoch}", tc.progress)
        return job, state
    rows, report = _pretrain(run, model, data, device)
    atomic_write_json(run_dir / "config.json", cfg_dict)
    atomic_write_json(run_dir / "task.json", asdict(data.info))  # load_run rebuilds the network without the data
    if report is not None:
        atomic_write_json(run_dir / "lsc_report.json", report.to_json())
    state = _RunState(history=rows)
    _save(ckpt_path, model, opt, state)
    return job, state


def _resume(job: _Job, ckpt_path: Path) -> _RunState:
    ck = load_checkpoint(ckpt_path, map_location=job.device)
    job.model.load_state_dict(ck["model"])
    job.opt.load_state_dict(ck["optimizer"])
    history = [json.loads(line) for line in ck["metrics_jsonl"].splitlines() if line.strip()]
    return _RunState(ck["epoch"], ck["step"], ck["best"], ck["stale"], float(ck.get("elapsed", 0.0)), history,
                      ck.get("first_loss"))


def _train(job: _Job, state: _RunState) -> dict[str, Any]:
    """The epochs from ``state.epoch`` on, then the final evaluation of the best weights."""
    tc = job.run.train
    t_start = time.time() - state.elapsed
    stop_reason = "epochs"
    for epoch in range(state.epoch, tc.epochs):
        if tc.time_limit is not None and time.time() - t_start > tc.time_limit:
            stop_reason = "time_limit"
            break
        row = _epoch(job, state, epoch)
        row["seconds"] = round(time.time() - t_start, 3)
        state.history.append(row)
        _after_epoch(job, state, row, time.time() - t_start)
        if tc.patience is not None and state.stale >= tc.patience:
            stop_reason = "patience"
            break
    return _finish(job, state, stop_reason, t_start)


def _epoch(job: _Job, state: _RunState, epoch: int) -> dict[str, Any]:
    """One epoch of optimisation steps; returns its history row (train and validation metrics)."""
    run, tc, info, model = job.run, job.run.train, job.data.info, job.model
    # per-epoch seeding makes a resumed epoch draw the same dropout masks and batch order as an unbroken run
    torch.manual_seed(tc.seed * 100_003 + epoch)
    if hasattr(job.data.train, "set_epoch"):
        job.data.train.set_epoch(epoch)
    model.train()
    bar = _Progress(job.steps_per_epoch, f"{run.name} epoch {epoch + 1}/{tc.epochs}", tc.progress)
    train_acc, states = MetricSum(info, tc.loss), None
    for b, (x, y) in enumerate(job.data.train):
        if b >= job.steps_per_epoch:
            break
        x, y = x.to(job.device), y.to(job.device)
        set_lr(job.opt, tc.lr * lr_factor(state.step, job.total_steps, tc.schedule, tc.warmup_steps))
        logits, new_states, outs = forward(model, x, states if info.stateful else None)
        states = detach_states(new_states) if info.stateful and new_states is not None else None
        loss = _loss(job, x, y, logits, outs, epoch, b)
        _check_loss(loss, x, outs, logits, epoch, b, tc.lr)
        job.opt.zero_grad(set_to_none=True)
        loss.backward()
        _check_grads(model, epoch, b, tc.lr)
        if tc.clip_norm:
            nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
        job.opt.step()
        state.step += 1
        if state.first_loss is None:
            state.first_loss = float(loss.detach())
        train_acc.add(logits.detach(), y)
        if tc.eval_every and state.step % tc.eval_every == 0 and b + 1 < job.steps_per_epoch:
            mid = {"epoch": round(epoch + (b + 1) / job.steps_per_epoch, 4), "step": state.step,
                   "phase": "mid_epoch"}
            mid.update(evaluate(model, job.data.val, info, tc.loss, job.device, "val"))
            state.history.append(mid)
            _Progress.write(_epoch_line(mid), tc.progress)
        shown = train_acc.result("train")
        bar.update(loss=loss.item(), **({"acc": shown["train_acc"]} if "train_acc" in shown else {}))
    bar.close()
    row: dict[str, Any] = {"epoch": epoch + 1, "step": state.step,
                           "lr": tc.lr * lr_factor(state.step, job.total_steps, tc.schedule, tc.warmup_steps)}
    row.update(train_acc.result("train"))
    row.update(evaluate(model, job.data.val, info, tc.loss, job.device, "val"))
    return row


def _loss(job: _Job, x: Tensor, y: Tensor, logits: Tensor, outs: list[Tensor], epoch: int, b: int) -> Tensor:
    """The task loss plus the firing-rate and flossing terms the config switches on."""
    tc = job.run.train
    loss = task_loss(logits, y, job.data.info, tc.loss)
    if job.local is not None:
        loss = loss + job.local(outs, y, job.data.info, tc.loss)
    if tc.final_rate is not None and any(job.spiking):
        from ..snn.rates import ramp, sparsity_loss

        progress = (epoch + b / max(1, job.steps_per_epoch)) / max(1, tc.epochs)
        weight = tc.rate_weight * ramp(progress, tc.rate_ramp[0], tc.rate_ramp[1], tc.rate_schedule)
        if weight > 0:
            loss = loss + weight * sparsity_loss(outs, job.spiking, tc.final_rate)
    if tc.flossing_weight > 0:
        from ..dynamics.lyapunov import flossing_loss

        loss = loss + tc.flossing_weight * flossing_loss(job.model, x, tc.flossing_k, target=tc.flossing_target)
    return loss


def _check_loss(loss: Tensor, x: Tensor, outs: list[Tensor], logits: Tensor, epoch: int, b: int, lr: float) -> None:
    if not torch.isfinite(loss):
        bad = first_non_finite([("input", x), *[(f"layer {i} output", o) for i, o in enumerate(outs)],
                                ("logits", logits)]) or "loss"
        raise NonFiniteError(f"non-finite loss at epoch {epoch + 1}, step {b + 1}: first non-finite tensor "
                             f"is {bad}; lower the learning rate (now {lr:g}) or enable clipping")


def _check_grads(model: nn.Module, epoch: int, b: int, lr: float) -> None:
    bad = first_non_finite([(f"grad of {n}", p.grad) for n, p in model.named_parameters()])
    if bad is not None:
        raise NonFiniteError(f"non-finite gradient at epoch {epoch + 1}, step {b + 1}: first non-finite "
                             f"tensor is {bad}; lower the learning rate (now {lr:g}) or set --clip-norm")


def _after_epoch(job: _Job, state: _RunState, row: dict[str, Any], elapsed: float) -> None:
    """Best weights, patience counter, checkpoint, the epoch line and the divergence warning."""
    tc, run_dir = job.run.train, job.run.run_dir
    metric, higher = score_key(job.data.info)
    score = row.get(metric)
    if score is not None and (state.best is None or (score > state.best if higher else score < state.best)):
        state.best, state.stale = score, 0
        atomic_torch_save(job.model.state_dict(), run_dir / "best.pt")
    else:
        state.stale += 1
    state.epoch = int(row["epoch"])
    _save(run_dir / "checkpoint.pt", job.model, job.opt, state, elapsed)
    _Progress.write(_epoch_line(row), tc.progress)
    _warn_growth(job.run, state, {k: row.get(k) for k in ("train_loss", "val_loss")}, f"epoch {state.epoch}")


def _warn_growth(run: RunConfig, state: _RunState, losses: dict[str, Any], when: str) -> None:
    """Warn (once per process) when a loss grew past ``LOSS_GROWTH`` x its first value without becoming NaN."""
    if state.warned or state.first_loss is None:
        return
    bound = LOSS_GROWTH * max(state.first_loss, 1.0)
    for key, v in losses.items():
        if isinstance(v, float) and math.isfinite(v) and v > bound:
            state.warned = True
            clip = run.train.clip_norm
            fix = f"lower --clip-norm (now {clip:g})" if clip else "set --clip-norm (e.g. 1)"
            warnings.warn(f"{run.name}: {key} {v:.3g} at {when} is over {LOSS_GROWTH:g}x the first step's loss "
                          f"({state.first_loss:.3g}): training is diverging; lower --lr (now {run.train.lr:g}) or "
                          f"{fix}", DivergenceWarning, stacklevel=2)
            return


def _finish(job: _Job, state: _RunState, stop_reason: str, t_start: float) -> dict[str, Any]:
    """Evaluate the best weights on validation and test and write ``final.json``."""
    run, tc, info, model = job.run, job.run.train, job.data.info, job.model
    best_path = run.run_dir / "best.pt"
    if best_path.exists():
        model.load_state_dict(load_state_dict_from(best_path))
    metric, _ = score_key(info)
    final: dict[str, Any] = {"name": run.name, "run_dir": str(run.run_dir), "epochs": len(
        [h for h in state.history if "epoch" in h and "phase" not in h]), "stop_reason": stop_reason,
        "best_" + metric: state.best, "seconds": round(time.time() - t_start, 3), "task": info.name,
        "cell": run.model.cell, "parameters": sum(p.numel() for p in model.parameters())}
    final.update(evaluate(model, job.data.val, info, tc.loss, job.device, "val"))
    final.update(evaluate(model, job.data.test, info, tc.loss, job.device, "test"))
    _warn_growth(run, state, {k: final.get(k) for k in ("val_loss", "test_loss")}, "the end")
    atomic_write_json(run.run_dir / "final.json", final)
    return final


def _pretrain(run: RunConfig, model: nn.Module, data: TaskData, device: torch.device
              ) -> tuple[list[dict[str, Any]], Any]:
    """LSC pre-training and the initial firing-rate fit, before the first epoch; returns history rows and the LSC
    report (None without LSC). Writes nothing: the caller does, once it succeeded."""
    rows: list[dict[str, Any]] = []
    report = None
    rows.extend(lsuv_for_run(run, model, data.train, device))  # LSUV (ModelConfig.lsuv), before LSC
    if run.lsc is not None:
        from ..lsc.pretrain import lsc_pretrain

        batches = [(x.to(device), y.to(device)) for _, (x, y) in zip(range(run.lsc.batches), data.train,
                                                                     strict=False)]
        report = lsc_pretrain(model, batches, run.lsc)
        rows.append({"phase": "lsc", "steps": report.steps, "seconds": report.seconds,
                     "stop_reason": report.stop_reason})
    if run.train.init_rate is not None and any(spiking_layers(model)):
        from ..snn.rates import fit_initial_rate

        batches = [(x.to(device), y.to(device)) for _, (x, y) in zip(range(4), data.train, strict=False)]
        rate = fit_initial_rate(model, batches, run.train.init_rate)
        rows.append({"phase": "init_rate", "target": run.train.init_rate, "rate": float(rate)})
    return rows, report


def _save(path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: _RunState, elapsed: float = 0.0
          ) -> None:
    metrics = "".join(json.dumps(h, sort_keys=True) + "\n" for h in state.history)
    atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": state.epoch,
                       "step": state.step, "best": state.best, "stale": state.stale, "metrics_jsonl": metrics,
                       "elapsed": elapsed, "first_loss": state.first_loss}, path)
    atomic_write_text(path.parent / "metrics.jsonl", metrics)


def _epoch_line(row: dict[str, Any]) -> str:
    keys = [k for k in ("train_loss", "train_acc", "val_loss", "val_acc", "val_ppl", "val_rate") if k in row]
    took = f" ({row['seconds']:.1f} s)" if "seconds" in row else ""
    return f"epoch {row['epoch']}: " + ", ".join(f"{k} {row[k]:.4g}" for k in keys) + took
