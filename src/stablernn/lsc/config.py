"""Typed options of LSC pre-training (spec §1.4), kept apart from the loop so configs import it cheaply."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Literal

Family = Literal["time", "depth", "encoder", "decoder"]
FAMILIES: tuple[str, ...] = ("time", "depth", "encoder", "decoder")


@dataclass
class LSCConfig:
    """LSC pre-training options.

    ``target``: a number for every family, ``"auto"`` (1 for feed-forward and single-layer nets, 0.5 for deep
    recurrent nets), ``"unbalanced"`` (depth L/(L+T), time T/(L+T)), or a dict per family (missing ones: auto).
    """

    target: float | str | dict[str, float] = "auto"
    families: tuple[str, ...] = FAMILIES
    decoder_target: float = 1.0  # the papers' code always used 1 for the decoder
    # max |eig| (square-subsampled), top singular value, or a random-probe lower bound of it
    measure: Literal["radius", "norm", "probe"] = "radius"
    # how a non-square Jacobian (encoder, decoder, a depth step between unequal widths) is measured: "subsample" =
    # the radius of a random square submatrix (the papers' code; noisy), "norm" = its top singular value
    # (default "norm": measured to converge where the subsampled radius barely moves; docs/lsc.md)
    rectangular: Literal["subsample", "norm"] = "norm"
    engine: Literal["auto", "exact", "matrix_free"] = "auto"
    # after each optimiser step, multiply the fixed time constants of every cell that has
    # ``scale_time_constants`` (LIF/ALIF τ, τ_a; LRU |λ|) by clip(target / time radius, 1 ± rescale_clip), the
    # papers' "wmultiplier" for τ and ν. Measured necessary: gradient descent cannot move a LIF's time radius below
    # its leak δ (0.95 at τ = 20), and moves an LRU's max|λ| one eigenvalue per step (docs/lsc.md)
    rescale_time: bool = True
    rescale_clip: float = 0.15
    max_steps: int = 400
    time_limit: float | None = 600.0  # seconds
    lr: float = 7.2e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adabelief_lookahead", "adabelief", "adamw"] = "adabelief_lookahead"
    tol: float = 0.05  # early stop when every family's moving-average radius is within tol of its target ...
    patience: int = 20  # ... for this many consecutive steps
    batches: int = 2  # batches walked through (each time step is one optimisation step), cycled until a stop
    # use only the first batch_size examples of each batch (None: all). 8 measured as good as 32 (same trajectory
    # of radii on a 2x64 GRU) at a quarter of the cost; 4 was noisier (131 vs 81 steps to converge)
    batch_size: int | None = 8
    seed: int = 0
    progress: bool = True
    ema: float = 0.9  # moving-average factor of the per-(family, layer) radii used for stopping and best weights
    layers_per_step: int | None = None  # measure at most this many random layers per family each step (None: all)
    measure_steps: int | None = 16  # time steps (evenly spread over the first batch) for the before/after radii
    exact_max_dim: int = 256  # engine="auto": exact Jacobians up to this size, matrix-free above
    mf_iters: int = 64  # matrix-free engine: Arnoldi iterations at most (per direction)
    mf_tol: float = 1e-4  # matrix-free engine: relative change of the top Ritz value that counts as converged

    def __post_init__(self) -> None:
        validate_lsc_config(self)


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
        if t not in ("auto", "unbalanced"):
            raise ValueError(f"LSC target (--lsc) must be a number > 0 (e.g. 1.0 or 0.5), auto, unbalanced or a "
                             f"dict per family, got {t!r}")
    elif isinstance(t, dict):
        unknown = sorted(set(t) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown families in the LSC target dict {unknown}; choose from {', '.join(FAMILIES)}")
        bad = {k: v for k, v in t.items() if not _positive(v)}
        if bad:
            raise ValueError(f"LSC target per family must be positive finite numbers, got {bad}")
    elif not _positive(t):
        raise ValueError(f"LSC target (--lsc) must be a positive finite number (e.g. 1.0 or 0.5), auto or "
                         f"unbalanced, got {t!r}")
    bad_fams = sorted(set(cfg.families) - set(FAMILIES))
    if bad_fams or not cfg.families:
        raise ValueError(f"unknown LSC families {bad_fams or list(cfg.families)} ({_opt('families')}); choose some "
                         f"of {', '.join(FAMILIES)}")
    if not _positive(cfg.decoder_target):
        raise ValueError(f"{_opt('decoder_target')} must be a positive finite number, got {cfg.decoder_target!r}")
    for name, allowed in (("measure", ("radius", "norm", "probe")), ("rectangular", ("subsample", "norm")),
                          ("engine", ("auto", "exact", "matrix_free")),
                          ("optimizer", ("adabelief_lookahead", "adabelief", "adamw"))):
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{_opt(name)} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    for name in ("max_steps", "patience", "batches", "exact_max_dim", "mf_iters"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{_opt(name)} must be an integer >= 1, got {v!r}")
    for name in ("batch_size", "layers_per_step", "measure_steps"):
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


def _opt(name: str) -> str:
    """A field as the user meets it: its name and its command-line option."""
    return f"LSC {name} (--lsc-{name.replace('_', '-')})"
