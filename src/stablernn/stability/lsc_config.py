"""Typed options of LSC pre-training (spec §1.4), kept apart from the loop so configs import it cheaply."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["time", "depth", "encoder", "decoder"]
FAMILIES: tuple[str, ...] = ("time", "depth", "encoder", "decoder")


@dataclass
class LSCConfig:
    """LSC pre-training options.

    ``target``: a number for every family, ``"auto"`` (1 for feed-forward and single-layer nets, 0.5 for deep
    recurrent nets), or ``"unbalanced"`` (depth L/(L+T), time T/(L+T)).
    """

    target: float | str = "auto"
    families: tuple[str, ...] = FAMILIES
    decoder_target: float = 1.0  # the papers' code always used 1 for the decoder
    measure: Literal["radius", "norm"] = "radius"  # max |eig| (square-subsampled) or top singular value
    engine: Literal["auto", "exact", "matrix_free"] = "auto"
    max_steps: int = 400
    time_limit: float | None = 600.0  # seconds
    lr: float = 7.2e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adabelief_lookahead", "adabelief", "adamw"] = "adabelief_lookahead"
    tol: float = 0.05  # early stop when every family's moving-average radius is within tol of its target ...
    patience: int = 20  # ... for this many consecutive steps
    batches: int = 2  # batches walked through (each time step is one optimisation step)
    batch_size: int | None = None  # None: the task's training batch size
    seed: int = 0
    progress: bool = True
