"""LSC pre-training: bring the radius of every one-step transition Jacobian to a target (spec §1.1, §1.4, §1.6).

Loss per optimisation step: the mean over the measured transitions (family, layer) of ``mean_b (ρ_b - target)^2``.

- Recurrent stacks (``DeepRNN``, any stack of cells, a bare cell): each time step of a batch is one optimisation
  step; states start at zero at every batch and are carried *detached* between steps (one-step Jacobians,
  truncated BPTT of length 1). Families: time, depth, encoder, decoder.
- FFN: each batch is one step; encoder = first layer, depth = consecutive layer pairs, decoder = readout.
- Gradient pre-training (AdaBelief + Lookahead as in the papers' code) on every weight, plus one of the released
  code's heuristics (spec §1.4 "wmultiplier", for τ and ν only): after each step, a cell's fixed time constants are
  multiplied by ``clip(target / time radius, 1 ± rescale_clip)`` when the cell offers ``scale_time_constants``
  (``LSCConfig.rescale_time``). It is there because it was measured necessary: a LIF's time radius cannot go below
  its leak by any weight change, and an LRU's ``max |λ|`` moves one eigenvalue per gradient step. Weight shuffling
  is not used: gradient descent reaches the targets without it (docs/lsc.md).

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
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..models import detach_states, eval_mode
from .activity import activity_penalty, check_activity, guard_activity, spiking_rates
from .config import FAMILIES, LSCConfig
from .measures import Transition, transition_measure
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
        """Write the JSON atomically (a temporary file in the same folder, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_json(), f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

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
    """Raise ``ValueError`` naming the bad field."""
    if cfg.measure not in ("radius", "norm", "probe"):
        raise ValueError(f"LSC measure must be radius, norm or probe, got {cfg.measure!r}")
    if cfg.rectangular not in ("subsample", "norm"):
        raise ValueError(f"LSC rectangular must be subsample or norm, got {cfg.rectangular!r}")
    if cfg.engine not in ("auto", "exact", "matrix_free"):
        raise ValueError(f"LSC engine must be auto, exact or matrix_free, got {cfg.engine!r}")
    if cfg.optimizer not in ("adabelief_lookahead", "adabelief", "adamw"):
        raise ValueError(f"LSC optimizer must be adabelief_lookahead, adabelief or adamw, got {cfg.optimizer!r}")
    for name in ("max_steps", "patience", "batches"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"LSC {name} must be a positive integer, got {v!r}")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ValueError(f"LSC batch_size must be >= 1 or None, got {cfg.batch_size}")
    if cfg.lr <= 0 or cfg.tol <= 0:
        raise ValueError("LSC lr and tol must be > 0")
    if not 0.0 < cfg.rescale_clip < 1.0:
        raise ValueError(f"LSC rescale_clip must be in (0, 1), got {cfg.rescale_clip}")
    if not 0.0 <= cfg.ema < 1.0:
        raise ValueError(f"LSC ema must be in [0, 1), got {cfg.ema}")
    if cfg.layers_per_step is not None and cfg.layers_per_step < 1:
        raise ValueError(f"LSC layers_per_step must be >= 1 or None, got {cfg.layers_per_step}")
    check_activity(cfg.activity)  # issue 16: the activity guard's range


def make_lsc_optimizer(params: Iterable[nn.Parameter], config: LSCConfig) -> torch.optim.Optimizer:
    """AdaBelief (rectified, ε = 1e-14, decoupled decay ``w -= lr·wd·w``) + Lookahead(6, 0.5), as the papers' tfa
    settings (spec §1.4, §7 item 28), or AdamW."""
    from ..optim import make_optimizer

    return make_optimizer(params, config.optimizer, config.lr, config.weight_decay)


# --- the loop -----------------------------------------------------------------------------------------------------
def _prepare_batches(batches: Any, config: LSCConfig, device: Any) -> list[Tensor]:
    if isinstance(batches, Tensor):
        batches = [batches]
    if hasattr(batches, "train") and hasattr(batches, "info"):  # a TaskData
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


def _device(model: Any) -> Any:
    ref = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return ref.device if ref is not None else None


def _params(model: Any) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad] if hasattr(model, "parameters") else []
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


def lsc_pretrain(model: nn.Module, batches: Any, config: LSCConfig | None = None, **overrides: Any) -> LSCReport:
    """Pre-train ``model`` so every one-step transition Jacobian has the target radius; returns an
    :class:`LSCReport`. The model's weights are changed in place (to the best weights found).

    Args:
        model: a ``DeepRNN`` (any cells, a user's own included), a bare cell, or an ``FFN``.
        batches: a loader / list of ``(x, y)`` batches or of tensors ``x [B, T, F]`` (``[B, T]`` ids; ``[B, F]``
            for an FFN), or one tensor. The first ``config.batches`` are used, cycled until a stop.
        config: :class:`LSCConfig`; ``overrides`` replace its fields (``lsc_pretrain(m, data, target=0.5)``).
    """
    cfg = make_config(config, **overrides)
    t0 = time.perf_counter()
    device = _device(model)
    xs = _prepare_batches(batches, cfg, device)
    ffn = is_ffn(model)
    if not ffn:
        as_stack(model)  # raises a clear TypeError for unsupported models
    seq_len = None if ffn else int(xs[0].shape[1]) if xs[0].dim() >= 2 else None
    targets = resolve_targets(model, cfg, seq_len)
    fams = list(targets)
    counts = layer_counts(model)
    gen = torch.Generator().manual_seed(cfg.seed)
    engine_kw = {"exact_max_dim": cfg.exact_max_dim, "max_iter": cfg.mf_iters, "tol": cfg.mf_tol,
                 "rectangular": cfg.rectangular}

    def measure_all(x: Tensor) -> dict[str, list[float]]:
        trace = radii_over_time(model, x, families=fams, measure=cfg.measure, engine=cfg.engine,
                                steps=cfg.measure_steps, generator=gen, **engine_kw)
        return trace.mean()

    before = measure_all(xs[0])
    rates_before = spiking_rates(model, xs) if cfg.activity is not None and not ffn else None  # issue 16 guard
    params = _params(model)
    opt = make_lsc_optimizer(params, cfg)
    tracker = _Tracker(targets, counts, cfg.ema, stop_on_decoder=cfg.rectangular == "norm")
    tracker.best_state, tracker.best_score, tracker.best_step = _snapshot(model), math.inf, 0
    history: list[dict[str, float]] = []
    stop_reason = f"max_steps ({cfg.max_steps}) reached"
    failures = 0
    step = 0
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_steps, desc="LSC", disable=not cfg.progress, leave=False)
    stack = None if ffn else as_stack(model)
    batch_i, t_i, states, steps_x = 0, 0, None, None
    try:
        with eval_mode(model):
            while step < cfg.max_steps:
                if cfg.time_limit is not None and time.perf_counter() - t0 > cfg.time_limit:
                    stop_reason = f"time_limit ({cfg.time_limit:g} s) reached"
                    break
                # --- transitions of this step
                if ffn:
                    x = xs[step % len(xs)]
                    layers = None
                    if cfg.layers_per_step is not None and counts["depth"] > cfg.layers_per_step:
                        perm = torch.randperm(counts["depth"], generator=gen)[: cfg.layers_per_step] + 1
                        layers = sorted(perm.tolist())
                    trs = ffn_transitions(model, x, fams, layers=layers)
                    new_states = None
                else:
                    if states is None or t_i >= len(steps_x):
                        if states is not None:
                            batch_i = (batch_i + 1) % len(xs)
                        x = xs[batch_i]
                        steps_x = x.unbind(1)
                        t_i = 0
                        states = stack.initial_states(x.shape[0], device=x.device,
                                                      dtype=params[0].dtype)
                    res = rnn_transitions(model, steps_x[t_i], states, fams)
                    trs, new_states = res.transitions, res.states
                    t_i += 1
                    if cfg.layers_per_step is not None:
                        trs = _subset_layers(trs, cfg.layers_per_step, gen)
                # --- loss
                try:
                    terms = [(tr, transition_measure(tr, cfg.measure, cfg.engine, generator=gen, **engine_kw))
                             for tr in trs]
                except torch.linalg.LinAlgError:
                    failures += 1
                    if failures > cfg.patience:
                        stop_reason = f"linear-algebra failures in {failures} steps; restored the best weights"
                        break
                    states = detach_states(new_states) if new_states is not None else None
                    continue
                loss = torch.stack([((r - targets[tr.family]) ** 2).mean() for tr, r in terms]).mean()
                if rates_before is not None and new_states is not None:  # issue 16: keep spiking layers active
                    rate_term = activity_penalty(model, new_states, cfg.activity)
                    loss = loss + rate_term if rate_term is not None else loss
                if not torch.isfinite(loss):
                    stop_reason = (f"non-finite LSC loss at step {step}; restored the best weights "
                                   f"(step {tracker.best_step})")
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                radii = [float(r.detach().mean()) for _, r in terms]  # batch means of this step's measured radii
                if cfg.rescale_time and stack is not None:
                    _rescale_time_constants(stack, [tr for tr, _ in terms], radii, targets.get("time"),
                                            cfg.rescale_clip)
                step += 1
                bar.update(1)
                if not all(torch.isfinite(p).all() for p in params):
                    stop_reason = (f"non-finite weights after step {step}; restored the best weights "
                                   f"(step {tracker.best_step})")
                    break
                if new_states is not None:
                    states = detach_states(new_states)
                # --- bookkeeping: moving averages, best weights, stopping
                for (tr, _), radius in zip(terms, radii, strict=True):
                    tracker.update(tr.family, report_index(model, tr.family, tr.layer), radius)
                score = tracker.score()
                if score < tracker.best_score:
                    tracker.best_score, tracker.best_step = score, step
                    tracker.best_state = _snapshot(model)
                tracker.good = tracker.good + 1 if score < cfg.tol else 0
                means = tracker.family_means()
                history.append({"step": step, "loss": float(loss.detach()), **means})
                if cfg.progress and step % 5 == 0:
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}", **{f: f"{v:.3f}" for f, v in means.items()})
                if tracker.good >= cfg.patience:
                    stop_reason = (f"converged: every moving-average radius within {cfg.tol:g} of its target for "
                                   f"{cfg.patience} steps")
                    break
    finally:
        bar.close()
    if tracker.best_state is not None:
        model.load_state_dict(tracker.best_state)
    # --- issue 16: the activity guard (lsc/activity.py): no spiking layer leaves LSC silent or saturated
    guard = guard_activity(model, xs, cfg.activity, rates_before) if rates_before is not None else None
    after = measure_all(xs[0])
    return LSCReport(targets, before, after, step, round(time.perf_counter() - t0, 3), stop_reason, history,
                     activity=guard.to_json() if guard is not None else None)


def _rescale_time_constants(stack: Any, transitions: list[Transition], radii: list[float], target: float | None,
                            clip: float) -> None:
    """τ → m·τ with ``m = clip(target / radius, 1 - clip, 1 + clip)`` for each measured time transition (``radii``:
    its batch-mean radius) whose cell has ``scale_time_constants`` (a radius above target shortens the memory, one
    below lengthens it)."""
    if target is None:
        return
    for tr, radius in zip(transitions, radii, strict=True):
        scale = getattr(stack.cells[tr.layer], "scale_time_constants", None) if tr.family == "time" else None
        if scale is not None and math.isfinite(radius) and radius > 0:
            scale(min(max(target / radius, 1.0 - clip), 1.0 + clip), target)


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
             measure: str = "radius", engine: str = "auto", generator: torch.Generator | None = None
             ) -> tuple[Tensor, list[Any]]:
    """The LSC loss of one time step of a stack (for users who write their own loop): ``(loss, new states)``;
    ``targets`` per family (e.g. from :func:`resolve_targets`). Call it in eval mode (dropout off)."""
    res = rnn_transitions(model, x_t, states, list(targets))
    rs = [((transition_measure(tr, measure, engine, generator=generator) - targets[tr.family]) ** 2).mean()
          for tr in res.transitions]
    return torch.stack(rs).mean(), res.states


__all__ = ["LSCReport", "check_config", "lsc_loss", "lsc_pretrain", "make_config", "make_lsc_optimizer",
           "resolve_targets"]
