"""Typed configs of a training run. A run directory holds ``config.json`` with all of them, so it is
self-describing and can be resumed or re-run."""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..data.config import DataConfig
from ..lsc.config import LSCConfig
from ..models import ModelConfig

Optimizer = Literal["adamw", "adam", "adabelief", "adabelief_lookahead", "sgd"]
Schedule = Literal["constant", "cosine", "linear"]
SequenceLoss = Literal["mean_logits", "last", "per_step"]


@dataclass
class TrainConfig:
    """How to train."""

    epochs: int = 30
    lr: float = 3e-3
    optimizer: Optimizer = "adamw"
    weight_decay: float = 0.0
    schedule: Schedule = "cosine"  # over all optimisation steps
    warmup_steps: int = 0
    clip_norm: float | None = 1.0  # global gradient-norm clipping; None = off
    # sequence classification: CE on time-averaged logits, on the last step's, or on every step's (label repeated)
    loss: SequenceLoss = "mean_logits"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_batches: int | None = None  # cap on training batches per epoch (quick runs)
    eval_every: int | None = None  # also evaluate on validation every this many steps (long epochs, e.g. PTB)
    patience: int | None = None  # stop after this many epochs without a better validation score
    time_limit: float | None = None  # seconds of training before stopping after the current epoch
    progress: bool = True  # progress bar
    threads: int | None = None  # torch CPU threads (None: torch's default)
    # firing-rate control for spiking layers (spec §4): initial rate fitted before training, and a sparsity loss
    # weight * ramp(epoch) * mean_l (rate_l - final_rate)^2 switched in gradually
    init_rate: float | None = None
    final_rate: float | None = None
    rate_weight: float = 1.0
    rate_ramp: tuple[float, float] = (0.2, 0.6)  # fractions of training where the ramp starts and ends
    rate_schedule: Literal["linear", "cosine"] = "linear"
    # gradient flossing (Engelken 2023): weight * mean_b (top-k Lyapunov exponents - target)^2 added to the loss,
    # estimated on each training batch's inputs (0 = off)
    flossing_weight: float = 0.0
    flossing_k: int = 1
    flossing_target: float = 0.0
    init_from: str | None = None  # a checkpoint / weights file to start from (e.g. written by `stablernn pretrain`)
    # issue 16: one switch for a stable start (train/stable.py): "auto" = LSC to the theory targets with the activity
    # guard, plus Conditions I+II for LIF/ALIF; "off" = the run's own settings only ("off", not "none": a sweep reads
    # "none" as None)
    stable: Literal["off", "auto"] = "off"


@dataclass
class RunConfig:
    """Everything a run needs: name, where it is written, model, data, training and optional LSC pre-training."""

    name: str = "run"
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lsc: LSCConfig | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Build from a (possibly partial) nested dict; unknown keys raise ``ValueError`` naming them."""
        known = {"name", "out_dir", "model", "data", "train", "lsc"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config section(s) {sorted(unknown)}; allowed: {sorted(known)}")
        kw: dict[str, Any] = {k: d[k] for k in ("name", "out_dir") if k in d}
        for key, typ in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
            if key in d:
                kw[key] = dataclass_from_dict(typ, d[key], section=key)
        if d.get("lsc") is not None:
            kw["lsc"] = dataclass_from_dict(LSCConfig, d["lsc"], section="lsc")
        return cls(**kw)


def dataclass_from_dict(typ: type, values: dict[str, Any], section: str = "") -> Any:
    """``typ(**values)`` with a clear error for unknown fields; lists become tuples where the default is one."""
    if not isinstance(values, dict):
        raise ValueError(f"config section [{section}] must be a table of field = value, got {type(values).__name__}")
    names = {f.name: f for f in dataclasses.fields(typ)}
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} in [{section}]; allowed: {', '.join(sorted(names))}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return typ(**fixed)
    except TypeError as e:
        raise ValueError(f"bad value in [{section}]: {e}") from None


def read_table_file(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A TOML (or, by suffix, JSON) file as a dict; clear errors naming ``what`` for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"malformed {what} {path}: {e}") from None


def load_config_file(path: str | Path) -> RunConfig:
    """Read a run config from TOML (``[model]``, ``[data]``, ``[train]``, ``[lsc]`` tables) or JSON."""
    return RunConfig.from_dict(read_table_file(path, "config file"))
