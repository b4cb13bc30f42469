"""Rebuild a trained run from its directory: the exact network ``fit`` trained (config, task sizes and input
statistics, stability conditions, surrogate constants and weights), for the diagnostics, the dynamics, reports and
``init_from``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from torch import nn

from ..data import load_task
from ..data.base import TaskInfo
from ..io import load_state_dict_from
from ..models import build_model
from .config import RunConfig, load_config_file


class LoadedRun(NamedTuple):
    model: nn.Module  # the trained network, in eval mode
    config: RunConfig  # the run's full config (config.json)
    task: TaskInfo  # what the network was sized for (task.json; the task's loader for runs written before it)
    weights: Path  # the file the weights came from: best.pt (the weights final.json was measured on) or checkpoint.pt


def load_run(run_dir: str | Path) -> LoadedRun:
    """The network of ``run_dir`` (``runs/<name>/`` written by ``stablernn train`` / :func:`stablernn.fit`), built by
    :func:`stablernn.models.build_model` with the run's seed, then loaded with the weights ``final.json`` was measured
    on (``best.pt``; ``checkpoint.pt`` when no epoch finished). Non-parameter constants (surrogate dampening,
    sharpness and tail, time constants) come back from the state dict. Raises ``FileNotFoundError`` naming what is
    missing."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json); expected runs/<name>/ written by "
                                "`stablernn train`")
    config = load_config_file(run_dir / "config.json")
    task_file = run_dir / "task.json"
    task = TaskInfo(**json.loads(task_file.read_text())) if task_file.is_file() else load_task(config.data).info
    if (run_dir / "best.pt").is_file():
        weights = run_dir / "best.pt"
    elif (run_dir / "checkpoint.pt").is_file():
        weights = run_dir / "checkpoint.pt"
    else:
        raise FileNotFoundError(f"{run_dir} holds no weights (best.pt or checkpoint.pt); the run never started "
                                "training: run `stablernn train` with its config to train it")
    model = build_model(config.model, task, seed=config.train.seed)
    model.load_state_dict(load_state_dict_from(weights))
    return LoadedRun(model.eval(), config, task, weights)


__all__ = ["LoadedRun", "load_run"]
