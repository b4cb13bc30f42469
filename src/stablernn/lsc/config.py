"""Typed options of LSC pre-training (paper A, arXiv:2308.12075; docs/lsc.md), kept apart from the loop so
configs import it cheaply."""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Literal

from ..fields import check_fields, option, require

Family = Literal["time", "depth", "encoder", "decoder"]
FAMILIES: tuple[str, ...] = typing.get_args(Family)
Measure = Literal["radius", "norm", "probe"]
MEASURES: tuple[str, ...] = typing.get_args(Measure)
Engine = Literal["auto", "exact", "matrix_free"]
ENGINES: tuple[str, ...] = typing.get_args(Engine)
Rectangular = Literal["subsample", "norm"]
LSCOptimizer = Literal["adabelief_lookahead", "adabelief", "adamw"]
TargetName = Literal["auto", "unbalanced"]
TARGET_NAMES: tuple[str, ...] = typing.get_args(TargetName)


@dataclass
class LSCConfig:
    """LSC pre-training options; checked on construction (``ValueError`` naming the field).

    ``target``: a number for every family, ``"auto"`` (1 for feed-forward and single-layer nets, 0.5 for deep
    recurrent nets), ``"unbalanced"`` (depth L/(L+T), time T/(L+T)), or a dict per family (missing ones: auto).
    """

    target: float | str | dict[str, float] = option("auto", "target radius: a number, auto (1 for feed-forward "
                                                    "and single-layer nets, 0.5 deep) or unbalanced (depth "
                                                    "L/(L+T), time T/(L+T))")
    families: tuple[Family, ...] = option(FAMILIES, "transition families to pre-train")
    decoder_target: float = option(1.0, "target of the decoder (the papers' code always used 1)")
    measure: Measure = option("radius", "what is brought to the target: max |eig| (square-subsampled), the top "
                              "singular value, or a random-probe lower bound of it")
    # "norm" by default: measured to converge where the subsampled radius barely moves (docs/lsc.md)
    rectangular: Rectangular = option("norm", "non-square Jacobians: subsample (radius of a random square "
                                      "submatrix, the papers' code; noisy) or norm (top singular value)")
    engine: Engine = option("auto", "Jacobian engine: exact, matrix_free (Arnoldi), or auto by size")
    # the papers' "wmultiplier" for tau and nu. Measured necessary: gradient descent cannot move a LIF's time radius
    # below its leak (0.95 at tau = 20), and moves an LRU's max|lambda| one eigenvalue per step (docs/lsc.md)
    rescale_time: bool = option(True, "after each step, scale the fixed time constants of cells that allow it "
                                "(LIF/ALIF tau, LRU |lambda|) by clip(target / time radius, 1 +- rescale_clip)")
    rescale_clip: float = option(0.15, "largest relative change of rescale_time per step, in (0, 1)")
    max_steps: int = option(400, "optimisation steps at most")
    time_limit: float | None = option(600.0, "seconds at most (None: no limit)")
    lr: float = option(7.2e-3, "learning rate")
    weight_decay: float = option(1e-4, "weight decay")
    optimizer: LSCOptimizer = option("adabelief_lookahead", "optimizer (adabelief_lookahead: as the papers)")
    tol: float = option(0.05, "early stop when every family's moving-average radius is within tol of its target")
    patience: int = option(20, "consecutive steps within tol before the early stop")
    batches: int = option(2, "batches walked through (each time step is one step), cycled until a stop")
    # 8 measured as good as 32 (same trajectory of radii on a 2x64 GRU) at a quarter of the cost; 4 was noisier
    # (131 vs 81 steps to converge)
    batch_size: int | None = option(8, "use the first this many examples of each batch (None: all)")
    seed: int = option(0, "seeds the random subsampling and probes")
    progress: bool = option(True, "show a progress bar")
    ema: float = option(0.9, "moving-average factor of the per-(family, layer) radii used for stopping and the "
                        "best weights, in [0, 1)")
    layers_per_step: int | None = option(None, "measure at most this many random layers per family each step "
                                         "(None: all)")
    measure_steps: int | None = option(16, "time steps (evenly spread over the first batch) of the before/after "
                                       "radii (None: all)")
    exact_max_dim: int = option(256, "engine=auto: exact Jacobians up to this size, matrix-free above")
    mf_iters: int = option(64, "matrix-free engine: Arnoldi iterations at most (per direction)")
    mf_tol: float = option(1e-4, "matrix-free engine: relative change of the top Ritz value that counts as "
                           "converged")

    def __post_init__(self) -> None:
        bad = set(self.families) - set(FAMILIES) if isinstance(self.families, (tuple, list)) else set()
        if bad:
            raise ValueError(f"unknown LSC families {sorted(bad)}; choose from {', '.join(FAMILIES)}")
        check_target(self.target)
        check_fields(self, prefix="LSC ")
        for name in ("max_steps", "patience", "batches", "exact_max_dim", "mf_iters"):
            v = getattr(self, name)
            require(v >= 1, f"LSC {name} must be a positive integer, got {v!r}")
        for name in ("batch_size", "layers_per_step", "measure_steps"):
            v = getattr(self, name)
            require(v is None or v >= 1, f"LSC {name} must be >= 1 or None, got {v}")
        require(self.lr > 0 and self.tol > 0 and self.mf_tol > 0, "LSC lr, tol and mf_tol must be > 0")
        require(self.weight_decay >= 0, f"LSC weight_decay must be >= 0, got {self.weight_decay}")
        require(self.decoder_target > 0, f"LSC decoder_target must be > 0, got {self.decoder_target}")
        require(0.0 < self.rescale_clip < 1.0, f"LSC rescale_clip must be in (0, 1), got {self.rescale_clip}")
        require(0.0 <= self.ema < 1.0, f"LSC ema must be in [0, 1), got {self.ema}")
        require(self.time_limit is None or self.time_limit > 0, f"LSC time_limit must be > 0 or None, got "
                f"{self.time_limit}")


def check_target(t: object) -> None:
    """Raise ``ValueError`` unless ``t`` is an LSC target: a number > 0 (or a string of one), auto, unbalanced, or a
    dict {family: number > 0}."""
    what = "LSC target must be a number, 'auto', 'unbalanced' or a dict per family"
    if isinstance(t, dict):
        unknown = set(t) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown families in the LSC target dict {sorted(unknown)}; choose from "
                             f"{', '.join(FAMILIES)}")
        for v in t.values():
            if isinstance(v, (dict, str)):
                raise ValueError(f"the LSC target dict needs a number per family, got {v!r}")
            check_target(v)
        return
    if isinstance(t, str):
        if t in TARGET_NAMES:
            return
        try:
            t = float(t)
        except ValueError:
            raise ValueError(f"{what}; got {t!r}") from None
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise ValueError(f"{what}; got {t!r}")
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"LSC target must be > 0, got {t}")
