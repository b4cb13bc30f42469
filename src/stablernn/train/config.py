"""Typed configs of a training run. A run directory holds ``config.json`` with all of them, so it is
self-describing and can be resumed or re-run."""
from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..data.config import DataConfig
from ..fields import allows_none, check_fields, field_types, option, require
from ..lsc.config import LSCConfig
from ..models import ModelConfig
from ..snn.rates import RampKind

Optimizer = Literal["adamw", "adam", "adabelief", "adabelief_lookahead", "sgd"]
Schedule = Literal["constant", "cosine", "linear"]
SequenceLoss = Literal["mean_logits", "last", "per_step"]
StableMode = Literal["off", "auto"]


@dataclass
class TrainConfig:
    """How to train; checked on construction (``ValueError`` naming the field and the allowed values)."""

    epochs: int = option(30, "training epochs")
    lr: float = option(3e-3, "learning rate")
    optimizer: Optimizer = option("adamw", "optimizer (adabelief_lookahead: AdaBelief in Lookahead, as the papers)")
    weight_decay: float = option(0.0, "weight decay (decoupled for adamw and adabelief)")
    schedule: Schedule = option("cosine", "learning-rate schedule over all optimisation steps")
    warmup_steps: int = option(0, "linear learning-rate warmup steps")
    clip_norm: float | None = option(1.0, "global gradient-norm clipping (None: off)")
    loss: SequenceLoss = option("mean_logits", "sequence classification loss: CE on the time-averaged logits, on "
                                "the last step's, or on every step's (label repeated)")
    seed: int = option(0, "seeds the initialisation, the batch order and dropout")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    max_batches: int | None = option(None, "cap on training batches per epoch (quick runs)")
    eval_every: int | None = option(None, "also evaluate on validation every this many steps (long epochs, e.g. "
                                    "PTB)")
    patience: int | None = option(None, "stop after this many epochs without a better validation score")
    time_limit: float | None = option(None, "seconds of training, then stop after the current epoch")
    progress: bool = option(True, "show a progress bar")
    threads: int | None = option(None, "torch CPU threads (default: torch's)")
    # firing-rate control for spiking layers (paper B, arXiv:2202.00282, Fig. 3; docs/surrogates.md): initial rate
    # fitted before training, and a sparsity loss weight * ramp(epoch) * mean_l (rate_l - final_rate)^2
    init_rate: float | None = option(None, "[lif, alif] fit the initial firing rate to this before training")
    final_rate: float | None = option(None, "[lif, alif] target rate of the sparsity loss (None: no sparsity loss)")
    rate_weight: float = option(1.0, "[lif, alif] weight of the sparsity loss")
    rate_ramp: tuple[float, float] = option((0.2, 0.6), "[lif, alif] START:END fractions of training over which "
                                            "the sparsity loss is switched in")
    rate_schedule: RampKind = option("linear", "[lif, alif] shape of the sparsity-loss ramp")
    # gradient flossing (Engelken 2023): weight * mean_b (top-k Lyapunov exponents - target)^2
    # added to the loss, estimated on each training batch's inputs
    flossing_weight: float = option(0.0, "gradient-flossing loss weight (0: off)")
    flossing_k: int = option(1, "gradient flossing: number of top Lyapunov exponents pushed to the target")
    flossing_target: float = option(0.0, "gradient flossing: target of those exponents")
    init_from: str | None = option(None, "checkpoint or weights file to start from (e.g. from `stablernn "
                                   "pretrain`)")
    # DECOLLE (Kaiser et al. 2020, arXiv:1811.10766): per-layer local losses through fixed random readouts
    local_loss: float = option(0.0, "weight of DECOLLE-style per-layer local losses through fixed random readouts "
                               "(0: off); with --cell decolle no error crosses layers")
    # one switch for a stable start (train/stable.py); "off", not "none": a sweep reads "none" as None
    stable: StableMode = option("off", "auto: layer norm in Elman/GRU/LSTM cells (no LSC; the ReLU cell also IRNN); "
                                "for other cells LSC to radius 1 on the signal edges (lsc.theory.stable_targets) "
                                "with the activity guard, plus Conditions I+II for LIF/ALIF where they have a root; "
                                "off: the run's own settings")

    def __post_init__(self) -> None:
        validate_train_config(self)
        check_fields(self)  # what is left: the kinds of the other fields


_HINTS: dict[str, Any] = typing.get_type_hints(TrainConfig)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_train_config(tc: TrainConfig) -> None:
    """Raise ``ValueError`` naming the field (as its command-line option) and the allowed values; called on
    construction, so a bad value is refused before a run directory exists."""
    for f in dataclasses.fields(tc):  # Literal fields: one of the listed choices
        choices = typing.get_args(_HINTS[f.name]) if typing.get_origin(_HINTS[f.name]) is Literal else ()
        if choices and getattr(tc, f.name) not in choices:
            raise ValueError(f"unknown {f.name} {getattr(tc, f.name)!r}; choose one of {', '.join(choices)} "
                             f"(--{f.name.replace('_', '-')})")
    if not isinstance(tc.device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", tc.device):
        raise ValueError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {tc.device!r}")
    if not _is_int(tc.epochs) or tc.epochs < 0:
        raise ValueError(f"--epochs must be an integer >= 0, got {tc.epochs!r}")
    if not _is_num(tc.lr) or tc.lr <= 0:
        raise ValueError(f"--lr must be a positive finite number, got {tc.lr!r}")
    if not _is_num(tc.weight_decay) or tc.weight_decay < 0:
        raise ValueError(f"--weight-decay must be a finite number >= 0, got {tc.weight_decay!r}")
    if not _is_int(tc.seed):
        raise ValueError(f"--seed must be an integer, got {tc.seed!r}")
    for name in ("warmup_steps",):
        v = getattr(tc, name)
        if not _is_int(v) or v < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 0, got {v!r}")
    for name in ("max_batches", "eval_every", "patience", "threads"):
        v = getattr(tc, name)
        if v is not None and (not _is_int(v) or v < 1):
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1 (or left out), got {v!r}")
    if tc.clip_norm is not None and (not _is_num(tc.clip_norm) or tc.clip_norm < 0):
        raise ValueError(f"--clip-norm must be a finite number >= 0 (0 = no clipping), got {tc.clip_norm!r}")
    if tc.time_limit is not None and (not _is_num(tc.time_limit) or tc.time_limit <= 0):
        raise ValueError(f"--time-limit must be a positive number of seconds, got {tc.time_limit!r}")
    if tc.init_rate is not None and (not _is_num(tc.init_rate) or not 0.0 < tc.init_rate < 1.0):
        raise ValueError(f"--init-rate must be a firing rate in (0, 1), got {tc.init_rate!r}")
    if tc.final_rate is not None and (not _is_num(tc.final_rate) or not 0.0 <= tc.final_rate <= 1.0):
        raise ValueError(f"--final-rate must be a firing rate in [0, 1], got {tc.final_rate!r}")
    if not _is_num(tc.rate_weight) or tc.rate_weight < 0:
        raise ValueError(f"--rate-weight must be a finite number >= 0, got {tc.rate_weight!r}")
    ramp = tuple(tc.rate_ramp)
    if len(ramp) != 2 or not all(_is_num(v) for v in ramp) or not 0.0 <= ramp[0] <= ramp[1] <= 1.0:
        raise ValueError(f"--rate-ramp must be START:END with 0 <= START <= END <= 1 (fractions of training), got "
                         f"{':'.join(map(str, ramp))}")
    if not _is_num(tc.flossing_weight) or tc.flossing_weight < 0:
        raise ValueError(f"--flossing-weight must be a finite number >= 0, got {tc.flossing_weight!r}")
    if not _is_int(tc.flossing_k) or tc.flossing_k < 1:
        raise ValueError(f"--flossing-k must be an integer >= 1, got {tc.flossing_k!r}")
    if not _is_num(tc.flossing_target):
        raise ValueError(f"--flossing-target must be a finite number, got {tc.flossing_target!r}")
    if not _is_num(tc.local_loss) or tc.local_loss < 0:
        raise ValueError(f"--local-loss must be a finite number >= 0, got {tc.local_loss!r}")


@dataclass
class RunConfig:
    """Everything a run needs: name, where it is written, model, data, training and optional LSC pre-training."""

    name: str = "run"
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lsc: LSCConfig | None = None

    def __post_init__(self) -> None:
        for name in ("name", "out_dir"):
            v = getattr(self, name)
            require(isinstance(v, str) and v.strip() != "", f"{name} must be a non-empty string, got {v!r}")
        for name, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
            v = getattr(self, name)
            require(isinstance(v, cls), f"{name} must be a {cls.__name__}, got {type(v).__name__}")
        require(self.lsc is None or isinstance(self.lsc, LSCConfig),
                f"lsc must be an LSCConfig or None, got {type(self.lsc).__name__}")

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
    types = field_types(typ)
    fixed = {k: None if _none_word(v) and allows_none(types[k]) else tuple(v) if isinstance(v, list) else v
             for k, v in values.items()}
    try:
        return typ(**fixed)
    except TypeError as e:
        raise ValueError(f"bad value in [{section}]: {e}") from None


def _none_word(v: Any) -> bool:
    """TOML has no null and the command line has only text: ``"none"`` stands for None in an optional field."""
    return isinstance(v, str) and v.strip().lower() == "none"


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


def flatten_config(d: dict[str, Any]) -> dict[str, Any]:
    """A run config as ``{"model.cell": "gru", ..., "lsc": None}``: sections split into ``section.field`` keys (one
    level only, so a per-family LSC target stays one value); top-level values and None sections kept as they are."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update({f"{k}.{f}": x for f, x in v.items()})
        else:
            out[k] = v
    return out
