"""Stability Conditions I–IV and the tail fit for LIF/ALIF layers (paper B, arXiv:2202.00282), as pure functions.

Why one module of ~530 lines: the four conditions and the tail fit read the same layer parameters and the same
surrogate moments, and each is a few formulas; together they are the paper's one derivation.

Every function takes a :class:`LayerParams` (weights, decay, threshold, reset kind, whether the reset carries
gradient) and returns a :class:`ConditionReport`: the solved per-neuron value and the prediction it makes.

Weight layout is PyTorch's ``[post, pre]``: the papers' per-column sums over presynaptic neurons
``S±_j(W) = Σ_i max(±W_ij, 0)`` (rows = presynaptic there) are per-*row* sums here, ``S±_j = Σ_i max(±W[j, i], 0)``,
the incoming weights of neuron ``j``.

Model (the papers' mean-field assumptions, made explicit): spikes are Bernoulli with probability ``rate`` (the code
fixes 1/2), independent of the weights and of each other; the membrane potential is uniform over its reachable range
``[y_min, y_max]`` (paper B), inputs lie in ``[0, 1]``. With these, one formula per reset reproduces the code's
constants (Condition I's ``3 − 2δ`` and ``2 − δ``, Condition IV's ``−2`` and ``δ²/2``): see the docstrings, and
``docs/surrogates.md`` for where the authors' code deviates (its items 7.3, 7.5, 7.6).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor

from ..cells.resets import RESETS, Reset
from ..surrogate import SHAPES, Shape, shape_of
from .solve import least_violating, solve_per_neuron
from .stats import TaskStats, check_rate

# without a root in the search range (docs/surrogates.md, "When a condition has no root"): raise; clip to the
# least-violating scan point of the uniform-voltage model (a bound where the gain is monotone); or match: re-solve the
# same gain on voltages measured by simulating the layer (:class:`VoltageSamples`), least-violating value there
NoRoot = Literal["raise", "clip", "match"]
NO_ROOT: tuple[str, ...] = get_args(NoRoot)
# the conditions a network can be built with (ModelConfig.conditions, paper B arXiv:2202.00282): I, II set the
# recurrent weights, III / IV / tail the surrogate's dampening, sharpness and tail
Condition = Literal["I", "II", "III", "IV", "tail"]
CONDITIONS: tuple[str, ...] = get_args(Condition)
_DT = torch.float64  # all condition arithmetic: equations must hold to 1e-6 and beyond


@dataclass(frozen=True)
class LayerParams:
    """What the conditions read from one LIF/ALIF layer (all tensors float64).

    Attributes:
        weight_hh: recurrent weights ``[n, n]`` (post, pre); entries where ``rec_mask`` is 0 are ignored.
        weight_ih: input weights ``[n, n_in]`` (post, pre).
        decay: δ = exp(-1/τ) per neuron ``[n]``.
        threshold: the threshold the conditions see ``[n]`` (for ALIF, :meth:`from_cell` adds β·rate, the
            stationary adaptation).
        bias: constant input current ``[n]``.
        reset: ``subtract`` | ``multiplicative`` | ``mult_leak`` (the code's multreset1 / multreset2).
        detach_reset: whether the reset path carries no gradient.
        rec_mask: ``[n, n]``, 0 where a recurrent connection does not exist (the diagonal, by default).
    """

    weight_hh: Tensor
    weight_ih: Tensor
    decay: Tensor
    threshold: Tensor
    bias: Tensor
    reset: Reset = "subtract"
    detach_reset: bool = True
    rec_mask: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.weight_hh.shape[0]
        if self.weight_hh.dim() != 2 or self.weight_hh.shape != (n, n):
            raise ValueError(f"weight_hh must be square [n, n] (post, pre), got {list(self.weight_hh.shape)}")
        if self.weight_ih.dim() != 2 or self.weight_ih.shape[0] != n:
            raise ValueError(f"weight_ih must be [n={n}, n_in] (post, pre), got {list(self.weight_ih.shape)}")
        for name in ("decay", "threshold", "bias"):
            t = getattr(self, name)
            if t.shape != (n,):
                raise ValueError(f"{name} must be a per-neuron vector [{n}], got {list(t.shape)}")
        for name in ("weight_hh", "weight_ih", "decay", "threshold", "bias"):
            if not torch.all(torch.isfinite(getattr(self, name))):
                raise ValueError(f"{name} has NaN or infinite entries")
        if torch.any(self.decay < 0) or torch.any(self.decay >= 1):
            raise ValueError(f"decay δ = exp(-1/τ) must lie in [0, 1), i.e. τ > 0 steps; got δ in "
                             f"[{self.decay.min().item():g}, {self.decay.max().item():g}]")
        if self.reset not in RESETS:
            raise ValueError(f"unknown reset {self.reset!r}; choose one of {', '.join(RESETS)}")
        if self.rec_mask is not None and self.rec_mask.shape != (n, n):
            raise ValueError(f"rec_mask must be [{n}, {n}], got {list(self.rec_mask.shape)}")

    @classmethod
    def create(cls, weight_hh: Tensor, weight_ih: Tensor, *, tau: float | Tensor = 20.0,
               threshold: float | Tensor = 1.0, bias: float | Tensor = 0.0, reset: Reset = "subtract",
               detach_reset: bool = True, rec_mask: Tensor | None = None) -> LayerParams:
        """Build from weights and hyper-parameters; ``tau`` in steps (> 0), scalars broadcast to every neuron.
        ``rec_mask`` defaults to "no self-connections"."""
        w = torch.as_tensor(weight_hh, dtype=_DT)
        n = w.shape[0] if w.dim() >= 1 else 0
        tau_t = _vector(tau, n, "tau")
        if torch.any(tau_t <= 0) or not torch.all(torch.isfinite(tau_t)):
            raise ValueError(f"tau must be finite and > 0 (steps), got min {tau_t.min().item():g}")
        mask = (1.0 - torch.eye(n, dtype=_DT)) if rec_mask is None else torch.as_tensor(rec_mask, dtype=_DT)
        return cls(w, torch.as_tensor(weight_ih, dtype=_DT), torch.exp(-1.0 / tau_t), _vector(threshold, n,
                   "threshold"), _vector(bias, n, "bias"), reset, bool(detach_reset), mask)

    @classmethod
    def from_cell(cls, cell, rate: float = 0.5, weight_hh: Tensor | None = None) -> LayerParams:
        """Read a :class:`~stablernn.cells.LIFCell` / ``ALIFCell`` (or any object with the same attributes).

        For ALIF the threshold seen by the conditions is ``ϑ + β·rate``: at a stationary rate the adaptation
        variable ``a`` averages ``rate``. ``weight_hh`` overrides the cell's recurrent weights (a candidate init).
        """
        check_rate(rate)
        w = cell.weight_hh if weight_hh is None else weight_hh
        thr = cell.threshold.detach().to(_DT)
        if cell.adaptive:
            thr = thr + cell.beta.detach().to(_DT) * rate
        return cls(w.detach().to(_DT), cell.weight_ih.detach().to(_DT), cell.decay.detach().to(_DT), thr,
                   cell.bias.detach().to(_DT), cell.reset, bool(cell.detach_reset),
                   cell.rec_mask.detach().to(_DT))

    @property
    def n(self) -> int:
        return self.weight_hh.shape[0]

    @property
    def n_in(self) -> int:
        return self.weight_ih.shape[1]

    @property
    def mask(self) -> Tensor:
        return self.rec_mask if self.rec_mask is not None else 1.0 - torch.eye(self.n, dtype=self.weight_hh.dtype)

    @property
    def w_rec(self) -> Tensor:
        """Recurrent weights with the absent connections zeroed, ``[n, n]`` (post, pre)."""
        return self.weight_hh * self.mask

    @property
    def n_pre(self) -> Tensor:
        """Number of recurrent inputs of each neuron ``[n]`` (n − 1 without self-connections)."""
        return self.mask.sum(dim=1)


def _vector(value: float | Tensor, n: int, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=_DT)
    if t.dim() == 0:
        t = t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"{name} must be a scalar or a per-neuron vector [{n}], got {list(t.shape)}")
    return t


def positive_sum(w: Tensor) -> Tensor:
    """``S⁺_j = Σ_i max(W[j, i], 0)``: per postsynaptic neuron (row of a ``[post, pre]`` matrix), ``[n]``."""
    return w.clamp(min=0.0).sum(dim=1)


def negative_sum(w: Tensor) -> Tensor:
    """``S⁻_j = −Σ_i max(−W[j, i], 0)`` (≤ 0): per postsynaptic neuron (row), ``[n]``."""
    return w.clamp(max=0.0).sum(dim=1)


# --- output -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConditionReport:
    """One condition's result.

    Attributes:
        condition: ``I`` | ``II`` | ``III`` | ``IV`` | ``tail``.
        quantity: what ``value`` is (e.g. ``dampening γ``).
        value: the solved value per neuron ``[n]`` (or ``[1]`` for a layer-wide scalar).
        prediction: what the model predicts once ``value`` is used, per neuron (``[n]``), e.g. the one-step gain.
        prediction_name: what ``prediction`` is.
        target: what ``prediction`` should equal.
        solved: ``[n]`` bool, False where no exact solution exists (then ``value`` is the best bound).
        notes: assumptions and warnings, in words.
    """

    condition: str
    quantity: str
    value: Tensor
    prediction: Tensor
    prediction_name: str
    target: float
    solved: Tensor
    notes: tuple[str, ...] = field(default_factory=tuple)
    fallback: str = ""  # where some neuron had no root: what the on_no_root fallback chose, in words

    @property
    def residual(self) -> Tensor:
        return self.prediction - self.target

    def summary(self) -> str:
        v, p = self.value, self.prediction
        unsolved = int((~self.solved).sum())
        text = (f"Condition {self.condition}: {self.quantity} = {_stat(v)}; predicted {self.prediction_name} = "
                f"{_stat(p)} (target {self.target:g})")
        if unsolved:
            text += (f"; no exact solution for {unsolved}/{self.solved.numel()} neuron(s): "
                     f"{self.fallback or 'bound used'}")
        return text

    def to_dict(self) -> dict[str, object]:
        return {"condition": self.condition, "quantity": self.quantity, "value_mean": float(self.value.mean()),
                "value_std": float(self.value.std()) if self.value.numel() > 1 else 0.0,
                "prediction_name": self.prediction_name, "prediction_mean": float(self.prediction.mean()),
                "target": self.target, "unsolved": int((~self.solved).sum()), "fallback": self.fallback,
                "notes": list(self.notes)}


def _stat(t: Tensor) -> str:
    if t.numel() == 1:
        return f"{t.item():.4g}"
    return f"{t.mean().item():.4g} ± {t.std().item():.2g} (min {t.min().item():.4g}, max {t.max().item():.4g})"


# --- Condition I: recurrent mean ----------------------------------------------------------------------------------
def stationary_mean_voltage(p: LayerParams, mu_rec: Tensor, rate: float = 0.5) -> Tensor:
    """Mean-field stationary mean voltage ``E[v]`` per neuron ``[n]`` when every recurrent weight of neuron j has
    mean ``mu_rec[j]``, spikes are Bernoulli(rate), and the input current has mean 0:

    - subtract:        E[v] = (n_pre μ r − ϑ r) / (1 − δ)
    - mult_leak:       E[v] = n_pre μ r / (1 − δ (1 − r))
    - multiplicative:  E[v] = (1 − r) n_pre μ r / (1 − δ (1 − r))
    """
    check_rate(rate)
    drive = p.n_pre * torch.as_tensor(mu_rec, dtype=_DT) * rate
    if p.reset == "subtract":
        return (drive - p.threshold * rate) / (1.0 - p.decay)
    if p.reset == "mult_leak":
        return drive / (1.0 - p.decay * (1.0 - rate))
    return (1.0 - rate) * drive / (1.0 - p.decay * (1.0 - rate))


def condition_i(p: LayerParams, rate: float = 0.5) -> ConditionReport:
    """Condition I: the recurrent weight mean ``μ_rec [n]`` that puts the stationary mean voltage at threshold.

    Solving :func:`stationary_mean_voltage` ``= ϑ`` for μ gives, at rate 1/2, the code's formulas for
    ``subtract`` — ``(3 − 2δ)ϑ/(n−1)`` — and ``mult_leak`` (multreset2) — ``(2 − δ)ϑ/(n−1)``. For
    ``multiplicative`` (multreset1) it gives ``(4 − 2δ)ϑ/(n−1)``; the authors' code uses ``2(1 − δ)ϑ/(n−1)``,
    which is the balance of a neuron *without* reset (see docs/surrogates.md).
    """
    check_rate(rate)
    r, d, thr, n_pre = rate, p.decay, p.threshold, p.n_pre
    if torch.any(n_pre < 1):
        raise ValueError("Condition I needs every neuron to have at least one recurrent input (rec_mask row sums)")
    if p.reset == "subtract":
        mu = thr * (1.0 - d + r) / (r * n_pre)
    elif p.reset == "mult_leak":
        mu = thr * (1.0 - d * (1.0 - r)) / (r * n_pre)
    else:
        mu = thr * (1.0 - d * (1.0 - r)) / ((1.0 - r) * r * n_pre)
    pred = stationary_mean_voltage(p, mu, rate) / thr
    return ConditionReport("I", "recurrent weight mean μ_rec", mu, pred, "stationary mean voltage / threshold",
                           1.0, torch.ones(p.n, dtype=torch.bool),
                           (f"spikes Bernoulli({rate}), zero-mean input current, reset={p.reset}",))


# --- Condition II: recurrent variance -----------------------------------------------------------------------------
def input_current_second_moment(p: LayerParams, stats: TaskStats) -> float:
    """``E[i_in²] ≈ (σ_x² + μ_x²) · Var(W_in) · n_in``: the input current's second moment, with Var(W_in) the
    empirical variance of the drawn input weights (zero-mean weights assumed, as in paper B)."""
    return stats.second_moment * float(p.weight_ih.var(unbiased=False)) * p.n_in


def condition_ii(p: LayerParams, stats: TaskStats, mu_rec: Tensor | float = 0.0) -> ConditionReport:
    """Condition II: the recurrent weight variance ``σ²_rec [n]`` that matches the recurrent current's second
    moment to the input current's, given the recurrent mean ``mu_rec`` (Condition I's, or 0):

        σ²_rec = (σ_x² + μ_x²) · Var(W_in) · n_in / n_pre − μ_rec² / 2        (paper B, n_pre = n − 1)

    i.e. ``n_pre (σ²_rec + μ_rec²/2) = E[i_in²]``. This is the *intended* variance; the authors' code realises
    ``√σ²_rec / n`` instead (docs/surrogates.md 7.3; :func:`~stablernn.snn.design.init_recurrent_` offers it as
    ``as_in_code=True``). Raises ``ValueError`` when σ²_rec would be negative (the code silently drew NaN weights).
    """
    mu = torch.as_tensor(mu_rec, dtype=_DT).expand(p.n)
    e_in = input_current_second_moment(p, stats)
    var = e_in / p.n_pre - mu * mu / 2.0
    bad = var < 0
    if torch.any(bad):
        raise ValueError(
            f"Condition II asks for a negative recurrent variance for {int(bad.sum())}/{p.n} neuron(s) (min "
            f"σ²_rec = {var.min().item():.3g}): the input current's second moment E[i_in²] = {e_in:.3g} is smaller "
            f"than n_pre·μ_rec²/2 = {float((p.n_pre * mu * mu / 2).max()):.3g}. Lower the threshold (μ_rec ∝ ϑ), "
            f"scale up the input weights, or apply Condition I without Condition II")
    pred = p.n_pre * (var + mu * mu / 2.0) / e_in if e_in > 0 else torch.ones(p.n, dtype=_DT)
    return ConditionReport("II", "recurrent weight variance σ²_rec", var, pred,
                           "n_pre(σ²_rec + μ²_rec/2) / E[i_in²]", 1.0, torch.ones(p.n, dtype=torch.bool),
                           (f"input mean {stats.mean:.4g}, variance {stats.var:.4g}, Var(W_in) "
                            f"{float(p.weight_ih.var(unbiased=False)):.4g}",))


# --- Condition III: dampening -------------------------------------------------------------------------------------
def _reset_gradient_threshold(p: LayerParams) -> Tensor:
    """ϑ' of Condition III/IV: the threshold on the reset path's gradient — ϑ for a subtractive reset that carries
    gradient, 0 when the reset is detached or multiplicative (spec: ϑ' = 0 for multreset)."""
    if p.reset == "subtract" and not p.detach_reset:
        return p.threshold
    return torch.zeros_like(p.threshold)


def condition_iii_gain(p: LayerParams, dampening: Tensor, input_dampening: float = 0.0) -> Tensor:
    """The gain Condition III sets to 1, per neuron ``[n]``:

        δ_j + γ_in S⁺_j(W_in) + γ_j S⁺_j(W_rec) · (S⁻_j(W_rec) − ϑ'_j) / S⁻_j(W_rec)

    the largest one-step voltage gain (leak, plus every excitatory recurrent synapse at the SG peak γ), inflated by
    the ratio of (inhibition + reset) to inhibition; ϑ' = ϑ only for a subtractive reset that carries gradient.
    """
    w = p.w_rec
    s_pos, s_neg, thr = positive_sum(w), negative_sum(w), _reset_gradient_threshold(p)
    ratio = torch.where(thr == 0, torch.ones_like(s_neg), (s_neg - thr) / s_neg)
    gamma = torch.as_tensor(dampening, dtype=_DT)
    return p.decay + input_dampening * positive_sum(p.weight_ih) + gamma * s_pos * ratio


def condition_iii(p: LayerParams, input_dampening: float = 0.0) -> ConditionReport:
    """Condition III (type c, per neuron): the dampening

        γ_j = S⁻_j / (S⁺_j (S⁻_j − ϑ'_j)) · (1 − δ_j − γ_in S⁺_j(W_in))

    that makes :func:`condition_iii_gain` equal 1. ``input_dampening`` is the layer below's γ (the code's
    ``deltain``; 0 by default). The code took the input sum from W_rec times n_in again (docs/surrogates.md);
    here it is S⁺_j(W_in). Raises ``ValueError`` where γ would be 0, negative or undefined.
    """
    w = p.w_rec
    s_pos, s_neg, thr = positive_sum(w), negative_sum(w), _reset_gradient_threshold(p)
    if torch.any(s_pos <= 0):
        raise ValueError(f"Condition III needs excitatory recurrent weights: {int((s_pos <= 0).sum())} neuron(s) "
                         f"have S⁺ = 0 (no positive incoming recurrent weight), so no dampening bounds their gain")
    headroom = 1.0 - p.decay - input_dampening * positive_sum(p.weight_ih)
    if torch.any(headroom <= 0):
        raise ValueError(f"Condition III: the leak and input path already reach gain >= 1 for "
                         f"{int((headroom <= 0).sum())} neuron(s) (1 − δ − γ_in S⁺(W_in) <= 0); lower tau or the "
                         f"input dampening")
    if torch.any((s_neg == 0) & (thr > 0)):
        raise ValueError("Condition III gives γ = 0 for neurons without inhibitory recurrent input when the reset "
                         "carries gradient; use detach_reset=True or weights of both signs")
    ratio = torch.where(thr == 0, torch.ones_like(s_neg), s_neg / (s_neg - thr))
    gamma = ratio * headroom / s_pos
    pred = condition_iii_gain(p, gamma, input_dampening)
    return ConditionReport("III", "dampening γ", gamma, pred, "largest one-step gain (Condition III)", 1.0,
                           torch.ones(p.n, dtype=torch.bool),
                           (f"ϑ' = {'ϑ' if bool(torch.any(thr > 0)) else '0'} (reset={p.reset}, "
                            f"detach_reset={p.detach_reset})",))


# --- Condition IV and the tail: the expected squared one-step gain ------------------------------------------------
def voltage_range(p: LayerParams) -> tuple[Tensor, Tensor]:
    """Reachable membrane potential per neuron (paper B), inputs and spikes in [0, 1]:

        y_max = (S⁺(W_rec) + S⁺(W_in) + b) / (1 − δ),   y_min = (S⁻(W_rec) + S⁻(W_in) + b − ϑ_reset) / (1 − δ)

    with ϑ_reset = ϑ for a subtractive reset (the forward reset lowers v whether or not it carries gradient), else 0.
    """
    w = p.w_rec
    reset = p.threshold if p.reset == "subtract" else torch.zeros_like(p.threshold)
    y_max = (positive_sum(w) + positive_sum(p.weight_ih) + p.bias) / (1.0 - p.decay)
    y_min = (negative_sum(w) + negative_sum(p.weight_ih) + p.bias - reset) / (1.0 - p.decay)
    return y_max, y_min


def sg_moment(shape: Shape, m: int, lo: Tensor, hi: Tensor, dampening: Tensor, sharpness: Tensor,
              tail: float | Tensor = 0.0) -> Tensor:
    """``E[f(u)^m]`` for u uniform on ``[lo, hi]`` (m = 1 or 2), f the SG of ``shape`` with γ, s, q; exact, from the
    shape's CDF / ∫g². Broadcasts; where ``hi == lo`` it is ``f(lo)^m``."""
    if m not in (1, 2):
        raise ValueError(f"moment order must be 1 or 2, got {m}")
    prim = shape.cdf if m == 1 else shape.sq_integral
    q = tail
    width = hi - lo
    safe = torch.where(width > 0, width, torch.ones_like(width))
    integral = (prim(sharpness * hi, q) - prim(sharpness * lo, q)) / (sharpness * safe)
    point = shape.g(sharpness * lo, q) ** m
    return dampening ** m * torch.where(width > 0, integral, point)


@dataclass(frozen=True)
class VoltageSamples:
    """A layer's measured activity, for the ``match`` fallback: ``u [S, n]``, samples of the SG's argument
    ``v − ϑ`` (the voltage minus the threshold in force, over batch and time), and ``rate [n]``, each neuron's
    measured firing rate. Made by :func:`stablernn.snn.design.measure_layer`."""

    u: Tensor
    rate: Tensor

    def __post_init__(self) -> None:
        if self.u.dim() != 2 or self.u.shape[0] < 1:
            raise ValueError(f"voltage samples must be [S >= 1, n], got {list(self.u.shape)}")
        if self.rate.shape != (self.u.shape[1],):
            raise ValueError(f"rate must be [{self.u.shape[1]}], got {list(self.rate.shape)}")
        if not (torch.all(torch.isfinite(self.u)) and torch.all(torch.isfinite(self.rate))):
            raise ValueError("voltage samples have NaN or infinite entries; the simulated layer diverged")


def _measured_moment(shape: Shape, m: int, u: Tensor, dampening: Tensor, sharpness: Tensor,
                     tail: float | Tensor, candidates: bool) -> Tensor:
    """``E[f(u)^m]`` over the samples ``u [S, n]`` per neuron: ``[n]``, or ``[n, k]`` for ``[n, k]`` candidates
    (evaluated in chunks of candidates so that ``[S, n, chunk]`` stays near 4M entries)."""
    gamma = torch.as_tensor(dampening, dtype=_DT)
    if not candidates:
        return gamma ** m * (shape.g(sharpness * u, tail) ** m).mean(0)
    sharp, q = torch.as_tensor(sharpness, dtype=_DT), torch.as_tensor(tail, dtype=_DT)
    k = torch.broadcast_shapes(sharp.shape, q.shape)[-1]
    chunk = max(1, 4_000_000 // max(1, u.shape[0] * u.shape[1]))

    def cols(t: Tensor, j: int) -> Tensor:  # candidate columns j..j+chunk of an [n, k] tensor; others broadcast
        return t[:, j:j + chunk] if t.dim() == 2 and t.shape[1] == k else t

    means = [(shape.g(cols(sharp, j) * u[:, :, None], cols(q, j)) ** m).mean(0) for j in range(0, k, chunk)]
    return gamma ** m * torch.cat(means, dim=1)


def expected_sq_gain(p: LayerParams, shape: Shape, dampening: Tensor, sharpness: Tensor,
                     tail: float | Tensor = 0.0, *, rate: float = 0.5, cross_term: bool = False,
                     samples: VoltageSamples | None = None) -> Tensor:
    """The expected squared norm of the one-step voltage Jacobian's column i, ``E|∂v[t]/∂v_i[t−1]|²`` per neuron
    ``[n]`` (a perturbation of neuron i spreads through its outgoing weights, scaled by its SG ``f_i``):

    - subtract:        δ² + (Σ_j W_ji² + ϑ'²) E[f²] − 2δϑ' E[f]   (the last term only with ``cross_term``)
    - mult_leak:       (1 − r) δ² + Σ_j W_ji² E[f²]
    - multiplicative:  (1 − r) (δ² + Σ_j W_ji² E[f²])

    with ϑ' = ϑ if the subtractive reset carries gradient (else 0), spikes Bernoulli(r), and v uniform on
    :func:`voltage_range`. At r = 1/2 these are the code's Condition IV equations (``−1 + δ² + ...``, ``−2 + ...``,
    ``−1 + δ²/2 + ...``); the mean over neurons is ``E‖J‖²_F / n``, whose value 1 puts the Jacobian's spectral
    radius near 1. The paper drops the cross term; it vanishes for the code's δ ≈ 0 but not for τ ≫ 1.
    ``dampening``, ``sharpness``, ``tail`` broadcast against ``[n]`` (or ``[n, k]`` candidates).

    With ``samples`` the moments of f are taken over the measured voltages (and r is each neuron's measured rate)
    instead of the uniform-over-reachable-range model: then the value is the mean squared column norm of the
    layer's measured time Jacobian ``v[t−1] -> v[t]``, the Frobenius counterpart of the radius LSC measures
    (docs/surrogates.md, "When a condition has no root").
    """
    check_rate(rate)
    if p.reset != "subtract" and not p.detach_reset:
        raise ValueError(f"the Condition IV gain for reset={p.reset!r} assumes detach_reset=True: with a "
                         f"multiplicative reset that carries gradient the Jacobian depends on the voltage itself; "
                         f"set detach_reset=True or use reset='subtract'")
    y_max, y_min = voltage_range(p)
    extra = dampening.dim() if isinstance(dampening, Tensor) else 0
    extra = max(extra, sharpness.dim() if isinstance(sharpness, Tensor) else 0,
                tail.dim() if isinstance(tail, Tensor) else 0)

    def col(t: Tensor) -> Tensor:  # [n] -> [n, 1] when candidates are [n, k]
        return t[:, None] if extra == 2 else t

    thr = _reset_gradient_threshold(p)
    lo, hi = col(y_min - p.threshold), col(y_max - p.threshold)
    if samples is None:
        def moment(m: int) -> Tensor:
            return sg_moment(shape, m, lo, hi, dampening, sharpness, tail)
        r: float | Tensor = rate
    else:
        if samples.u.shape[1] != p.n:
            raise ValueError(f"voltage samples are for {samples.u.shape[1]} neurons, the layer has {p.n}")

        def moment(m: int) -> Tensor:
            return _measured_moment(shape, m, samples.u, dampening, sharpness, tail, extra == 2)
        r = col(samples.rate.to(_DT))
    e2 = moment(2)
    out_sq = col((p.w_rec ** 2).sum(dim=0))  # Σ_j W[j, i]²: outgoing weights of neuron i
    d = col(p.decay)
    if p.reset == "subtract":
        gain = d * d + (out_sq + col(thr) ** 2) * e2
        if cross_term:
            gain = gain - 2.0 * d * col(thr) * moment(1)
        return gain
    if p.reset == "mult_leak":
        return (1.0 - r) * d * d + out_sq * e2
    return (1.0 - r) * (d * d + out_sq * e2)


@dataclass(frozen=True)
class _Solution:
    x: Tensor  # [n] per neuron, or [1] for the layer
    found: Tensor  # [n] / [1]: a root of the model's equation (the uniform-voltage gain)
    measured: Tensor  # [n] / [1]: the value came from the measured-voltage gain (match fallback)
    fallback: str


def _solve_gain(p: LayerParams, make_gain, lo: float, hi: float, per_neuron: bool,
                on_no_root: NoRoot, what: str, hint: str, *, measured_gain=None, default: float | None = None,
                flat_tol: float = 1e-3, shown: tuple[str, float] | None = None) -> _Solution:
    """Solve ``make_gain(x) = 1`` for x per neuron (or one x for the layer's mean gain); where there is no root,
    ``on_no_root`` decides (see :data:`NoRoot`). ``measured_gain`` is the same gain on measured voltages (match),
    ``default`` the value kept where the measured gain is flat (moves by less than ``flat_tol`` over the range);
    ``shown = (name, offset)``: the fallback's text gives values as ``name = x + offset`` (a solve in ``q - 1``)."""
    if on_no_root not in NO_ROOT:
        raise ValueError(f"on_no_root must be one of {', '.join(map(repr, NO_ROOT))}, got {on_no_root!r}")
    n_eq = p.n if per_neuron else 1

    def residual(gain_fn):
        if per_neuron:
            return lambda x: gain_fn(x) - 1.0
        return lambda x: gain_fn(x.expand(p.n, x.shape[1])).mean(0, keepdim=True) - 1.0

    res = solve_per_neuron(residual(make_gain), n_eq, lo, hi)
    no = torch.zeros(n_eq, dtype=torch.bool)
    if bool(res.found.all()):
        return _Solution(res.x, res.found, no, "")
    bad = ~res.found
    unit = "neuron(s)" if per_neuron else "layer"
    if on_no_root == "raise":
        g_lo = make_gain(torch.full((p.n, 1), lo, dtype=_DT))[:, 0]
        g_hi = make_gain(torch.full((p.n, 1), hi, dtype=_DT))[:, 0]
        if not per_neuron:
            g_lo, g_hi = g_lo.mean(0, keepdim=True), g_hi.mean(0, keepdim=True)
        raise ValueError(
            f"no {what} in [{lo:g}, {hi:g}] makes the expected squared one-step gain equal 1 for "
            f"{int(bad.sum())}/{bad.numel()} {unit}: the gain ranges over "
            f"[{float(torch.minimum(g_lo, g_hi)[bad].min()):.4g}, {float(torch.maximum(g_lo, g_hi)[bad].max()):.4g}] "
            f"there. {hint} Or pass on_no_root='clip' (least-violating value) or 'match' (re-solve on measured "
            f"voltages)")
    if on_no_root == "clip":
        at_bound = bool(torch.all((res.x[bad] == lo) | (res.x[bad] == hi)))
        text = ("clip: search bound used" if at_bound else
                "clip: least-violating scan point used (not a bound: the gain is not monotone there)")
        return _Solution(res.x, res.found, no, text)
    if measured_gain is None:
        raise ValueError(f"on_no_root='match' needs the layer's measured voltages (samples=VoltageSamples, made by "
                         f"stablernn.snn.design.measure_layer) to re-solve the {what}; or use on_no_root='clip'")
    mres = solve_per_neuron(residual(measured_gain), n_eq, lo, hi)
    x = torch.where(res.found, res.x, mres.x)
    use_root = bad & mres.found
    rest = bad & ~mres.found
    flat = torch.zeros(n_eq, dtype=torch.bool)
    if bool(rest.any()):
        lv = least_violating(residual(measured_gain), n_eq, lo, hi)
        scan = torch.logspace(math.log10(lo), math.log10(hi), 33, dtype=_DT)
        gvals = residual(measured_gain)(scan.expand(n_eq, 33))
        # the condition cannot tell values apart here: do not move the parameter (keep its unconditioned value)
        flat = rest & ((gvals.max(dim=1).values - gvals.min(dim=1).values) < flat_tol) & (default is not None)
        keep = torch.full_like(lv, float(default) if default is not None else float("nan"))
        x = torch.where(use_root, mres.x, torch.where(flat, keep, torch.where(rest, lv, x)))
    parts = []
    if bool(use_root.any()):
        parts.append(f"root of the measured-voltage gain for {int(use_root.sum())}")
    if bool((rest & ~flat).any()):
        parts.append(f"least-violating value of the measured-voltage gain for {int((rest & ~flat).sum())}")
    if bool(flat.any()):
        name, off = shown if shown is not None else ("", 0.0)
        parts.append(f"default {name + ' = ' if name else ''}{default + off:g} kept for {int(flat.sum())} (the "
                     f"measured gain moves by < {flat_tol:g} over {name + ' in ' if name else ''}"
                     f"[{lo + off:g}, {hi + off:g}])")
    return _Solution(x, res.found, bad, "match: " + "; ".join(parts) + f" {unit}")


def condition_iv(p: LayerParams, shape: str = "fast_sigmoid", dampening: float | Tensor = 1.0,
                 tail: float | None = None, *, rate: float = 0.5, per_neuron: bool = False,
                 bounds: tuple[float, float] = (1e-3, 1e3), on_no_root: NoRoot = "raise",
                 cross_term: bool = False, samples: VoltageSamples | None = None, default: float = 1.0,
                 flat_tol: float = 1e-3) -> ConditionReport:
    """Condition IV: the SG sharpness s that makes :func:`expected_sq_gain` equal 1, for any SG shape.

    ``per_neuron=True`` solves each neuron's equation (paper B's type a, done right: the code's solver returned random
    candidates, docs/surrogates.md 7.5); ``False`` solves one s for the layer's mean gain (the equation with means; the
    code's type b averaged per-neuron picks). A real bracketing root-finder over ``bounds``; where the gain does not
    cross 1 in range, ``on_no_root='raise'`` raises ``ValueError``, ``'clip'`` returns the scan point with the
    smallest residual (the bound where the gain is monotone) and ``'match'`` re-solves the gain on the measured
    voltages ``samples`` (root, else least-violating value, else ``default`` where that gain is flat to
    ``flat_tol``); both with ``solved = False``.
    """
    sg = shape_of(shape)
    q = _tail_of(sg, tail)
    gamma = _vector(dampening, p.n, "dampening")

    def gain(s: Tensor) -> Tensor:
        return expected_sq_gain(p, sg, gamma[:, None], s, q, rate=rate, cross_term=cross_term)

    def measured(s: Tensor) -> Tensor:
        return expected_sq_gain(p, sg, gamma[:, None], s, q, cross_term=cross_term, samples=samples)

    res = _solve_gain(p, gain, *bounds, per_neuron, on_no_root, "sharpness s",
                      "Change the dampening γ (Condition III) or the recurrent weights.",
                      measured_gain=measured if samples is not None else None, default=default, flat_tol=flat_tol)
    s = _per_neuron_value(res.x, p.n)
    pred, name = _prediction(gain, measured, s, res, p.n)
    notes = [f"shape {sg.name}, γ {_stat(gamma)}, spikes Bernoulli({rate}), reset={p.reset}, "
             f"detach_reset={p.detach_reset}"]
    if not per_neuron:
        notes.append("one sharpness for the layer: the *mean* gain over neurons is 1")
    return ConditionReport("IV", "sharpness s", s, pred, name, 1.0, _per_neuron_value(res.found, p.n),
                           tuple(notes), res.fallback)


def _per_neuron_value(t: Tensor, n: int) -> Tensor:
    return t if t.numel() == n else t.expand(n).clone()


def _prediction(gain, measured, x: Tensor, res: _Solution, n: int) -> tuple[Tensor, str]:
    """The gain at the chosen values: the model's, or the measured-voltage one where the match fallback chose."""
    pred = gain(x[:, None])[:, 0]
    used = _per_neuron_value(res.measured, n)
    if bool(used.any()):
        pred = torch.where(used, measured(x[:, None])[:, 0], pred)
        return pred, "expected squared one-step gain E|J e_i|² (measured voltages where the fallback chose)"
    return pred, "expected squared one-step gain E|J e_i|²"


def fit_tail(p: LayerParams, dampening: float | Tensor = 1.0, sharpness: float | Tensor = 1.0, *,
             rate: float = 0.5, per_neuron: bool = False, bounds: tuple[float, float] = (1.001, 101.0),
             on_no_root: NoRoot = "raise", cross_term: bool = False, samples: VoltageSamples | None = None,
             default: float | None = None, flat_tol: float = 1e-3) -> ConditionReport:
    """The q-PseudoSpike tail q that makes :func:`expected_sq_gain` equal 1 (paper B's "tail optimisation").

    Intended version of the code's fit: the gain equation of the layer's own reset (the code always used the
    multreset2 one) with per-neuron voltage ranges (the code used global max/min weights), solved by a root-finder
    over q in ``bounds`` (q → ∞ is the exponential SG) instead of 1000 noisy Adam steps (docs/surrogates.md 7.6).
    ``on_no_root``, ``samples``, ``default`` (None: the shape's default q) and ``flat_tol`` as in
    :func:`condition_iv`.
    """
    sg = SHAPES["q_pseudospike"]
    gamma = _vector(dampening, p.n, "dampening")
    sharp = _vector(sharpness, p.n, "sharpness")
    if torch.any(sharp <= 0):
        raise ValueError("sharpness must be > 0")
    lo, hi = bounds
    if not lo > 1.0:
        raise ValueError(f"the tail q must be > 1; got lower bound {lo}")

    def gain(q: Tensor) -> Tensor:
        return expected_sq_gain(p, sg, gamma[:, None], sharp[:, None], q, rate=rate, cross_term=cross_term)

    # solve over q - 1 on a log scale: the shape changes fastest near q = 1
    def gain_shifted(qm1: Tensor) -> Tensor:
        return gain(qm1 + 1.0)

    def measured(q: Tensor) -> Tensor:
        return expected_sq_gain(p, sg, gamma[:, None], sharp[:, None], q, cross_term=cross_term, samples=samples)

    q_default = float(sg.default_tail if default is None else default)
    res = _solve_gain(p, gain_shifted, lo - 1.0, hi - 1.0, per_neuron, on_no_root, "tail q − 1",
                      "Change the dampening γ or sharpness s.",
                      measured_gain=(lambda qm1: measured(qm1 + 1.0)) if samples is not None else None,
                      default=q_default - 1.0, flat_tol=flat_tol, shown=("q", 1.0))
    q = _per_neuron_value(res.x, p.n) + 1.0
    pred, name = _prediction(gain, measured, q, res, p.n)
    return ConditionReport("tail", "q-PseudoSpike tail q", q, pred, name, 1.0, _per_neuron_value(res.found, p.n),
                           (f"γ {_stat(gamma)}, s {_stat(sharp)}, spikes Bernoulli({rate}), reset={p.reset}",),
                           res.fallback)


def _tail_of(sg: Shape, tail: float | None) -> float:
    if not sg.uses_tail:
        return 0.0
    q = sg.default_tail if tail is None else float(tail)
    if q is None or not q > 1.0:
        raise ValueError(f"{sg.name} needs a tail q > 1, got {tail}")
    return q


__all__ = [
    "NO_ROOT",
    "RESETS",
    "ConditionReport",
    "LayerParams",
    "TaskStats",
    "VoltageSamples",
    "condition_i",
    "condition_ii",
    "condition_iii",
    "condition_iii_gain",
    "condition_iv",
    "expected_sq_gain",
    "fit_tail",
    "input_current_second_moment",
    "negative_sum",
    "positive_sum",
    "sg_moment",
    "stationary_mean_voltage",
    "voltage_range",
]
