"""Typed options of every task, in one flat dataclass so the CLI can expose each field as a flag."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DataConfig:
    """Which task to load and how.

    Fields not used by a task are ignored by it; each task's builder documents which it reads.
    """

    task: str = "digits"
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0  # seeds splits, permutations and generators
    val_fraction: float = 0.1  # carved from train
    data_dir: str | None = None  # where user-provided files live (else $STABLERNN_DATA)
    # digits / image-as-sequence layout
    layout: Literal["rows", "pixels"] = "rows"
    # synthetic tasks
    seq_len: int = 50
    n_train: int = 4000
    n_test: int = 1000
    # repeat every frame and target k times along time (spec §2.1 `timerepeat`)
    time_repeat: int = 1
    # how validation is carved from train: "random" (seeded), "tail" (the last val_fraction, as the original code
    # did for sl-MNIST and SHD), "speakers" (SHD only: whole speakers held out, so val measures new voices)
    val_split: Literal["random", "tail", "speakers"] = "random"
    # require the published sizes (MNIST 60000/10000, SHD 8156/2264); turn off for subsets and test fixtures
    check_counts: bool = True
    # dense preprocessed caches (SHD frames); None: $STABLERNN_CACHE or ~/.cache/stablernn; "" disables caching
    cache_dir: str | None = None
    # psmnist pixel permutation seed; None: use `seed` (set it to keep one permutation across training seeds)
    permutation_seed: int | None = None
    # sl-MNIST layout: "intended" = [time 100, 784 channels] (one spike per pixel at its latency step); "original"
    # = the released code's (784, 100) one-hot *reshaped* to (100, 784), for reproducing its numbers (spec §7 item 8)
    slmnist_layout: Literal["intended", "original"] = "intended"
    # SHD binning: bin width and window in seconds (T = round(window / dt) steps; spikes after the window dropped)
    shd_dt: float = 0.01
    shd_window: float = 1.4
    # SHD input channels: 700 (all) or a divisor of 700 (e.g. 140: 5 neighbouring units summed into one channel)
    shd_channels: int = 700
    # SHD frames: "binary" (1 if any spike in the bin) or "count" (spikes per bin, capped at 255)
    shd_frames: Literal["binary", "count"] = "binary"
    # copy memory / delayed recall alphabet size, and how many symbols copy memory must reproduce
    n_symbols: int = 8
    copy_length: int = 10
