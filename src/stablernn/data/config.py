"""Typed options of every task, in one flat dataclass so the CLI can expose each field as a flag."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..fields import check_fields, option, require
from .base import DataError

Layout = Literal["rows", "pixels"]
ValSplit = Literal["random", "tail", "speakers"]
SLMNISTLayout = Literal["intended", "original"]
SHDFrames = Literal["binary", "count"]


@dataclass
class DataConfig:
    """Which task to load and how; checked on construction (:class:`DataError` naming the field).

    Fields not used by a task are ignored by it; each task's builder documents which it reads.
    """

    task: str = option("digits", "task name (list them with `stablernn data list`)")
    batch_size: int = option(64, "training batch size")
    eval_batch_size: int = option(256, "validation/test batch size")
    seed: int = option(0, "seeds splits, permutations and generators")
    val_fraction: float = option(0.1, "fraction of train carved out for validation, in [0, 1)")
    data_dir: str | None = option(None, "where user-provided files live (default: $STABLERNN_DATA)")
    layout: Layout = option("rows", "[digits] image as a sequence of rows (8 steps) or of pixels (64 steps)")
    seq_len: int = option(50, "[synthetic tasks] sequence length")
    n_train: int = option(4000, "[synthetic tasks] training examples")
    n_test: int = option(1000, "[synthetic tasks] test examples")
    time_repeat: int = option(1, "repeat every frame and target this many times along time (the papers' "
                              "timerepeat)")
    val_split: ValSplit = option("random", "how validation is carved from train: random (seeded), tail (the last "
                                 "val_fraction, as the original code for sl-MNIST and SHD), speakers (SHD: whole "
                                 "speakers held out)")
    check_counts: bool = option(True, "require the published sizes (MNIST 60000/10000, SHD 8156/2264); off for "
                                "subsets and test fixtures")
    cache_dir: str | None = option(None, "dense preprocessed caches such as SHD frames (default: $STABLERNN_CACHE "
                                   "or ~/.cache/stablernn; empty: no caching)")
    permutation_seed: int | None = option(None, "[psmnist] pixel permutation seed (default: seed); set it to keep "
                                          "one permutation across training seeds")
    slmnist_layout: SLMNISTLayout = option("intended", "[slmnist] intended: [time 100, 784 channels], one spike "
                                           "per pixel at its latency; original: the released code's reshaped "
                                           "(784, 100) one-hot, to reproduce its numbers (docs/data.md)")
    shd_dt: float = option(0.01, "[shd] bin width in seconds")
    shd_window: float = option(1.4, "[shd] window in seconds (steps = window / dt; later spikes dropped)")
    shd_channels: int = option(700, "[shd] input channels: 700, or a divisor of 700 (neighbouring units summed)")
    shd_frames: SHDFrames = option("binary", "[shd] frame values: binary (any spike in the bin) or count (spikes "
                                   "per bin, capped at 255)")
    n_symbols: int = option(8, "[copy memory, delayed recall] alphabet size")
    copy_length: int = option(10, "[copy memory] symbols to reproduce")

    def __post_init__(self) -> None:
        check_fields(self, DataError)
        for name in ("batch_size", "eval_batch_size", "time_repeat"):
            v = getattr(self, name)
            require(v >= 1, f"{name} must be >= 1, got {v}", DataError)
        require(0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got "
                f"{self.val_fraction}", DataError)
        require(self.shd_dt > 0 and self.shd_window > 0, f"shd_dt and shd_window must be > 0, got "
                f"{self.shd_dt} and {self.shd_window}", DataError)
