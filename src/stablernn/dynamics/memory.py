"""Linear memory capacity of any network, and how memory and nonlinear capacity scale with the readout size.

Memory capacity (Jaeger 2001; the definition of ReservoirPy's ``observables.memory_capacity``): drive the network
with i.i.d. input ``u(t)`` uniform in [-1, 1], fit one ridge readout per lag ``k`` on the network's features to
recall ``u(t - k)`` on the first part of the stream, and score it on held-out later time:

    MC_k = corr^2(y_k(t), u(t - k))  on held-out time,      MC = sum_{k = min_lag .. k_max} MC_k,   0 <= MC_k <= 1.

The ridge penalty (relative to the mean feature variance) is chosen per readout from ``RIDGE_GRID`` on the last
fifth of each stream's training time, unless given: a fixed tiny penalty (ReservoirPy's default is 0) overfits
spiking features whose few rare events the readout can memorise, and this choice never sees the test time.

ReservoirPy counts lags from 1 (``min_lag=1``, the default here), with the state after reading ``u(t)``; a delay
line of ``N`` units storing ``u(t) .. u(t-N+1)`` then has ``MC = N - 1``, and ``N`` with ``min_lag=0``.

How the scalar ``u`` enters: a cell gets ``u(t) * w`` with ``w`` a fixed random sign vector of its input width
(times ``input_scale``); a DeepRNN-like stack gets ``u(t) * w`` over its raw input features, through its own encoder.
Features are the stability states of all layers concatenated (``features="state"``: h, (h, c), (v, a), ...) or the
layer outputs (``"output"``: what a downstream readout sees, spikes for spiking layers). Streams run in parallel
as a batch; the first ``warmup`` steps of each are dropped.

Readout-size scaling (:func:`readout_scaling`): random subsets of ``n`` features, several draws per ``n``; for each,
MC, the information-processing capacity per degree (``capacity.py``) and the mean pairwise ``|corr|`` of the chosen
features. All readouts of all subsets come from one pass over the samples (centred Gram matrices).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..fields import check_fields, option, require
from ..models import eval_mode
from .capacity import (
    CapacityResult,
    CapacityTargets,
    Gram,
    capacity_from_targets,
    capacity_targets,
    check_drive,
    gram,
    information_processing_capacity,
    mean_abs_correlation,
    ridge_readout,
    squared_correlation,
)
from .lyapunov import LyapunovResult, as_system, is_stack

FeatureKind = Literal["state", "output"]


# --- driving a network -------------------------------------------------------------------------------------------
def uniform_drive(n_steps: int, streams: int = 1, *, seed: int = 0) -> Tensor:
    """I.i.d. input ``u [streams, n_steps]`` uniform in [-1, 1] (float64), seeded."""
    if n_steps < 1 or streams < 1:
        raise ValueError(f"n_steps and streams must be >= 1, got {n_steps}, {streams}")
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(streams, n_steps, generator=gen, dtype=torch.float64) * 2.0 - 1.0


def input_vector(net: nn.Module, *, seed: int = 0, scale: float = 1.0) -> Tensor:
    """The fixed random sign vector ``w [F] * scale`` through which a scalar input reaches ``net`` (``F``: the
    cell's or the stack's raw input width). Signs, not Gaussians, so no input feature is accidentally near 0."""
    if is_stack(net) and isinstance(net.encoder, nn.Embedding):
        raise ValueError("memory capacity needs a dense-input network; this one reads token ids (embedding "
                         "encoder). Measure a copy built with encoder='linear', or pass features you collected")
    F = int(net.input_size)
    gen = torch.Generator().manual_seed(seed + 7919)  # offset: independent of the drive's stream with the same seed
    return (torch.randint(0, 2, (F,), generator=gen).double() * 2.0 - 1.0) * scale


@torch.no_grad()
def collect_features(net: nn.Module, u: Tensor, *, features: FeatureKind = "state", input_scale: float = 1.0,
                     seed: int = 0) -> Tensor:
    """Drive ``net`` (a cell or a DeepRNN-like stack) with ``u [S, T]`` and return its features ``[S, T, N]``
    (float64) after each step: ``"state"`` = all layers' stability states, ``"output"`` = all layers' outputs."""
    if u.dim() != 2:
        raise ValueError(f"u must be [streams, time], got {list(u.shape)}")
    if features not in ("state", "output"):
        raise ValueError(f"features must be 'state' or 'output', got {features!r}")
    system = as_system(net)
    stack = system.module
    p = next(stack.parameters(), None)
    dtype = p.dtype if p is not None else torch.get_default_dtype()
    device = p.device if p is not None else None
    w = input_vector(stack, seed=seed, scale=input_scale).to(device=device, dtype=dtype)
    x = u.to(device=device, dtype=dtype)[..., None] * w  # [S, T, F]
    full = system.initial(u.shape[0], device, dtype)
    rows = []
    with eval_mode(stack):
        for x_t in x.unbind(1):
            step = stack.step(x_t, full, decode=False)
            full = step.states
            rows.append(system.flatten(full) if features == "state" else torch.cat(step.outputs, dim=-1))
    return torch.stack(rows, 1).double().cpu()


# --- memory capacity ---------------------------------------------------------------------------------------------
RIDGE_GRID: tuple[float, ...] = tuple(10.0 ** e for e in range(-8, 0))  # relative penalties tried when ridge=None


@dataclass
class MemorySplit:
    """Grams of features against the lagged inputs ``u(t - k)``, ``k`` in ``lags``: ``train`` fits the readouts,
    ``test`` scores them; ``fit`` / ``val`` (the first 80% / last 20% of each stream's training part) choose the
    ridge penalty when it is not given."""

    train: Gram
    test: Gram
    fit: Gram
    val: Gram
    lags: np.ndarray


def memory_split(features: Tensor, u: Tensor, k_max: int, *, min_lag: int = 1, warmup: int | None = None,
                 test_fraction: float = 0.2) -> MemorySplit:
    """Split every stream in time after ``warmup`` (default ``k_max``) steps: the first ``1 - test_fraction`` of the
    rest trains, the last ``test_fraction`` tests (ReservoirPy's split, per stream)."""
    check_drive(features, u)
    if k_max < 1 or min_lag < 0 or min_lag > k_max:
        raise ValueError(f"need k_max >= 1 and 0 <= min_lag <= k_max, got k_max={k_max}, min_lag={min_lag}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    warmup = k_max if warmup is None else int(warmup)
    if warmup < k_max:
        raise ValueError(f"warmup ({warmup}) must be >= k_max ({k_max}) so every lag is defined")
    T = u.shape[1]
    usable = T - warmup
    n_test = round(usable * test_fraction)
    n_val = round((usable - n_test) * 0.2)
    if n_test < 2 or n_val < 2 or usable - n_test - n_val < 2:
        raise ValueError(f"streams of {T} steps leave {usable} after warmup {warmup}: too short to split; use "
                         f"longer streams (n_steps) or more of them")
    cut = T - n_test
    lags = np.arange(min_lag, k_max + 1)

    def part(a: int, b: int) -> Gram:
        X = features[:, a:b].reshape(-1, features.shape[-1])
        Y = torch.stack([u[:, a - k: b - k] for k in lags], dim=-1).reshape(-1, len(lags))
        return gram(X, Y)

    return MemorySplit(part(warmup, cut), part(cut, T), part(warmup, cut - n_val), part(cut - n_val, cut), lags)


@dataclass
class MemoryCapacityResult:
    """``total`` = sum of ``per_lag [len(lags)]`` (each MC_k in [0, 1]) over ``lags``; the relative ``ridge`` used;
    sample counts."""

    total: float
    per_lag: np.ndarray
    lags: np.ndarray
    n_features: int
    n_train: int
    n_test: int
    ridge: float = 0.0


def choose_ridge(split: MemorySplit, idx: Tensor | None = None, grid: Sequence[float] = RIDGE_GRID) -> float:
    """The relative ridge penalty from ``grid`` whose readouts, fitted on ``split.fit``, recall best (summed squared
    correlation over lags) on ``split.val``; the test part is never looked at."""
    best, best_score = grid[0], -1.0
    for r in grid:
        score = float(squared_correlation(split.val, ridge_readout(split.fit, idx, r), idx).sum())
        if score > best_score + 1e-9:
            best, best_score = r, score
    return float(best)


def memory_capacity_from_split(split: MemorySplit, idx: Tensor | None = None, *,
                               ridge: float | None = None) -> MemoryCapacityResult:
    """MC of the features ``idx`` (all if None) from precomputed Grams; ``ridge=None`` chooses the penalty on the
    validation part (:func:`choose_ridge`)."""
    ridge = choose_ridge(split, idx) if ridge is None else float(ridge)
    W = ridge_readout(split.train, idx, ridge)
    per_lag = squared_correlation(split.test, W, idx).numpy()
    n = split.train.n_features if idx is None else len(idx)
    return MemoryCapacityResult(float(per_lag.sum()), per_lag, split.lags, n, split.train.n, split.test.n, ridge)


def memory_capacity_from_features(features: Tensor, u: Tensor, k_max: int, *, min_lag: int = 1,
                                  warmup: int | None = None, test_fraction: float = 0.2,
                                  ridge: float | None = None) -> MemoryCapacityResult:
    """MC of collected ``features [S, T, N]`` driven by ``u [S, T]`` (see the module docstring)."""
    split = memory_split(features, u, k_max, min_lag=min_lag, warmup=warmup, test_fraction=test_fraction)
    return memory_capacity_from_split(split, ridge=ridge)


def memory_capacity(net: nn.Module, k_max: int = 100, *, n_steps: int | None = None, streams: int = 8,
                    min_lag: int = 1, warmup: int | None = None, test_fraction: float = 0.2,
                    ridge: float | None = None,
                    features: FeatureKind = "state", input_scale: float = 1.0, seed: int = 0
                    ) -> MemoryCapacityResult:
    """Linear memory capacity of a cell or DeepRNN-like stack (ReservoirPy's definition; module docstring).

    Args:
        k_max: the longest lag.
        n_steps: steps per stream (default ``warmup + 2500``); ``streams`` run in parallel.
        min_lag: first lag counted (1 as ReservoirPy; 0 adds the current input).
        warmup: steps dropped at the start of each stream (default ``k_max``).
        test_fraction: the held-out final part of each stream.
        ridge: relative ridge penalty (see ``capacity.ridge_readout``); None chooses it from ``RIDGE_GRID`` on a
            validation part of the training time (spiking features with rare events overfit a tiny penalty).
        features: ``"state"`` (stability states) or ``"output"`` (layer outputs).
        input_scale: scale of the input vector (``u * w``, ``w`` random signs).
        seed: seeds the drive and the input vector.
    """
    warmup = k_max if warmup is None else warmup
    n_steps = warmup + 2500 if n_steps is None else n_steps
    u = uniform_drive(n_steps, streams, seed=seed)
    X = collect_features(net, u, features=features, input_scale=input_scale, seed=seed)
    return memory_capacity_from_features(X, u, k_max, min_lag=min_lag, warmup=warmup, test_fraction=test_fraction,
                                         ridge=ridge)


def network_capacity(net: nn.Module, *, max_degree: int = 3, window: int | dict[int, int] = 10,
                     n_steps: int = 2600, streams: int = 8, features: FeatureKind = "state",
                     input_scale: float = 1.0, seed: int = 0, ridge: float = 1e-8) -> CapacityResult:
    """Information-processing capacity (``capacity.py``) of a cell or DeepRNN-like stack, driven as for MC."""
    u = uniform_drive(n_steps, streams, seed=seed)
    X = collect_features(net, u, features=features, input_scale=input_scale, seed=seed)
    return capacity_from_targets(capacity_targets(X, u, max_degree=max_degree, window=window), ridge=ridge)


# --- readout-size scaling ----------------------------------------------------------------------------------------
@dataclass
class ReadoutScaling:
    """MC, capacity per degree and mean pairwise ``|corr|`` against the number of readout features.

    Arrays are ``[len(sizes), draws]``; ``capacity[d]`` is the thresholded capacity of total degree ``d``.
    """

    sizes: np.ndarray
    mc: np.ndarray
    correlation: np.ndarray
    capacity: dict[int, np.ndarray] = field(default_factory=dict)
    n_features: int = 0

    def table(self) -> list[dict[str, float]]:
        """One row per size: means and standard deviations over draws."""
        rows = []
        for i, n in enumerate(self.sizes):
            row = {"n": int(n), "mc": float(self.mc[i].mean()), "mc_sd": float(self.mc[i].std()),
                   "corr": float(np.nanmean(self.correlation[i]))}
            for d, c in self.capacity.items():
                row[f"ipc{d}"] = float(c[i].mean())
                row[f"ipc{d}_sd"] = float(c[i].std())
            rows.append(row)
        return rows


def readout_scaling(features: Tensor, u: Tensor, sizes: Sequence[int] | None = None, *, draws: int = 5,
                    k_max: int = 100, max_degree: int = 3, window: int | dict[int, int] = 10,
                    warmup: int | None = None, test_fraction: float = 0.2, ridge: float | None = None,
                    capacity_ridge: float = 1e-8, seed: int = 0) -> ReadoutScaling:
    """MC and capacity of random subsets of ``features [S, T, N]`` (driven by ``u [S, T]``) of each size in
    ``sizes`` (default: powers of 2 up to ``N``, and ``N``), ``draws`` subsets per size (one when ``n == N``).

    ``max_degree=0`` skips the capacity. Correlations are measured on the training part of the streams.
    """
    N = features.shape[-1]
    if sizes is None:
        sizes = sorted({*(2 ** i for i in range(1, int(np.log2(N)) + 1)), N})
    sizes = [int(n) for n in sizes]
    if any(n < 1 or n > N for n in sizes):
        raise ValueError(f"readout sizes must be in [1, {N}] (the number of features), got {sizes}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    split = memory_split(features, u, k_max, warmup=warmup, test_fraction=test_fraction)
    targets: CapacityTargets | None = None
    if max_degree > 0:
        targets = capacity_targets(features, u, max_degree=max_degree, window=window)
    gen = torch.Generator().manual_seed(seed)
    mc = np.zeros((len(sizes), draws))
    corr = np.full((len(sizes), draws), np.nan)
    caps = {d: np.zeros((len(sizes), draws)) for d in range(1, max_degree + 1)}
    for i, n in enumerate(sizes):
        for j in range(draws):
            if n == N and j > 0:  # the full set has one draw: copy it
                mc[i, j], corr[i, j] = mc[i, 0], corr[i, 0]
                for d in caps:
                    caps[d][i, j] = caps[d][i, 0]
                continue
            idx = torch.randperm(N, generator=gen)[:n].sort().values
            mc[i, j] = memory_capacity_from_split(split, idx, ridge=ridge).total
            corr[i, j] = mean_abs_correlation(split.train, idx)
            if targets is not None:
                by_deg = capacity_from_targets(targets, idx, ridge=capacity_ridge).by_degree()
                for d in caps:
                    caps[d][i, j] = by_deg.get(d, 0.0)
    return ReadoutScaling(np.array(sizes), mc, corr, caps, N)


# --- everything at once ------------------------------------------------------------------------------------------
def default_window(degree: int) -> int:
    """Default delay window of the capacity targets of one degree (keeps each degree to a few hundred targets)."""
    return {1: 30, 2: 15, 3: 8}.get(degree, 5)


@dataclass
class DynamicsConfig:
    """What :func:`dynamics_profile` measures (docs/dynamics.md); a count of 0 skips that part. Checked on
    construction (``ValueError`` naming the field)."""

    lyapunov: int = option(10, "number of Lyapunov exponents (0: skip)")
    transient: int | None = option(None, "steps dropped before the exponents are counted (default: a quarter of "
                                   "the stream)")
    memory: int = option(100, "longest memory-capacity lag k_max (0: skip MC)")
    ipc_degree: int = option(3, "highest degree of the nonlinear capacity (0: skip)")
    ipc_window: int | None = option(None, "delay window of the capacity targets (default: 30, 15, 8 for degrees 1, "
                                    "2, 3, then 5)")
    n_steps: int = option(2600, "steps per stream of the uniform drive for MC and capacity")
    streams: int = option(8, "parallel streams of the drive")
    sizes: tuple[int, ...] | None = option(None, "readout sizes of the scaling (default: powers of 2 up to all "
                                           "features)")
    draws: int = option(5, "random readout subsets per size (0: skip the scaling)")
    features: FeatureKind = option("state", "readout features: state (h, (h, c), (v, a)) or output (layer "
                                   "outputs, spikes for spiking layers)")
    input_scale: float = option(1.0, "amplitude of the uniform drive")
    ridge: float | None = option(None, "relative ridge penalty of the MC readouts (default: chosen on a "
                                 "validation part of the training time)")
    seed: int = option(0, "seeds the drives and the readout subsets")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("lyapunov", "memory", "ipc_degree", "draws"):
            v = getattr(self, name)
            require(v >= 0, f"{name} must be >= 0, got {v}")
        require(self.transient is None or self.transient >= 0, f"transient must be >= 0 or None, "
                f"got {self.transient}")
        require(self.ipc_window is None or self.ipc_window >= 1, f"ipc_window must be >= 1 or "
                f"None, got {self.ipc_window}")
        require(self.streams >= 1 and self.n_steps >= 2, f"need streams >= 1 and n_steps >= 2, got "
                f"{self.streams} and {self.n_steps}")
        require(self.ridge is None or self.ridge >= 0, f"ridge must be >= 0 or None, got "
                f"{self.ridge}")

    def windows(self) -> dict[int, int]:
        return {d: (self.ipc_window or default_window(d)) for d in range(1, self.ipc_degree + 1)}


@dataclass
class DynamicsProfile:
    """Lyapunov spectrum, memory capacity, capacity profile and readout-size scaling of one network."""

    lyapunov: LyapunovResult | None = None
    memory: MemoryCapacityResult | None = None
    capacity: CapacityResult | None = None
    scaling: ReadoutScaling | None = None
    n_features: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: exponents, MC and its per-lag curve, capacity per degree, the scaling table."""
        out: dict[str, Any] = {"n_features": self.n_features, "seconds": round(self.seconds, 2)}
        if self.lyapunov is not None:
            ex = self.lyapunov.exponents.detach().double()
            out["lyapunov"] = [float(v) for v in ex]
            out["lyapunov_sd"] = [float(v) for v in self.lyapunov.spread.detach()]
            out["top_lyapunov"] = float(ex[0])
        if self.memory is not None:
            out["mc"] = self.memory.total
            out["mc_per_lag"] = [float(v) for v in self.memory.per_lag]
            out["mc_ridge"] = self.memory.ridge
        if self.capacity is not None:
            out["ipc"] = {str(d): v for d, v in self.capacity.by_degree().items()}
            out["ipc_total"] = self.capacity.total
            out["ipc_threshold"] = self.capacity.threshold
        if self.scaling is not None:
            out["scaling"] = self.scaling.table()
        return out


def dynamics_profile(net: nn.Module, lyapunov_inputs: Tensor | None = None,
                     config: DynamicsConfig | None = None) -> DynamicsProfile:
    """Measure everything :class:`DynamicsConfig` asks for on a cell or DeepRNN-like stack.

    ``lyapunov_inputs [B, T, F]``: the input stream for the spectrum (e.g. task data laid end to end; needed when
    ``config.lyapunov > 0``). MC and capacity use their own i.i.d. uniform drive.
    """
    import time

    from .lyapunov import lyapunov_spectrum

    cfg = config or DynamicsConfig()
    t0 = time.perf_counter()
    prof = DynamicsProfile()
    if cfg.lyapunov > 0:
        if lyapunov_inputs is None:
            raise ValueError("config.lyapunov > 0 needs lyapunov_inputs [batch, time, features]")
        d = as_system(net).state_size
        with torch.no_grad():
            prof.lyapunov = lyapunov_spectrum(net, lyapunov_inputs, min(cfg.lyapunov, d),
                                              transient=cfg.transient, seed=cfg.seed)
    if cfg.memory > 0 or cfg.ipc_degree > 0:
        k_max = max(cfg.memory, 1)
        u = uniform_drive(cfg.n_steps, cfg.streams, seed=cfg.seed)
        X = collect_features(net, u, features=cfg.features, input_scale=cfg.input_scale, seed=cfg.seed)
        prof.n_features = int(X.shape[-1])
        if cfg.memory > 0:
            prof.memory = memory_capacity_from_features(X, u, k_max, ridge=cfg.ridge)
        if cfg.ipc_degree > 0:
            prof.capacity = information_processing_capacity(X, u, max_degree=cfg.ipc_degree,
                                                             window=cfg.windows())
        if cfg.draws > 0:
            prof.scaling = readout_scaling(X, u, cfg.sizes, draws=cfg.draws, k_max=k_max,
                                           max_degree=cfg.ipc_degree, window=cfg.windows(), ridge=cfg.ridge,
                                           seed=cfg.seed)
    prof.seconds = time.perf_counter() - t0
    return prof


__all__ = [
    "RIDGE_GRID",
    "DynamicsConfig",
    "DynamicsProfile",
    "MemoryCapacityResult",
    "MemorySplit",
    "ReadoutScaling",
    "choose_ridge",
    "collect_features",
    "default_window",
    "dynamics_profile",
    "input_vector",
    "memory_capacity",
    "memory_capacity_from_features",
    "memory_capacity_from_split",
    "memory_split",
    "network_capacity",
    "readout_scaling",
    "uniform_drive",
]
