"""The one training loop: :func:`fit` trains a :class:`RunConfig` and writes a self-describing run directory.

``runs/<name>/``: ``config.json`` (every option), ``metrics.jsonl`` (one line per epoch), ``checkpoint.pt`` (last
epoch: model, optimizer, progress, RNG), ``best.pt`` (best-by-validation weights), ``final.json`` (validation and
test metrics of the best weights), and ``lsc_report.json`` when LSC pre-training ran. Every file is written
atomically; a rerun of the same config resumes after the last finished epoch and produces the same metrics as an
uninterrupted run.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data import load_task
from ..data.base import TaskData, TaskInfo
from ..io import atomic_torch_save, atomic_write_json, atomic_write_text, load_checkpoint, load_state_dict_from
from ..models import DeepRNN, build_model
from ..optim import lr_factor, make_optimizer, set_lr
from .config import RunConfig
from .losses import MetricSum, score_key, task_loss
from .stable import lsuv_for_run, resolve_stable


class NonFiniteError(RuntimeError):
    """Training produced a NaN/inf; the message names the epoch, step and the first non-finite tensor."""


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
    if isinstance(model, DeepRNN) or hasattr(model, "run"):
        out = model.run(x, states)
        return out.logits, out.states, out.layer_outputs
    return model(x), None, []


def detach_states(states: Any) -> Any:
    if states is None:
        return None
    return [type(s)(*(t.detach() for t in s)) for s in states]


def spiking_layers(model: nn.Module) -> list[bool]:
    """Which layers of ``model`` emit spikes (their outputs count for firing-rate control)."""
    cells = getattr(model, "cells", [])
    return [hasattr(c, "spike") and hasattr(c, "threshold") for c in cells]


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


def _check_existing_config(run_dir: Path, cfg: dict[str, Any]) -> None:
    path = run_dir / "config.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    if _comparable(old) != _comparable(cfg):
        raise ValueError(f"run directory {run_dir} holds a run with a different config; pick another --name, or "
                         "delete the directory to start over")


def _comparable(cfg: dict[str, Any]) -> str:
    cfg = json.loads(json.dumps(cfg, default=list))
    cfg.get("train", {}).pop("progress", None)  # display options do not change a run
    cfg.get("train", {}).pop("threads", None)
    if cfg.get("lsc"):
        cfg["lsc"].pop("progress", None)
    return json.dumps(cfg, sort_keys=True)


def fit(run: RunConfig, *, data: TaskData | None = None, model: nn.Module | None = None) -> dict[str, Any]:
    """Train ``run`` (resuming from ``run_dir/checkpoint.pt`` if present) and return the final metrics.

    ``data`` and ``model`` may be passed to reuse a loaded task or to train a custom model (e.g. a DeepRNN of your
    own cells); otherwise both are built from the config.
    """
    tc = run.train
    if tc.epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {tc.epochs}")
    if tc.lr <= 0 or not math.isfinite(tc.lr):
        raise ValueError(f"lr must be a positive number, got {tc.lr}")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    seed_everything(tc.seed)
    data = data if data is not None else load_task(run.data)
    info = data.info
    run = resolve_stable(run, info)  # issue 16: --stable auto -> explicit LSC / design settings (train/stable.py)
    model = model if model is not None else build_for_task(run, info)
    if tc.init_from:
        model.load_state_dict(load_state_dict_from(tc.init_from))
    model.to(device)

    run_dir = run.run_dir
    cfg_dict = run.to_dict()
    _check_existing_config(run_dir, cfg_dict)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", cfg_dict)
    atomic_write_json(run_dir / "task.json", asdict(info))  # load_run rebuilds the network without the data
    ckpt_path, best_path = run_dir / "checkpoint.pt", run_dir / "best.pt"

    opt = make_optimizer(model.parameters(), tc.optimizer, tc.lr, tc.weight_decay)
    steps_per_epoch = len(data.train) if tc.max_batches is None else min(len(data.train), tc.max_batches)
    total_steps = max(1, steps_per_epoch * tc.epochs)
    metric, higher = score_key(info)
    history: list[dict[str, Any]] = []
    start_epoch, step, best, stale, elapsed = 0, 0, None, 0, 0.0

    if ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, map_location=device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, step, best, stale = ck["epoch"], ck["step"], ck["best"], ck["stale"]
        elapsed = float(ck.get("elapsed", 0.0))
        history = [json.loads(line) for line in ck["metrics_jsonl"].splitlines() if line.strip()]
        _Progress.write(f"resuming {run.name} after epoch {start_epoch}", tc.progress)
    else:
        pre = _pretrain(run, model, data, device, run_dir)
        history.extend(pre)
        _save(ckpt_path, model, opt, 0, 0, None, 0, history, 0.0)

    spiking = spiking_layers(model)
    t_start = time.time() - elapsed
    stop_reason = "epochs"
    for epoch in range(start_epoch, tc.epochs):
        if tc.time_limit is not None and time.time() - t_start > tc.time_limit:
            stop_reason = "time_limit"
            break
        # per-epoch seeding makes a resumed epoch draw the same dropout masks and batch order as an unbroken run
        torch.manual_seed(tc.seed * 100_003 + epoch)
        if hasattr(data.train, "set_epoch"):
            data.train.set_epoch(epoch)
        model.train()
        bar = _Progress(steps_per_epoch, f"{run.name} epoch {epoch + 1}/{tc.epochs}", tc.progress)
        train_acc, states = MetricSum(info, tc.loss), None
        for b, (x, y) in enumerate(data.train):
            if b >= steps_per_epoch:
                break
            x, y = x.to(device), y.to(device)
            set_lr(opt, tc.lr * lr_factor(step, total_steps, tc.schedule, tc.warmup_steps))
            logits, new_states, outs = forward(model, x, states if info.stateful else None)
            states = detach_states(new_states) if info.stateful else None
            loss = task_loss(logits, y, info, tc.loss)
            if tc.final_rate is not None and any(spiking):
                from ..snn.rates import ramp, sparsity_loss

                progress = (epoch + b / max(1, steps_per_epoch)) / max(1, tc.epochs)
                weight = tc.rate_weight * ramp(progress, tc.rate_ramp[0], tc.rate_ramp[1], tc.rate_schedule)
                if weight > 0:
                    loss = loss + weight * sparsity_loss(outs, spiking, tc.final_rate)
            if tc.flossing_weight > 0:
                from ..dynamics.lyapunov import flossing_loss

                loss = loss + tc.flossing_weight * flossing_loss(model, x, tc.flossing_k, target=tc.flossing_target)
            if not torch.isfinite(loss):
                bad = first_non_finite([("input", x), *[(f"layer {i} output", o) for i, o in enumerate(outs)],
                                        ("logits", logits)]) or "loss"
                raise NonFiniteError(f"non-finite loss at epoch {epoch + 1}, step {b + 1}: first non-finite tensor "
                                     f"is {bad}; lower the learning rate (now {tc.lr:g}) or enable clipping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            bad = first_non_finite([(f"grad of {n}", p.grad) for n, p in model.named_parameters()])
            if bad is not None:
                raise NonFiniteError(f"non-finite gradient at epoch {epoch + 1}, step {b + 1}: first non-finite "
                                     f"tensor is {bad}; lower the learning rate (now {tc.lr:g}) or set --clip-norm")
            if tc.clip_norm:
                nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
            opt.step()
            step += 1
            train_acc.add(logits.detach(), y)
            if tc.eval_every and step % tc.eval_every == 0 and b + 1 < steps_per_epoch:
                mid = {"epoch": round(epoch + (b + 1) / steps_per_epoch, 4), "step": step, "phase": "mid_epoch"}
                mid.update(evaluate(model, data.val, info, tc.loss, device, "val"))
                history.append(mid)
                _Progress.write(_epoch_line(mid), tc.progress)
            shown = train_acc.result("train")
            bar.update(loss=loss.item(), **({"acc": shown["train_acc"]} if "train_acc" in shown else {}))
        bar.close()
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": tc.lr * lr_factor(step, total_steps,
                                                                                         tc.schedule,
                                                                                         tc.warmup_steps)}
        row.update(train_acc.result("train"))
        row.update(evaluate(model, data.val, info, tc.loss, device, "val"))
        row["seconds"] = round(time.time() - t_start, 3)
        history.append(row)
        score = row.get(metric)
        improved = score is not None and (best is None or (score > best if higher else score < best))
        if improved:
            best, stale = score, 0
            atomic_torch_save(model.state_dict(), best_path)
        else:
            stale += 1
        _save(ckpt_path, model, opt, epoch + 1, step, best, stale, history, time.time() - t_start)
        _Progress.write(_epoch_line(row), tc.progress)
        if tc.patience is not None and stale >= tc.patience:
            stop_reason = "patience"
            break

    if best_path.exists():
        model.load_state_dict(load_state_dict_from(best_path))
    final: dict[str, Any] = {"name": run.name, "run_dir": str(run_dir), "epochs": len(
        [h for h in history if "epoch" in h and "phase" not in h]), "stop_reason": stop_reason, "best_" + metric: best,
        "seconds": round(time.time() - t_start, 3), "task": info.name, "cell": run.model.cell,
        "parameters": sum(p.numel() for p in model.parameters())}
    final.update(evaluate(model, data.val, info, tc.loss, device, "val"))
    final.update(evaluate(model, data.test, info, tc.loss, device, "test"))
    atomic_write_json(run_dir / "final.json", final)
    return final


def _pretrain(run: RunConfig, model: nn.Module, data: TaskData, device: torch.device, run_dir: Path
              ) -> list[dict[str, Any]]:
    """LSC pre-training and the initial firing-rate fit, before the first epoch; returns history rows."""
    rows: list[dict[str, Any]] = []
    rows.extend(lsuv_for_run(run, model, data.train, device))  # issue 16: LSUV (ModelConfig.lsuv), before LSC
    if run.lsc is not None:
        from ..lsc.pretrain import lsc_pretrain

        batches = [(x.to(device), y.to(device)) for _, (x, y) in zip(range(run.lsc.batches), data.train,
                                                                     strict=False)]
        report = lsc_pretrain(model, batches, run.lsc)
        atomic_write_json(run_dir / "lsc_report.json", report.to_json())
        rows.append({"phase": "lsc", "steps": report.steps, "seconds": report.seconds,
                     "stop_reason": report.stop_reason})
    if run.train.init_rate is not None and any(spiking_layers(model)):
        from ..snn.rates import fit_initial_rate

        batches = [(x.to(device), y.to(device)) for _, (x, y) in zip(range(4), data.train, strict=False)]
        rate = fit_initial_rate(model, batches, run.train.init_rate)
        rows.append({"phase": "init_rate", "target": run.train.init_rate, "rate": float(rate)})
    return rows


def _save(path: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, step: int, best: float | None,
          stale: int, history: list[dict[str, Any]], elapsed: float) -> None:
    metrics = "".join(json.dumps(h, sort_keys=True) + "\n" for h in history)
    atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                       "best": best, "stale": stale, "metrics_jsonl": metrics, "elapsed": elapsed}, path)
    atomic_write_text(path.parent / "metrics.jsonl", metrics)


def _epoch_line(row: dict[str, Any]) -> str:
    keys = [k for k in ("train_loss", "train_acc", "val_loss", "val_acc", "val_ppl", "val_rate") if k in row]
    took = f" ({row['seconds']:.1f} s)" if "seconds" in row else ""
    return f"epoch {row['epoch']}: " + ", ".join(f"{k} {row[k]:.4g}" for k in keys) + took


def config_summary(run: RunConfig) -> dict[str, Any]:
    return asdict(run)
