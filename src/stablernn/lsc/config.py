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
    recurrent nets), ``"unbalanced"`` (depth L/(L+T), time T/(L+T)), ``"theory"`` (the split of ρ_t + ρ_l = 1
    chosen from L and T by ``lsc.theory.theory_targets``), or a dict per family (missing ones: auto).

    ``activity``: the firing-rate range ``(low, high)`` every spiking layer must leave LSC in (``lsc.activity``);
    a layer outside it gets its bias refitted into the range, and the report says so. ``None`` turns the guard off.
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
    # issue 16: firing-rate range spiking layers must leave LSC in (LSC can meet a radius by silencing a layer)
    activity: tuple[float, float] | None = (0.01, 0.9)
