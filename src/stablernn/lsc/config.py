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
    # "warm" (default): radii from bases kept across steps, refined by a few products, exact gradient at the pair
    # (measures.warm_radius); "exact" = eigvals of materialised Jacobians (the reference), "auto" = exact up to
    # exact_max_dim, else "matrix_free" (Arnoldi from random each step). Measured 4-10x cheaper per step than
    # exact at width 128-256 with the same trajectory of radii (docs/lsc.md)
    engine: Literal["auto", "exact", "matrix_free", "warm"] = "warm"
    # after each optimiser step, multiply the fixed time constants of every cell that has
    # ``scale_time_constants`` (LIF/ALIF τ, τ_a; LRU |λ|) by clip(target / time radius, 1 ± rescale_clip), the
    # papers' "wmultiplier" for τ and ν. Measured necessary: gradient descent cannot move a LIF's time radius below
    # its leak δ (0.95 at τ = 20), and moves an LRU's max|λ| one eigenvalue per step (docs/lsc.md)
    rescale_time: bool = True
    rescale_clip: float = 0.15
    max_steps: int = 400
    time_limit: float | None = 600.0  # seconds
    # 2e-2 rather than the papers' 7.2e-3: measured 1.75x fewer steps to target with the same optimiser (2x128 GRU
    # on digits rows, warm engine: 136 vs 238 steps, both converged); plain Adam at 2e-2 did not converge in 300
    # steps (time radius 0.74 vs target 0.5), so AdaBelief + Lookahead stays (docs/lsc.md)
    lr: float = 2e-2
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
    warm_cycles: int = 1  # warm engine: Rayleigh-Ritz cycles per step and transition (cold starts use 3)
    warm_blocks: int = 12  # warm engine: Krylov blocks per cycle (of 4 vectors: 3 kept + 1 random)
    warm_min_dim: int = 128  # warm engine: the exact one for Jacobians smaller than this (faster there, measured)
