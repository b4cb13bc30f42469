"""Typed options of LSC pre-training (paper A, arXiv:2308.12075; docs/lsc.md), kept apart from the loop so
configs import it cheaply."""
from __future__ import annotations

import contextlib
import math
import typing
from dataclasses import dataclass
from typing import Literal

from ..fields import check_fields, option

Family = Literal["time", "depth", "encoder", "decoder"]
FAMILIES: tuple[str, ...] = typing.get_args(Family)
Measure = Literal["radius", "norm", "probe"]
MEASURES: tuple[str, ...] = typing.get_args(Measure)
Engine = Literal["auto", "exact", "matrix_free", "warm"]
ENGINES: tuple[str, ...] = typing.get_args(Engine)
Rectangular = Literal["subsample", "norm"]
LSCOptimizer = Literal["adabelief_lookahead", "adabelief", "adamw"]
TargetName = Literal["auto", "unbalanced", "theory"]
# issue 13: when LSC multiplies the weights feeding each transition by target / radius (lsc/pretrain.py)
RescaleWeights = Literal["off", "start", "step", "start+step"]
RESCALE_WEIGHTS: tuple[str, ...] = typing.get_args(RescaleWeights)
TARGET_NAMES: tuple[str, ...] = typing.get_args(TargetName)


@dataclass
class LSCConfig:
    """LSC pre-training options; checked on construction (``ValueError`` naming the field).

    ``target``: a number for every family, ``"auto"`` (1 for feed-forward and single-layer nets, 0.5 for deep
    recurrent nets), ``"unbalanced"`` (depth L/(L+T), time T/(L+T)), ``"theory"`` (the split of ρ_t + ρ_l = 1
    chosen from L and T by ``lsc.theory.theory_targets``), or a dict per family (missing ones: auto).

    ``activity``: the firing-rate range ``(low, high)`` every spiking layer must leave LSC in (``lsc.activity``);
    a layer outside it gets its bias refitted into the range, and the report says so. ``None`` turns the guard off.
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
    # "warm" (default): radii from bases kept across steps, refined by a few products, exact gradient at the pair
    # (measures.warm_radius); measured 4-10x cheaper per step than exact at width 128-256 with the same trajectory
    # of radii (docs/lsc.md)
    engine: Engine = option("warm", "Jacobian engine: warm (bases kept across steps), exact (eigvals, the "
                            "reference), matrix_free (Arnoldi from random each step), or auto (exact up to "
                            "exact_max_dim)")
    # the papers' "wmultiplier" for tau and nu. Measured necessary: gradient descent cannot move a LIF's time radius
    # below its leak (0.95 at tau = 20), and moves an LRU's max|lambda| (and an LSTM's cluster of forget gates) one
    # eigenvalue per step (docs/lsc.md)
    rescale_time: bool = option(True, "after each step, scale the fixed time constants of cells that allow it "
                                "(LIF/ALIF tau, LRU |lambda|, LSTM forget gate) by clip(target / time radius, "
                                "1 +- rescale_clip)")
    rescale_clip: float = option(0.15, "largest relative change per step of rescale_time and of "
                                 "rescale_weights=step, in (0, 1)")
    # issue 13: most of the radius gap at init is a scale; multiplying the weights that feed a transition by
    # target / radius moves its radius by that factor (exactly where the transition is linear in them). start+step
    # measured fewest steps to target on 2x128 nets, digits rows (off -> start+step: LSTM 117 -> 31, GRU 143 -> 43,
    # ALIF 217 -> 55, 5x64 GRU 142 -> 46; 2x128 LRU 400 (budget) -> 49 once its B = (b_re, b_im) is rescaled;
    # docs/lsc.md "Fewer steps")
    rescale_weights: RescaleWeights = option("start+step", "closed-form rescaling of the weights feeding each "
                                             "transition (first layer's / layer l's input weights, the readout, the "
                                             "recurrent weights of cells without a clock) by target / radius: off, "
                                             "start (rescale_rounds rounds before the gradient steps), step (after "
                                             "every step, clipped by rescale_clip) or start+step")
    rescale_rounds: int = option(3, "rescale_weights=start or start+step: measure -> scale rounds before the "
                                 "gradient steps")
    max_steps: int = option(400, "optimisation steps at most")
    time_limit: float | None = option(600.0, "seconds at most (None: no limit)")
    # 2e-2 rather than the papers' 7.2e-3: measured 1.75x fewer steps to target with the same optimiser (2x128 GRU
    # on digits rows, warm engine: 136 vs 238 steps, both converged); plain Adam at 2e-2 did not converge in 300
    # steps (time radius 0.74 vs target 0.5), so AdaBelief + Lookahead stays (docs/lsc.md)
    lr: float = option(2e-2, "learning rate")
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
    # the report's cost is eigvals of every measured Jacobian (most of a short LSC run's time on the demo's LSTM);
    # its per-sample spread is small (docs/lsc.md "The report's batch"), so a smaller batch may do for a summary
    report_batch: int | None = option(None, "examples of the first batch the before/after radii are measured on "
                                      "(None: the first batch_size)")
    exact_max_dim: int = option(256, "engine=auto: exact Jacobians up to this size, matrix-free above")
    mf_iters: int = option(64, "matrix-free engine: Arnoldi iterations at most (per direction)")
    mf_tol: float = option(1e-4, "matrix-free engine: relative change of the top Ritz value that counts as "
                           "converged")
    warm_cycles: int = option(1, "warm engine: Rayleigh-Ritz cycles per step and transition (cold starts use 3)")
    # 8 rather than warm_radius's 12: measured along LSC's trajectories (2x256 LSTM / GRU / ALIF, 40 steps) 17-35%
    # cheaper per step, radii 0.05-1% (median) and up to 9% (max) off exact instead of 0.01-0.7% and 4.5%, the same
    # steps to target, time / depth radii after within 0.017 (docs/lsc.md "Krylov blocks per LSC step")
    warm_blocks: int = option(8, "warm engine: Krylov blocks per cycle (of 4 vectors: 3 kept + 1 random)")
    warm_min_dim: int = option(128, "warm engine: the exact engine for Jacobians smaller than this (faster there, "
                               "measured)")
    # LSC can meet a radius by silencing a spiking layer (measured: 3-4 of 4 ALIF layers at rate 0 after LSC 0.5);
    # lsc/activity.py keeps every spiking layer's rate in this range (None: no guard); the same switch turns on the
    # gate-saturation guard of gated cells (LSTM / GRU / Li-GRU: lsc.activity.GATE_SATURATION_LIMIT)
    activity: tuple[float, float] | None = option((0.01, 0.9), "firing-rate range every spiking layer keeps through "
                                                  "LSC; also turns on the gated cells' gate-saturation guard (None: "
                                                  "neither guard)")
    # 0 by default: the per-step rate term also fires at a sequence's first steps (state near zero, no spikes), and
    # measured it kept a 2x64 LIF whose rates were in range from converging (1500 steps, decoder 0.91) where the
    # radius loss alone converged in 258; the refit after LSC is what keeps layers active (docs/lsc.md)
    activity_weight: float = option(0.0, "[spiking] weight of the activity guard's rate term inside the LSC loss "
                                    "(0: only the refit of out-of-range layers after LSC)")

    def __post_init__(self) -> None:
        validate_lsc_config(self)
        check_fields(self, prefix="LSC ")  # what is left: the kinds of the other fields


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def validate_lsc_config(cfg: LSCConfig) -> None:
    """Raise ``ValueError`` naming the field (as its ``--lsc-*`` option) and the allowed values; called on
    construction, so a bad value is refused before anything is written."""
    t = cfg.target
    if isinstance(t, str):
        with contextlib.suppress(ValueError):  # a number spelt as text ("0.8", from TOML or the command line)
            t = float(t)
    if isinstance(t, str):
        if t not in TARGET_NAMES:
            raise ValueError(f"LSC target (--lsc) must be a number > 0 (e.g. 1.0 or 0.5), {', '.join(TARGET_NAMES)} "
                             f"or a dict per family, got {t!r}")
    elif isinstance(t, dict):
        unknown = sorted(set(t) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown families in the LSC target dict {unknown}; choose from {', '.join(FAMILIES)}")
        bad = {k: v for k, v in t.items() if not _positive(v)}
        if bad:
            raise ValueError(f"LSC target per family must be positive finite numbers, got {bad}")
    elif not _positive(t):
        raise ValueError(f"LSC target (--lsc) must be a positive finite number (e.g. 1.0 or 0.5), "
                         f"{' or '.join(TARGET_NAMES)}, got {t!r}")
    bad_fams = sorted(set(cfg.families) - set(FAMILIES))
    if bad_fams or not cfg.families:
        raise ValueError(f"unknown LSC families {bad_fams or list(cfg.families)} ({_opt('families')}); choose some "
                         f"of {', '.join(FAMILIES)}")
    if not _positive(cfg.decoder_target):
        raise ValueError(f"{_opt('decoder_target')} must be a positive finite number, got {cfg.decoder_target!r}")
    for name, kind in (("measure", Measure), ("rectangular", Rectangular), ("engine", Engine),
                       ("optimizer", LSCOptimizer), ("rescale_weights", RescaleWeights)):
        allowed = typing.get_args(kind)
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{_opt(name)} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if not isinstance(cfg.warm_min_dim, int) or isinstance(cfg.warm_min_dim, bool) or cfg.warm_min_dim < 0:
        raise ValueError(f"{_opt('warm_min_dim')} must be an integer >= 0, got {cfg.warm_min_dim!r}")
    for name in ("max_steps", "patience", "batches", "exact_max_dim", "mf_iters", "warm_cycles", "warm_blocks",
                 "rescale_rounds"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{_opt(name)} must be an integer >= 1, got {v!r}")
    for name in ("batch_size", "layers_per_step", "measure_steps", "report_batch"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{_opt(name)} must be an integer >= 1 (or left out), got {v!r}")
    for name in ("lr", "tol", "mf_tol"):
        if not _positive(getattr(cfg, name)):
            raise ValueError(f"{_opt(name)} must be a positive finite number, got "
                             f"{getattr(cfg, name)!r}")
    if cfg.time_limit is not None and not _positive(cfg.time_limit):
        raise ValueError(f"{_opt('time_limit')} must be a positive number of seconds, got {cfg.time_limit!r}")
    wd = cfg.weight_decay
    if not isinstance(wd, (int, float)) or not math.isfinite(wd) or wd < 0:
        raise ValueError(f"{_opt('weight_decay')} must be a finite number >= 0, got {wd!r}")
    if not 0.0 < cfg.rescale_clip < 1.0:
        raise ValueError(f"{_opt('rescale_clip')} must be in (0, 1), got {cfg.rescale_clip}")
    if not 0.0 <= cfg.ema < 1.0:
        raise ValueError(f"{_opt('ema')} must be in [0, 1), got {cfg.ema}")
    check_activity(cfg.activity)
    if not isinstance(cfg.activity_weight, (int, float)) or not math.isfinite(cfg.activity_weight) or \
            cfg.activity_weight < 0:
        raise ValueError(f"{_opt('activity_weight')} must be a finite number >= 0, got {cfg.activity_weight!r}")


def check_activity(activity: object) -> None:
    """Raise ``ValueError`` unless ``activity`` is ``None`` or ``(low, high)`` with ``0 <= low < high <= 1``."""
    if activity is None:
        return
    try:
        low, high = (float(v) for v in activity)
    except (TypeError, ValueError):
        raise ValueError(f"LSC activity must be (low, high) firing rates like (0.01, 0.9), or None to turn the "
                         f"guard off; got {activity!r}") from None
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"LSC activity needs 0 <= low < high <= 1, got ({low}, {high})")


def _opt(name: str) -> str:
    """A field as the user meets it: its name and its command-line option."""
    return f"LSC {name} (--lsc-{name.replace('_', '-')})"
