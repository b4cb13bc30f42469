"""LSC pre-training: bring the radius of every one-step transition Jacobian to a target (arXiv:2308.12075; docs/lsc.md).

Why one module of ~710 lines: the report, the targets, the input checks and the step functions of one loop;
each function is short, and they share the run's state (:class:`_Run`).

Loss per optimisation step: the mean over the measured transitions (family, layer) of ``mean_b (ρ_b - target)^2``.
The radii come from ``LSCConfig.engine``; the default ``"warm"`` engine keeps one :class:`~.measures.WarmState` for
the whole run, so each (family, layer, sample slot) starts from the eigen/singular vectors of the previous step
(:func:`~.measures.warm_radius`).

- Recurrent stacks (``DeepRNN``, any stack of cells, a bare cell): each time step of a batch is one optimisation
  step; states start at zero at every batch and are carried *detached* between steps (one-step Jacobians,
  truncated BPTT of length 1). Families: time, depth, encoder, decoder.
- FFN: each batch is one step; encoder = first layer, depth = consecutive layer pairs, decoder = readout.
- Gradient pre-training (AdaBelief + Lookahead as in the papers' code) on every weight, plus one of the released
  code's heuristics ("wmultiplier", for τ and ν only; docs/lsc.md): after each step, a cell's fixed time constants are
  multiplied by ``clip(target / time radius, 1 ± rescale_clip)`` when the cell offers ``scale_time_constants``
  (``LSCConfig.rescale_time``). It is there because it was measured necessary: a LIF's time radius cannot go below
  its leak by any weight change, and an LRU's ``max |λ|`` moves one eigenvalue per gradient step. Weight shuffling
  is not used: gradient descent reaches the targets without it (docs/lsc.md).
- Closed-form weight rescaling (``LSCConfig.rescale_weights``, issue 13): the weight feeding each transition (input
  weights for encoder / depth, the readout for the decoder, the recurrent weights of cells without a clock for time;
  :func:`rescalable_weights`, found through the cells' capabilities) is multiplied by ``target / radius``, in rounds
  before the gradient steps and/or after each step; docs/lsc.md "Fewer steps".

Stopping: when the moving average (``config.ema``) of every (family, layer) radius is within ``tol`` of its target
for ``patience`` consecutive steps (with ``rectangular="subsample"`` the decoder is trained but, as in the papers'
code, left out of the test: its subsampled radius is too noisy to stop on); or
after ``max_steps`` / ``time_limit``. The best weights (smallest worst moving-average deviation) are restored at the
end. A non-finite loss or weight restores the best weights and stops, saying so in ``stop_reason``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..cells.base import HasInputWeight, HasInputWeightParts, MatrixRecurrent, ScalesTimeConstants, is_spiking
from ..data.base import TaskData
from ..io import atomic_write_json
from ..models import detach_states, eval_mode
from .activity import (
    activity_penalty,
    gate_saturation,
    guard_activity,
    refit_goal,
    refit_rates_,
    refittable,
    spiking_rates,
)
from .config import FAMILIES, Engine, LSCConfig, Measure
from .measures import Transition, WarmState, transition_measure, transition_measures
from .radii import batch_x, radii_over_time
from .transitions import as_stack, ffn_transitions, is_ffn, layer_counts, report_index, rnn_transitions


# --- report -------------------------------------------------------------------------------------------------------
@dataclass
class LSCReport:
    """What LSC pre-training did. JSON schema (``to_json``): ``{"target": {family: value}, "before": {family:
    [radius per layer]}, "after": {...}, "steps": int, "seconds": float, "stop_reason": str}``.

    ``history`` (not in the JSON) holds one row per step: loss and the moving-average radius of each family.
    """

    target: dict[str, float]
    before: dict[str, list[float]]
    after: dict[str, list[float]]
    steps: int
    seconds: float
    stop_reason: str
    history: list[dict[str, float]] = field(default_factory=list, repr=False)
    activity: dict[str, Any] | None = None  # issue 16: lsc.activity.ActivityReport.to_json() (spiking nets)

    def mean_after(self, family: str) -> float:
        """Mean over layers of the radius after pre-training."""
        return _nanmean(self.after[family])

    def mean_before(self, family: str) -> float:
        return _nanmean(self.before[family])

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready dict of the documented schema (``json.dumps`` it, or use :meth:`save`)."""
        out = {"target": dict(self.target), "before": {k: list(v) for k, v in self.before.items()},
               "after": {k: list(v) for k, v in self.after.items()}, "steps": int(self.steps),
               "seconds": float(self.seconds), "stop_reason": self.stop_reason}
        if self.activity is not None:
            out["activity"] = self.activity
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LSCReport:
        missing = {"target", "before", "after", "steps", "seconds", "stop_reason"} - set(d)
        if missing:
            raise ValueError(f"not an LSC report: missing keys {sorted(missing)}")
        return cls(dict(d["target"]), dict(d["before"]), dict(d["after"]), int(d["steps"]), float(d["seconds"]),
                   str(d["stop_reason"]), activity=d.get("activity"))

    def save(self, path: str | Path) -> Path:
        """Write the JSON atomically (:func:`stablernn.io.atomic_write_json`)."""
        atomic_write_json(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> LSCReport:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LSC report {path} does not exist")
        try:
            return cls.from_json(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed LSC report {path}: {e}") from None

    def table(self) -> str:
        """A printable before/after table: one row per family, radii per layer."""
        lines = [f"LSC: {self.steps} steps, {self.seconds:.1f} s, stop: {self.stop_reason}",
                 f"{'family':<8} {'target':>6} {'mean before':>11} {'mean after':>10}  after per layer"]
        for fam in self.after:
            per = " ".join(f"{v:.3f}" for v in self.after[fam])
            lines.append(f"{fam:<8} {self.target.get(fam, float('nan')):>6.3f} {self.mean_before(fam):>11.3f} "
                         f"{self.mean_after(fam):>10.3f}  [{per}]")
        if self.activity is not None:
            from .activity import ActivityReport

            lines.append(ActivityReport(**self.activity).summary())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _nanmean(v: list[float]) -> float:
    vals = [x for x in v if not math.isnan(x)]
    return sum(vals) / len(vals) if vals else float("nan")


# --- targets ------------------------------------------------------------------------------------------------------
def resolve_targets(model: Any, config: LSCConfig, seq_len: int | None = None) -> dict[str, float]:
    """Target radius of every family the model has among ``config.families``.

    ``"auto"``: 1 for an FFN or a single-layer recurrent net, 0.5 for a deep one (ρ_time + ρ_depth = 1 keeps the
    binomially many depth x time paths bounded). ``"unbalanced"`` (deep recurrent nets): depth and encoder
    ``L/(L+T)``, time ``T/(L+T)`` with ``T = seq_len``. A number: every family. A dict: per family, the missing
    ones from ``"auto"``. ``"theory"``: :func:`stablernn.lsc.theory.theory_targets` of L and T (1 for FFNs and single
    layers). The decoder gets ``config.decoder_target`` unless a dict names it.
    """
    counts = layer_counts(model)
    bad = set(config.families) - set(FAMILIES)
    if bad:
        raise ValueError(f"unknown LSC families {sorted(bad)}; choose from {', '.join(FAMILIES)}")
    fams = [f for f in config.families if counts.get(f, 0) > 0]
    if not fams:
        raise ValueError(f"the model has none of the LSC families {list(config.families)}")
    deep_rnn = not is_ffn(model) and counts["time"] > 1
    auto = 0.5 if deep_rnn else 1.0
    t = config.target
    if isinstance(t, str) and t not in ("auto", "unbalanced", "theory"):
        try:
            t = float(t)
        except ValueError:
            raise ValueError(f"LSC target must be a number, 'auto', 'unbalanced', 'theory' or a dict per family; "
                             f"got {t!r}") from None
    out: dict[str, float] = {}
    if isinstance(t, dict):
        unknown = set(t) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown families in the LSC target dict {sorted(unknown)}; choose from "
                             f"{', '.join(FAMILIES)}")
        out = {f: float(t.get(f, config.decoder_target if f == "decoder" else auto)) for f in fams}
    elif t == "auto":
        out = dict.fromkeys(fams, auto)
    elif t == "unbalanced":
        if not deep_rnn:
            raise ValueError("target='unbalanced' needs a deep recurrent net (depth >= 2); use 'auto' or a number")
        if not seq_len:
            raise ValueError("target='unbalanced' needs the sequence length T (depth L/(L+T), time T/(L+T))")
        L = counts["time"]
        out = {f: (seq_len / (L + seq_len) if f == "time" else L / (L + seq_len)) for f in fams}
    elif t == "theory":  # issue 16: the maximin split of rho_t + rho_l = 1 from L and T (lsc/theory.py)
        from .theory import theory_targets

        if deep_rnn and not seq_len:
            raise ValueError("target='theory' needs the sequence length T; pass batches shaped [batch, time, ...]")
        per = theory_targets(counts["time"], seq_len) if deep_rnn else {}  # one path per step: radius 1
        out = {f: per.get(f, 1.0) for f in fams}
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        if not t > 0:
            raise ValueError(f"LSC target must be > 0, got {t}")
        out = {f: float(t) for f in fams}
    else:
        raise ValueError(f"LSC target must be a number, 'auto', 'unbalanced', 'theory' or a dict per family; got {t!r}")
    if "decoder" in out and not isinstance(t, dict):
        out["decoder"] = float(config.decoder_target)
    return out


def make_config(config: LSCConfig | None = None, **overrides: Any) -> LSCConfig:
    """``config`` (default ``LSCConfig()``) with ``overrides`` applied; unknown names raise ``ValueError``."""
    config = config or LSCConfig()
    names = {f.name for f in dataclasses.fields(LSCConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown LSC option(s) {sorted(unknown)}; allowed: {', '.join(sorted(names))}")
    cfg = dataclasses.replace(config, **overrides)
    check_config(cfg)
    return cfg


def check_config(cfg: LSCConfig) -> None:
    """Raise ``ValueError`` naming the bad field (checked again in case the config was changed after it was made)."""
    cfg.__post_init__()


def make_lsc_optimizer(params: Iterable[nn.Parameter], config: LSCConfig) -> torch.optim.Optimizer:
    """AdaBelief (rectified, ε = 1e-14, decoupled decay ``w -= lr·wd·w``) + Lookahead(6, 0.5), as the papers' tfa
    settings (docs/lsc.md, "Choices that differ from the papers' code"), or AdamW."""
    from ..optim import make_optimizer

    return make_optimizer(params, config.optimizer, config.lr, config.weight_decay)


# --- the loop -----------------------------------------------------------------------------------------------------
def _prepare_batches(batches: Any, config: LSCConfig, device: Any) -> list[Tensor]:
    if isinstance(batches, Tensor):
        batches = [batches]
    if isinstance(batches, TaskData):
        batches = batches.train
    out: list[Tensor] = []
    for b in batches:
        x = batch_x(b)
        if config.batch_size is not None:
            x = x[: config.batch_size]
        out.append(x.to(device) if device is not None else x)
        if len(out) >= config.batches:
            break
    if not out:
        raise ValueError("lsc_pretrain got no batches; pass a loader, a list of (x, y) batches or a tensor x")
    return out


def check_lsc_inputs(xs: list[Tensor], ffn: bool = False, where: str = "lsc_pretrain") -> None:
    """Refuse inputs LSC cannot measure, with one line saying what is wrong: an empty batch, a zero-length
    sequence (``[B, 0, F]``), or NaN/inf values (they would give NaN radii or a failing eigen/SVD solver).
    ``xs``: ``[B, T, F]`` (``[B, T]`` token ids; ``[B, F]`` for an FFN)."""
    for i, x in enumerate(xs):
        at = f"{where}: batch {i + 1}"
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError(f"{at} is empty (shape {list(x.shape)}); pass batches with at least one example")
        if not ffn and x.dim() >= 2 and x.shape[1] == 0:
            raise ValueError(f"{at} has zero time steps (shape {list(x.shape)}); sequences are "
                             "[batch, time, features] with time >= 1")
        if x.numel() == 0:
            raise ValueError(f"{at} has no values (shape {list(x.shape)}); every dimension must be >= 1")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{at} holds NaN or inf inputs; clean the data (e.g. torch.nan_to_num) first")


def _device(model: nn.Module) -> Any:
    ref = next(iter(model.parameters()), None)
    return ref.device if ref is not None else None


def _params(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("lsc_pretrain: the model has no trainable parameters")
    return params


class _Tracker:
    """Moving averages per (family, layer), the stopping count and the best weights."""

    def __init__(self, targets: dict[str, float], counts: dict[str, int], ema: float, stop_on_decoder: bool):
        self.targets, self.ema = targets, ema
        self.avg: dict[tuple[str, int], float] = {}
        stop_fams = [f for f in targets if f != "decoder" or stop_on_decoder] or list(targets)
        self.keys = [(f, i) for f in stop_fams for i in range(counts[f])]
        self.good = 0
        self.best_score = math.inf
        self.best_state: dict[str, Tensor] | None = None
        self.best_step = -1

    def update(self, family: str, index: int, value: float) -> None:
        k = (family, index)
        self.avg[k] = value if k not in self.avg else self.ema * self.avg[k] + (1 - self.ema) * value

    def score(self) -> float:
        if any(k not in self.avg for k in self.keys):
            return math.inf
        return max(abs(self.avg[k] - self.targets[k[0]]) for k in self.keys)

    def family_means(self) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for (f, _), v in self.avg.items():
            out.setdefault(f, []).append(v)
        return {f: sum(v) / len(v) for f, v in out.items()}


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class _Run:
    """Everything one LSC run carries from step to step."""

    model: nn.Module
    cfg: LSCConfig
    xs: list[Tensor]
    targets: dict[str, float]
    counts: dict[str, int]
    gen: torch.Generator
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    tracker: _Tracker
    stack: Any  # the stack view of a recurrent model; None for an FFN
    warm: WarmState = field(default_factory=WarmState)
    history: list[dict[str, float]] = field(default_factory=list)
    step: int = 0
    failures: int = 0
    # recurrent nets: where in the batches the next step starts, and the carried (detached) states
    batch_i: int = 0
    t_i: int = 0
    states: list[Any] | None = None
    steps_x: tuple[Tensor, ...] = ()
    # spiking layers' rates before LSC when the activity guard is on (lsc/activity.py), else None
    rates_before: list[float | None] | None = None
    # closed-form weight rescaling: the product of the scales applied so far per (family, layer), and the keys the
    # activity guard froze (a rescale that took a spiking layer out of its rate range is undone and not retried)
    rescale_total: dict[tuple[str, int], float] = field(default_factory=dict)
    rescale_frozen: set[tuple[str, int]] = field(default_factory=set)
    # spiking layers whose bias a start round refitted (START_REFIT), in order
    refit_start: list[int] = field(default_factory=list)

    def measure_kw(self) -> dict[str, Any]:
        c = self.cfg
        return {"exact_max_dim": c.exact_max_dim, "max_iter": c.mf_iters, "tol": c.mf_tol,
                "rectangular": c.rectangular}


def _ffn_step(run: _Run) -> tuple[list[Transition], list[Any] | None]:
    """Transitions of one FFN step: the step-th batch, at most ``layers_per_step`` random depth layers."""
    cfg, depth = run.cfg, run.counts["depth"]
    x = run.xs[run.step % len(run.xs)]
    layers = None
    if cfg.layers_per_step is not None and depth > cfg.layers_per_step:
        layers = sorted((torch.randperm(depth, generator=run.gen)[: cfg.layers_per_step] + 1).tolist())
    return ffn_transitions(run.model, x, list(run.targets), layers=layers), None


def _rnn_step(run: _Run) -> tuple[list[Transition], list[Any] | None]:
    """Transitions of the next time step of the current batch (states from zero at each new batch)."""
    if run.states is None or run.t_i >= len(run.steps_x):
        if run.states is not None:
            run.batch_i = (run.batch_i + 1) % len(run.xs)
        x = run.xs[run.batch_i]
        run.steps_x, run.t_i = x.unbind(1), 0
        run.states = run.stack.initial_states(x.shape[0], device=x.device, dtype=run.params[0].dtype)
    res = rnn_transitions(run.model, run.steps_x[run.t_i], run.states, list(run.targets))
    run.t_i += 1
    trs = res.transitions
    if run.cfg.layers_per_step is not None:
        trs = _subset_layers(trs, run.cfg.layers_per_step, run.gen)
    return trs, res.states


def _measure(run: _Run, trs: list[Transition]) -> list[tuple[Transition, Tensor]]:
    """Each transition with its per-sample radii ``[B]`` (differentiable)."""
    c = run.cfg
    # all transitions at once: the warm engine measures those of one size in one Krylov call (measures.warm_radii)
    radii = transition_measures(trs, c.measure, c.engine, generator=run.gen, state=run.warm,
                                warm_cycles=c.warm_cycles, warm_blocks=c.warm_blocks, warm_min_dim=c.warm_min_dim,
                                **run.measure_kw())
    return list(zip(trs, radii, strict=True))


def _descend(run: _Run, terms: list[tuple[Transition, Tensor]], radii: list[float], new_states: list[Any] | None
             ) -> Tensor | str:
    """One optimiser step on the LSC loss (then the time-constant and weight rescaling by ``radii``, the terms'
    batch means): the loss, or the stop reason when it is not finite. With the activity guard on, a rate term keeps
    spiking layers active (LSC can otherwise meet a radius by silencing a layer; lsc/activity.py)."""
    loss = torch.stack([((r - run.targets[tr.family]) ** 2).mean() for tr, r in terms]).mean()
    if run.rates_before is not None and new_states is not None and run.cfg.activity_weight > 0:
        rate_term = activity_penalty(run.model, new_states, run.cfg.activity)
        loss = loss + run.cfg.activity_weight * rate_term if rate_term is not None else loss
    if not torch.isfinite(loss):
        return f"non-finite LSC loss at step {run.step}; restored the best weights (step {run.tracker.best_step})"
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    if run.cfg.rescale_time and run.stack is not None:
        _rescale_time_constants(run.stack, [tr for tr, _ in terms], radii, run.targets.get("time"),
                                run.cfg.rescale_clip, run.opt)
    if run.cfg.rescale_weights in ("step", "start+step") and run.stack is not None:
        clip = run.cfg.rescale_clip
        _rescale_round(run, {(tr.family, tr.layer): r for (tr, _), r in zip(terms, radii, strict=True)},
                       1.0 - clip, 1.0 + clip, skip_spiking_inputs=run.rates_before is not None)
    return loss


def _track(run: _Run, terms: list[tuple[Transition, Tensor]], radii: list[float]) -> float:
    """The moving averages with this step's radii, and the best weights: those the radii were measured on, i.e.
    before the step's update (METHOD.md §1.4; snapshotting after it kept weights one gradient step and one rescaling
    away from their score: a 2x128 LRU's depth radius 0.557 after LSC with its moving average on target). Returns
    the score (the moving averages' largest distance from their targets, which the stopping test uses).

    The weights are scored by the larger of that and this step's own radii's largest distance: the moving average
    lags the weights, and alone it kept weights whose own radii were off. Measured: a 2x128 LRU's depth radius
    oscillated around its target with a growing amplitude (0.50, 0.49, 0.51, 0.48, 0.44 in its last steps) while
    its moving average stayed at 0.50, and LSC returned the last weights, whose depth radius is 0.44. The step's
    radii alone (METHOD.md §1.4's criterion) would favour a lucky time step of input-dependent nets."""
    tracker = run.tracker
    now: dict[tuple[str, int], float] = {}
    for (tr, _), radius in zip(terms, radii, strict=True):
        key = (tr.family, report_index(run.model, tr.family, tr.layer))
        tracker.update(*key, radius)
        now[key] = radius
    score = tracker.score()
    mine = max([abs(v - tracker.targets[k[0]]) for k, v in now.items() if k in tracker.keys], default=0.0)
    if max(score, mine) < tracker.best_score:
        tracker.best_score, tracker.best_step = max(score, mine), run.step
        tracker.best_state = _snapshot(run.model)
    return score


def _bookkeep(run: _Run, score: float, loss: Tensor) -> bool:
    """The stopping count and history after a step; True when the stopping test holds."""
    tracker = run.tracker
    tracker.good = tracker.good + 1 if score < run.cfg.tol else 0
    run.history.append({"step": run.step, "loss": float(loss.detach()), **tracker.family_means()})
    return tracker.good >= run.cfg.patience


def _one_step(run: _Run) -> str | None:
    """One LSC step; the stop reason when the run must stop, else None."""
    cfg = run.cfg
    trs, new_states = _ffn_step(run) if run.stack is None else _rnn_step(run)
    try:
        terms = _measure(run, trs)
    except torch.linalg.LinAlgError:
        run.failures += 1
        if run.failures > cfg.patience:
            return f"linear-algebra failures in {run.failures} steps; restored the best weights"
        run.states = detach_states(new_states) if new_states is not None else None
        return None
    radii = [float(r.detach().mean()) for _, r in terms]  # batch means of this step's measured radii
    score = _track(run, terms, radii)
    loss = _descend(run, terms, radii, new_states)
    if isinstance(loss, str):
        return loss
    run.step += 1
    if not all(torch.isfinite(p).all() for p in run.params):
        return f"non-finite weights after step {run.step}; restored the best weights (step {run.tracker.best_step})"
    if new_states is not None:
        run.states = detach_states(new_states)
    if _bookkeep(run, score, loss):
        return f"converged: every moving-average radius within {cfg.tol:g} of its target for {cfg.patience} steps"
    return None


def _start(model: nn.Module, xs: list[Tensor], cfg: LSCConfig) -> _Run:
    ffn = is_ffn(model)
    seq_len = None if ffn else int(xs[0].shape[1]) if xs[0].dim() >= 2 else None
    targets = resolve_targets(model, cfg, seq_len)
    counts = layer_counts(model)
    params = _params(model)
    tracker = _Tracker(targets, counts, cfg.ema, stop_on_decoder=cfg.rectangular == "norm")
    return _Run(model, cfg, xs, targets, counts, torch.Generator().manual_seed(cfg.seed), params,
                make_lsc_optimizer(params, cfg), tracker, None if ffn else as_stack(model))


# The before/after report with the warm engine: one WarmState carried across the measured time steps, Krylov spaces
# twice LSC's (24 blocks), and the exact engine below REPORT_WARM_MIN_DIM. Below 512 the exact engine, whose Jacobians
# come from the cells' closed forms without gradient (Transition.jacobian), was cheaper than the warm report on every
# demo net and is the reference itself: measured on 2x128 nets, digits rows, 8 samples x 8 steps
# (experiments/lsc_report_cost.py): LSTM 3.1 / 1.9 s (init / after LSC) vs warm 3.9 / 3.2 s, ALIF 2.7 / 2.1 vs 3.7 /
# 4.7 s, GRU (exact either way) 0.8-0.9 s; the warm report was within 0.25% of it. eigvals of the 8 x 256 x 256
# time Jacobians is most of what is left (~100 ms per transition and step). Not measured between 256 and 512.
REPORT_WARM_BLOCKS = 24
REPORT_WARM_MIN_DIM = 512


def _radii_means(run: _Run, x: Tensor, state: WarmState | None = None) -> dict[str, list[float]]:
    """Mean radii per family and layer over ``measure_steps`` time steps of the first ``report_batch`` examples of
    ``x`` (the report's before / after).

    With the warm engine, ``state`` (a fresh one when None; the run's own bases for "after") is carried from each
    measured step to the next, with ``REPORT_WARM_BLOCKS`` blocks per cycle; other engines measure as configured."""
    c = run.cfg
    warm = {"state": state if state is not None else WarmState(), "warm_blocks": REPORT_WARM_BLOCKS,
            "warm_cycles": c.warm_cycles, "warm_min_dim": max(c.warm_min_dim, REPORT_WARM_MIN_DIM)} \
        if c.engine == "warm" else {}
    x = x[: c.report_batch] if c.report_batch is not None else x
    trace = radii_over_time(run.model, x, families=list(run.targets), measure=c.measure, engine=c.engine,
                            steps=c.measure_steps, generator=run.gen, **run.measure_kw(), **warm)
    return trace.mean()


def lsc_pretrain(model: nn.Module, batches: Any, config: LSCConfig | None = None, **overrides: Any) -> LSCReport:
    """Pre-train ``model`` so every one-step transition Jacobian has the target radius; returns an
    :class:`LSCReport`. The model's weights are changed in place (to the best weights found).

    Args:
        model: a ``DeepRNN`` (any cells, a user's own included), a bare cell, an ``FFN``, or a user's own model
            (torch.nn, snnTorch, Norse, a ``StepSpec``): it is adapted (:func:`stablernn.adapters.adapt`) and trained
            in place.
        batches: a loader / list of ``(x, y)`` batches or of tensors ``x [B, T, F]`` (``[B, T]`` ids; ``[B, F]``
            for an FFN), or one tensor. The first ``config.batches`` are used, cycled until a stop.
        config: :class:`LSCConfig`; ``overrides`` replace its fields (``lsc_pretrain(m, data, target=0.5)``).
    """
    cfg = make_config(config, **overrides)
    t0 = time.perf_counter()
    if not is_ffn(model):
        model = as_stack(model)  # raises a clear TypeError for unsupported models; a view shares the user's weights
    xs = _prepare_batches(batches, cfg, _device(model))
    check_lsc_inputs(xs, is_ffn(model))
    run = _start(model, xs, cfg)
    before = _radii_means(run, xs[0])
    if cfg.activity is not None and not is_ffn(model):
        run.rates_before = spiking_rates(model, xs)
    gates_before = gate_saturation(model, xs) if run.rates_before is not None else None  # gated layers (activity.py)
    if cfg.rescale_weights in ("start", "start+step") and run.stack is not None:
        _rescale_start(run, before)
    run.tracker.best_state, run.tracker.best_score, run.tracker.best_step = _snapshot(model), math.inf, 0
    stop_reason = f"max_steps ({cfg.max_steps}) reached"
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_steps, desc="LSC", disable=not cfg.progress, leave=False)
    try:
        with eval_mode(model):
            while run.step < cfg.max_steps:
                if cfg.time_limit is not None and time.perf_counter() - t0 > cfg.time_limit:
                    stop_reason = f"time_limit ({cfg.time_limit:g} s) reached"
                    break
                done_before = run.step
                reason = _one_step(run)
                if run.step > done_before:
                    bar.update(1)
                    if cfg.progress and run.step % 5 == 0 and run.history:
                        row = run.history[-1]
                        bar.set_postfix(loss=f"{row['loss']:.4f}",
                                        **{f: f"{v:.3f}" for f, v in row.items() if f not in ("step", "loss")})
                if reason is not None:
                    stop_reason = reason
                    break
    finally:
        bar.close()
    if run.tracker.best_state is not None:
        model.load_state_dict(run.tracker.best_state)
    # no spiking layer leaves LSC silent or saturated (the best weights may be a silent state)
    guard = (guard_activity(model, xs, cfg.activity, run.rates_before, gates_before=gates_before)
             if run.rates_before is not None else None)
    if guard is not None and guard.refit and cfg.rescale_weights != "off":
        _rescale_after_refit(run)
        guard.final = spiking_rates(model, xs)
    after = _radii_means(run, xs[0], run.warm)
    return LSCReport(run.targets, before, after, run.step, round(time.perf_counter() - t0, 3), stop_reason,
                     run.history, activity=guard.to_json() if guard is not None else None)


def _rescale_time_constants(stack: Any, transitions: list[Transition], radii: list[float], target: float | None,
                            clip: float, optimizer: torch.optim.Optimizer | None = None) -> None:
    """τ → m·τ with ``m = clip(target / radius, 1 - clip, 1 + clip)`` for each measured time transition (``radii``:
    its batch-mean radius) whose cell has ``scale_time_constants`` (a radius above target shortens the memory, one
    below lengthens it). A Lookahead ``optimizer``'s slow copy of each parameter the scaling moved (the LRU's ``ν``,
    the LSTM's forget-gate bias, a learnable τ) is moved by the same amount: else every sync (each 6 steps) pulls
    it half-way back (measured on a 2x128 LRU: 49-50 steps to target with this, 58-59 without; docs/lsc.md)."""
    if target is None:
        return
    for tr, radius in zip(transitions, radii, strict=True):
        cell = stack.cells[tr.layer]
        if tr.family == "time" and isinstance(cell, ScalesTimeConstants) and math.isfinite(radius) and radius > 0:
            slow = _slow_copies(cell, optimizer)
            before = [p.detach().clone() for p, _ in slow]
            cell.scale_time_constants(min(max(target / radius, 1.0 - clip), 1.0 + clip), target)
            with torch.no_grad():
                for (p, s), b in zip(slow, before, strict=True):
                    s.add_(p.detach() - b)


def _slow_copies(module: nn.Module, optimizer: torch.optim.Optimizer | None) -> list[tuple[Tensor, Tensor]]:
    """``(parameter, Lookahead slow copy)`` for the module's parameters that the optimizer keeps a slow copy of."""
    pairs = [(p, _slow_copy(optimizer, p)) for p in module.parameters()]
    return [(p, s) for p, s in pairs if s is not None]


def _slow_copy(optimizer: torch.optim.Optimizer | None, p: Tensor) -> Tensor | None:
    """A Lookahead optimizer's slow copy of ``p`` (``state[p]["slow_params"]``: stablernn.optim.Lookahead), or None."""
    slow = optimizer.state.get(p, {}).get("slow_params") if optimizer is not None else None
    return slow if isinstance(slow, Tensor) else None


# --- closed-form weight rescaling (issue 13, item 3; docs/lsc.md "Fewer steps") -------------------------------------
# Most of the radius gap at init is a scale: a transition's Jacobian is (nonlinearity's derivative) x (the weight that
# feeds it), so multiplying that weight by m multiplies the radius by m where the derivative does not move (exactly for
# the decoder, a LIF/ALIF's encoder and depth, any linear cell). Start rounds may move a weight by up to this factor
# either way per round; every-step rescaling is clipped by LSCConfig.rescale_clip like the time constants.
RESCALE_START_RANGE = 4.0
# the product of all scales of one weight stays within [1/RESCALE_TOTAL_RANGE, RESCALE_TOTAL_RANGE]: a transition
# whose radius does not follow its weight's scale (a layer norm after the product) is not scaled away to 0 or infinity
RESCALE_TOTAL_RANGE = 10.0
# the start rounds also scale the time constants of cells with a clock (when rescale_time is on), by
# clip(target / time radius) within [1/RESCALE_START_TIME_RANGE, RESCALE_START_TIME_RANGE] (1: they do not)
RESCALE_START_TIME_RANGE = 2.0
# time steps of the first batch measured by each start round after the first (the first reuses the "before" radii)
RESCALE_MEASURE_STEPS = 4


# a weight, or a weight kept in parts that are scaled together (the LRU's complex B as b_re, b_im)
Rescalable = Tensor | tuple[Tensor, ...]


def rescalable_weights(model: Any) -> dict[tuple[str, int], Rescalable]:
    """The weight whose scale sets each transition's radius, keyed ``(family, stack layer)``: encoder -> the first
    cell's ``weight_ih``, depth ``l`` -> cell ``l``'s ``weight_ih`` (:class:`~stablernn.cells.base.HasInputWeight`;
    a tuple of parts scaled by one factor for :class:`~stablernn.cells.base.HasInputWeightParts`, the LRU's
    ``(b_re, b_im)``), time ``l`` -> cell ``l``'s ``weight_hh`` (:class:`~stablernn.cells.base.MatrixRecurrent`)
    unless the cell has its own clock (``scale_time_constants``: its leak is rescaled instead), decoder -> a linear
    readout's weight. Only plain parameters (a parametrised or frozen weight is left out); FFNs and cells without
    these capabilities give nothing to rescale."""
    if is_ffn(model):
        return {}
    stack = as_stack(model)
    out: dict[tuple[str, int], Rescalable] = {}

    def ok(w: Any) -> bool:
        return isinstance(w, nn.Parameter) and w.requires_grad

    for l, cell in enumerate(stack.cells):
        key = ("encoder" if l == 0 else "depth", l)
        if isinstance(cell, HasInputWeight) and ok(cell.weight_ih):
            out[key] = cell.weight_ih
        elif isinstance(cell, HasInputWeightParts) and callable(cell.input_weight_parts) and \
                (parts := tuple(cell.input_weight_parts())) and all(map(ok, parts)):
            out[key] = parts
        if isinstance(cell, MatrixRecurrent) and not isinstance(cell, ScalesTimeConstants) and ok(cell.weight_hh):
            out[("time", l)] = cell.weight_hh
    readout = getattr(stack, "readout", None)
    if isinstance(readout, nn.Linear) and ok(readout.weight):
        out[("decoder", len(stack.cells) - 1)] = readout.weight
    return out


@torch.no_grad()
def rescale_weights_(model: Any, radii: dict[tuple[str, int], float], targets: dict[str, float], *,
                     low: float = 1.0 / RESCALE_START_RANGE, high: float = RESCALE_START_RANGE,
                     optimizer: torch.optim.Optimizer | None = None, skip: set[tuple[str, int]] | None = None
                     ) -> dict[tuple[str, int], float]:
    """One closed-form round: multiply each :func:`rescalable_weights` entry whose transition has a measured radius
    (``radii[(family, stack layer)]``, a batch mean) by ``m = clip(target / radius, low, high)``, in place; returns
    the scales applied. A Lookahead optimizer's slow copy of the weight is scaled too (else its next sync would
    pull the weight half-way back)."""
    weights = rescalable_weights(model)
    scales = {key: min(max(targets[key[0]] / r, low), high) for key in weights
              if not (skip and key in skip) and (r := radii.get(key)) is not None and key[0] in targets
              and math.isfinite(r) and r > 0}
    return _scale_weights_(weights, scales, optimizer)


@torch.no_grad()
def _scale_weights_(weights: dict[tuple[str, int], Rescalable], scales: dict[tuple[str, int], float],
                    optimizer: torch.optim.Optimizer | None) -> dict[tuple[str, int], float]:
    """``weights[key] *= scales[key]`` in place for the keys of both (every part of a tuple), and a Lookahead
    optimizer's slow copy of each weight with it (else its next sync would pull the weight half-way back); returns
    the scales applied."""
    done: dict[tuple[str, int], float] = {}
    for key, m in scales.items():
        w = weights.get(key)
        if w is None:
            continue
        for part in _parts(w):
            part.mul_(m)
            slow = _slow_copy(optimizer, part)
            if slow is not None:
                slow.mul_(m)
        done[key] = m
    return done


def _parts(w: Rescalable) -> tuple[Tensor, ...]:
    return w if isinstance(w, tuple) else (w,)


def _rescale_round(run: _Run, radii: dict[tuple[str, int], float], low: float, high: float,
                   skip_spiking_inputs: bool = False) -> dict[tuple[str, int], float]:
    """:func:`rescale_weights_` within the run's bounds (each weight's total scale within ``RESCALE_TOTAL_RANGE``,
    frozen keys skipped; with ``skip_spiking_inputs`` the input weights of spiking layers are left alone)."""
    scales: dict[tuple[str, int], float] = {}
    for key, r in radii.items():
        total = run.rescale_total.get(key, 1.0)
        if key in run.rescale_frozen or (skip_spiking_inputs and key[0] in ("encoder", "depth")
                                         and is_spiking(run.stack.cells[key[1]])):
            continue
        if key[0] in run.targets and math.isfinite(r) and r > 0:
            scales[key] = min(max(run.targets[key[0]] / r, low, 1.0 / (RESCALE_TOTAL_RANGE * total)),
                              high, RESCALE_TOTAL_RANGE / total)
    done = _scale_weights_(rescalable_weights(run.model), scales, run.opt)
    for key, m in done.items():
        run.rescale_total[key] = run.rescale_total.get(key, 1.0) * m
    return done


def _keyed(means: dict[str, list[float]], n_layers: int) -> dict[tuple[str, int], float]:
    """Report lists (depth starts at layer 1, the decoder is the last layer's) -> ``{(family, stack layer): r}``."""
    first = {"depth": 1, "decoder": n_layers - 1}
    return {(f, first.get(f, 0) + i): r for f, v in means.items() for i, r in enumerate(v)}


def _rescale_start(run: _Run, before: dict[str, list[float]]) -> None:
    """``rescale_rounds`` rounds of measure -> scale before the gradient steps (the first on the report's "before"
    radii; the others on ``RESCALE_MEASURE_STEPS`` time steps of the first batch). With the activity guard on, a
    scale that takes a spiking layer's rate out of range is undone for that layer's input weight, which is then
    frozen (LSC must not meet a radius by silencing a layer; lsc/activity.py)."""
    L = len(run.stack.cells)
    radii = _keyed(before, L)
    weights = rescalable_weights(run.model)
    for rnd in range(run.cfg.rescale_rounds):
        if rnd > 0:
            radii = _round_radii(run)
        done = _rescale_round(run, radii, 1.0 / RESCALE_START_RANGE, RESCALE_START_RANGE)
        if run.cfg.rescale_time and RESCALE_START_TIME_RANGE > 1.0:
            _start_time_constants(run, radii)
        if run.rates_before is not None and any(r is not None for r in run.rates_before):
            _undo_silencing(run, done, weights)
        if all(abs(m - 1.0) < 0.02 for m in done.values()):
            break
    # a fresh optimiser: its state (Lookahead's slow weights, the moments) starts from the rescaled weights
    run.opt = make_lsc_optimizer(run.params, run.cfg)


def _round_radii(run: _Run) -> dict[tuple[str, int], float]:
    """The radii one rescaling round acts on: ``RESCALE_MEASURE_STEPS`` time steps of the first batch, measured as
    LSC's own steps measure (its engine and Krylov budget; the warm engine continues from the run's bases, which
    the next gradient steps then start from) rather than as the report (a fresh state, twice the blocks)."""
    c = run.cfg
    warm = {"state": run.warm, "warm_blocks": c.warm_blocks, "warm_cycles": c.warm_cycles,
            "warm_min_dim": c.warm_min_dim} if c.engine == "warm" else {}
    trace = radii_over_time(run.model, run.xs[0], families=list(run.targets), measure=c.measure, engine=c.engine,
                            steps=RESCALE_MEASURE_STEPS, generator=run.gen, **run.measure_kw(), **warm)
    return _keyed(trace.mean(), len(run.stack.cells))


def _rescale_after_refit(run: _Run) -> None:
    """One closed-form round after the activity guard refitted a spiking layer's bias: the refit moves the surrogate
    derivatives, hence the radii (measured: a 2x128 ALIF's depth radius 0.50 -> 0.54-0.62), and a weight scale puts
    them back without a gradient step. A scale that takes a layer's rate out of range is undone as in the start
    rounds."""
    radii = _round_radii(run)
    run.rescale_frozen.clear()
    done = _rescale_round(run, radii, 1.0 / RESCALE_START_RANGE, RESCALE_START_RANGE)
    _undo_silencing(run, done, rescalable_weights(run.model))


def _start_time_constants(run: _Run, radii: dict[tuple[str, int], float]) -> None:
    """One start round's time-constant scale for each cell with a clock (``scale_time_constants``); spiking cells
    are left to the loop's rescaling when the activity guard is on (measured: shortening an ALIF's τ in the same round
    as its input scale silenced its first layer, the guard froze its encoder, and LSC took 216 steps, not 55)."""
    target = run.targets.get("time")
    for l, cell in enumerate(run.stack.cells):
        r = radii.get(("time", l))
        if target is None or r is None or not isinstance(cell, ScalesTimeConstants) or not math.isfinite(r) or r <= 0:
            continue
        if is_spiking(cell) and run.rates_before is not None:
            continue  # a shorter leak lowers the firing too: with the input scale it silenced a 2x128 ALIF's layer 0
        cell.scale_time_constants(min(max(target / r, 1.0 / RESCALE_START_TIME_RANGE), RESCALE_START_TIME_RANGE),
                                  target)


# In the start rounds, a spiking layer that a scale of its input weights took out of its rate range first gets its
# bias refitted into range (lsc/activity.py, as the guard does after LSC), keeping the scale; only when that fails is
# the scale undone and the layer's input weight frozen. Measured on a 2x256 ALIF (digits rows): the encoder's scale
# 0.32 silenced layer 0 (rate 0.001), the undo froze its input weights, and the gradient alone took the encoder
# radius from 1.55 to 0.5 in 177 steps (docs/lsc.md "Spiking layers in the start rounds"). False: undo and freeze
START_REFIT = True


def _undo_silencing(run: _Run, done: dict[tuple[str, int], float],
                    weights: dict[tuple[str, int], Rescalable]) -> None:
    """For every spiking layer this round's input-weight scale took outside the activity range, lowest first (a
    layer pushed out of range from below may recover once its lower layer does): refit its bias into range
    (``START_REFIT``), else undo the scale and freeze it."""
    low, high = run.cfg.activity
    rates = spiking_rates(run.model, run.xs)
    for l in range(len(run.stack.cells)):
        key = ("encoder" if l == 0 else "depth", l)
        if rates[l] is None or low <= rates[l] <= high or key not in done:
            continue
        if START_REFIT and refittable(run.stack.cells[l]):
            with torch.enable_grad():
                refit_rates_(run.model, run.xs, [l], refit_goal(low, high))
            rates = spiking_rates(run.model, run.xs)
            if low <= rates[l] <= high:
                run.refit_start.append(l)
                continue
        with torch.no_grad():
            for part in _parts(weights[key]):
                part.div_(done[key])
        run.rescale_total[key] = run.rescale_total.get(key, 1.0) / done[key]
        run.rescale_frozen.add(key)
        rates = spiking_rates(run.model, run.xs)


def _subset_layers(trs: list[Transition], k: int, gen: torch.Generator) -> list[Transition]:
    """At most ``k`` random transitions of each family (the rest still run forward)."""
    out = []
    for fam in FAMILIES:
        these = [t for t in trs if t.family == fam]
        if len(these) > k:
            idx = torch.randperm(len(these), generator=gen)[:k].tolist()
            these = [these[i] for i in sorted(idx)]
        out.extend(these)
    return out


def lsc_loss(model: nn.Module, x_t: Tensor, states: list[Any], targets: dict[str, float], *,
             measure: Measure = "radius", engine: Engine = "auto", generator: torch.Generator | None = None
             ) -> tuple[Tensor, list[Any]]:
    """The LSC loss of one time step of a stack (for users who write their own loop): ``(loss, new states)``;
    ``targets`` per family (e.g. from :func:`resolve_targets`). Call it in eval mode (dropout off)."""
    res = rnn_transitions(model, x_t, states, list(targets))
    rs = [((transition_measure(tr, measure, engine, generator=generator) - targets[tr.family]) ** 2).mean()
          for tr in res.transitions]
    return torch.stack(rs).mean(), res.states


__all__ = ["LSCReport", "check_config", "check_lsc_inputs", "lsc_loss", "lsc_pretrain", "make_config",
           "make_lsc_optimizer", "rescalable_weights", "rescale_weights_", "resolve_targets"]
