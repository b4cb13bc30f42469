"""Apply the stability conditions to LIF/ALIF layers: the Condition I+II initializer and the full design.

:func:`stability_design` reads a cell and the statistics of its input and returns a :class:`Design`: recurrent
weights drawn by Conditions I+II, the SG dampening γ from Condition III, and the sharpness s from Condition IV (or the
tail q of q-PseudoSpike), each with its report. It does not touch the cell; :meth:`Design.apply_` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..cells.base import HasCells, LIFLike
from ..cells.spiking import spiking_step
from ..fields import check_fields, option, require
from ..surrogate import ALIASES, SpikeFunction, SurrogateName, get, names, shape_of
from .conditions import (
    CONDITIONS,
    Condition,
    ConditionReport,
    LayerParams,
    NoRoot,
    TaskStats,
    VoltageSamples,
    condition_i,
    condition_ii,
    condition_iii,
    condition_iv,
    fit_tail,
)


def is_spiking(cell: nn.Module) -> bool:
    """Whether a cell is a LIF/ALIF layer the conditions apply to (:class:`~stablernn.cells.base.LIFLike`)."""
    return isinstance(cell, LIFLike)


def draw_recurrent(mask: Tensor, mean: Tensor | float, var: Tensor | float, *,
                   generator: torch.Generator | None = None, as_in_code: bool = False) -> Tensor:
    """Recurrent weights ``[n, n]`` (post, pre): row j uniform with mean ``mean[j]`` and variance ``var[j]``,
    zero where ``mask`` is 0.

    ``as_in_code=True`` reproduces the authors' Condition II init, whose realised variance is ``√var / n`` instead of
    ``var`` (docs/surrogates.md, deviation 7.3; only to reproduce their figures).
    """
    n = mask.shape[0]
    mean_t = torch.as_tensor(mean, dtype=torch.float64).expand(n)
    var_t = torch.as_tensor(var, dtype=torch.float64).expand(n)
    if torch.any(var_t < 0) or not torch.all(torch.isfinite(var_t)) or not torch.all(torch.isfinite(mean_t)):
        raise ValueError(f"recurrent weight variance must be finite and >= 0 (got min {var_t.min().item():g}) and "
                         f"the mean finite")
    if as_in_code:
        var_t = var_t.sqrt() / n
    u = torch.rand(n, n, generator=generator, dtype=torch.float64) * 2.0 - 1.0  # U(-1, 1): variance 1/3
    w = mean_t[:, None] + u * torch.sqrt(3.0 * var_t)[:, None]
    return w * mask.to(torch.float64)


def init_recurrent_(cell: nn.Module, mean: Tensor | float, var: Tensor | float, *,
                    generator: torch.Generator | None = None, as_in_code: bool = False) -> Tensor:
    """Overwrite ``cell.weight_hh`` with :func:`draw_recurrent` (respecting ``cell.rec_mask``); returns it."""
    w = draw_recurrent(cell.rec_mask, mean, var, generator=generator, as_in_code=as_in_code)
    with torch.no_grad():
        cell.weight_hh.copy_(w.to(cell.weight_hh.dtype))
    return cell.weight_hh


def init_conditions_(cell: nn.Module, stats: TaskStats, *, rate: float = 0.5, use_ii: bool = True,
                     generator: torch.Generator | None = None,
                     as_in_code: bool = False) -> tuple[ConditionReport, ConditionReport | None]:
    """Initialise ``cell.weight_hh`` by Condition I (mean) and, with ``use_ii``, Condition II (variance, from the
    input statistics ``stats``); without II the current weights' variance is kept. Returns the reports."""
    p = LayerParams.from_cell(cell, rate)
    r1 = condition_i(p, rate)
    r2 = condition_ii(p, stats, r1.value) if use_ii else None
    var = r2.value if r2 is not None else _masked_var(p)
    init_recurrent_(cell, r1.value, var, generator=generator, as_in_code=as_in_code)
    return r1, r2


def _masked_var(p: LayerParams) -> Tensor:
    vals = p.weight_hh[p.mask > 0]
    return vals.var(unbiased=False) if vals.numel() > 1 else torch.zeros((), dtype=torch.float64)


@dataclass
class DesignConfig:
    """Which conditions of paper B (arXiv:2202.00282) to apply and how; each field's help says what it
    does. Condition III per neuron is the paper's type (c), its mean type (d); the tail condition fits q of
    ``q_pseudospike`` (then ``shape`` must be ``q_pseudospike``)."""

    shape: SurrogateName = option("fast_sigmoid", "SG shape whose sharpness Condition IV solves (q_pseudospike "
                                  "with the tail condition: its tail q is fitted instead)")
    conditions: tuple[Condition, ...] = option(("I", "II", "III", "IV"), "conditions to apply")
    rate: float = option(0.5, "firing probability assumed by the mean-field model (the papers' code: 1/2)")
    dampening: float = option(1.0, "SG dampening where Condition III is not applied")
    sharpness: float = option(1.0, "SG sharpness where Condition IV is not applied")
    tail: float | None = option(None, "tail q where the tail condition is not applied (None: the shape's default)")
    per_neuron_dampening: bool = option(True, "Condition III per neuron (type c), else its mean (type d)")
    per_neuron_sharpness: bool = option(False, "Condition IV per neuron, else one sharpness for the layer")
    sharpness_bounds: tuple[float, float] = option((0.1, 10.0), "search range of Condition IV (no root in it: "
                                                   "see on_no_root)")
    tail_bounds: tuple[float, float] = option((1.01, 101.0), "search range of the tail q")
    on_no_root: NoRoot = option("clip", "Condition IV / tail without a root in the search range: clip (least-"
                                "violating value of the model, here a bound), match (re-solve on voltages measured "
                                "by simulating the layer; docs/surrogates.md) or raise")
    match_batch: int = option(128, "match: sequences simulated to measure each layer's voltages")
    match_steps: int = option(100, "match: steps per simulated sequence when the task's length is not given")
    match_samples: int = option(2048, "match: voltage samples (batch x time rows) kept per layer")
    flat_tol: float = option(1e-3, "match: keep the unconditioned value where the measured gain moves by less "
                             "than this over the whole search range")
    as_in_code_variance: bool = option(False, "realise Condition II's variance as the authors' code did "
                                       "(docs/surrogates.md; only to reproduce their figures)")
    cross_term: bool = option(False, "include -2 delta theta' E[f] in the Condition IV gain (expected_sq_gain)")

    def __post_init__(self) -> None:
        if self.shape not in names():  # the surrogate's name, as everywhere else
            raise ValueError(f"unknown surrogate {self.shape!r} for shape; choose one of "
                             f"{', '.join(names())}")
        check_fields(self)
        require(0.0 < self.rate < 1.0, f"rate must be in (0, 1), got {self.rate}")
        if "tail" in self.conditions and shape_of(self.shape).name != "q_pseudospike":
            raise ValueError("the tail condition fits q of the q_pseudospike shape; set shape='q_pseudospike'")
        if "II" in self.conditions and "I" not in self.conditions:
            raise ValueError("Condition II sets the variance around Condition I's mean; include 'I' as well")
        require(self.match_batch >= 1, f"match_batch must be >= 1, got {self.match_batch}")
        require(self.match_steps >= 1, f"match_steps must be >= 1, got {self.match_steps}")
        require(self.match_samples >= 1, f"match_samples must be >= 1, got {self.match_samples}")
        require(math.isfinite(self.flat_tol) and self.flat_tol >= 0,
                f"flat_tol must be finite and >= 0, got {self.flat_tol}")


@dataclass
class Design:
    """A designed LIF/ALIF layer: its SG and (if Conditions I/II were applied) its recurrent weights.

    Attributes:
        shape: SG shape name; ``dampening`` / ``sharpness``: per-neuron ``[n]`` or scalar tensors; ``tail``: q.
        weight_hh: the recurrent weights ``[n, n]`` (post, pre) drawn by Conditions I+II, or None.
        reports: one :class:`ConditionReport` per applied condition.
    """

    shape: str
    dampening: Tensor
    sharpness: Tensor
    tail: float | None
    weight_hh: Tensor | None
    reports: list[ConditionReport] = field(default_factory=list)

    def spike(self) -> SpikeFunction:
        """The designed spike function (per-neuron γ/s broadcast over the last axis)."""
        dt = torch.get_default_dtype()
        return get(self.shape, self.dampening.to(dt), self.sharpness.to(dt), self.tail)

    def apply_(self, cell: nn.Module) -> nn.Module:
        """Write the design into ``cell`` (recurrent weights, spike function); returns the cell."""
        if self.weight_hh is not None:
            if self.weight_hh.shape != cell.weight_hh.shape:
                raise ValueError(f"design is for {list(self.weight_hh.shape)} recurrent weights, cell has "
                                 f"{list(cell.weight_hh.shape)}")
            with torch.no_grad():
                cell.weight_hh.copy_(self.weight_hh.to(cell.weight_hh.dtype) * cell.rec_mask)
        spike = self.spike().to(cell.weight_ih.device)
        cell.spike = spike
        return cell

    def report(self, condition: str) -> ConditionReport | None:
        return next((r for r in self.reports if r.condition == condition), None)

    def summary(self) -> str:
        lines = [f"SG {self.shape}: γ {_mean(self.dampening)}, s {_mean(self.sharpness)}"
                 + (f", q {self.tail:.4g}" if self.tail is not None else "")]
        lines += [r.summary() for r in self.reports]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "dampening_mean": float(self.dampening.mean()),
                "sharpness_mean": float(self.sharpness.mean()), "tail": self.tail,
                "per_neuron_dampening": self.dampening.dim() > 0, "per_neuron_sharpness": self.sharpness.dim() > 0,
                "weights_from_conditions": self.weight_hh is not None,
                "reports": [r.to_dict() for r in self.reports]}


def _mean(t: Tensor) -> str:
    return f"{t.item():.4g}" if t.dim() == 0 else f"{t.mean().item():.4g} (per neuron, sd {t.std().item():.2g})"


def measure_layer(cell: nn.Module, inputs: Tensor, *, weight_hh: Tensor | None = None,
                  max_samples: int = 2048) -> tuple[VoltageSamples, Tensor]:
    """Run a LIF/ALIF layer forward on ``inputs [B, T, input_size]`` (recurrent weights ``weight_hh`` if given, e.g.
    a design's, else the cell's) and return its activity: :class:`VoltageSamples` (``v − ϑ`` at every step, with
    ALIF's adapted threshold, and the firing rate per neuron) and the spikes ``[B, T, n]`` (the next layer's input).

    What the ``match`` fallback solves Condition IV / the tail on. Only the forward pass is needed: γ, s, q change
    the surrogate gradient, not the spikes, so the voltages do not depend on the values being fitted. At most
    ``max_samples`` voltage rows are kept (evenly strided over batch x time; the rate uses all): plenty for the
    mean of a bounded function, and the solvers' cost grows with it.
    """
    if not is_spiking(cell):
        raise ValueError(f"measure_layer needs a LIF/ALIF cell, got {type(cell).__name__}")
    if inputs.dim() != 3 or inputs.shape[2] != cell.input_size:
        raise ValueError(f"inputs must be [B, T, {cell.input_size}], got {list(inputs.shape)}")
    w = cell.weight_hh if weight_hh is None else weight_hh
    with torch.no_grad():
        w = (w.to(cell.weight_ih.dtype) * cell.rec_mask)
        b, steps = inputs.shape[0], inputs.shape[1]
        n = cell.hidden_size
        x = inputs.to(cell.weight_ih.dtype)
        v = x.new_zeros(b, n)
        z = x.new_zeros(b, n)
        a = x.new_zeros(b, n) if cell.adaptive else None
        us, zs = [], []
        for t in range(steps):
            z, v, a, thr = spiking_step(
                x[:, t], v, a, z, weight_ih=cell.weight_ih, weight_hh=w, bias=cell.bias, decay=cell.decay,
                decay_a=cell.decay_a if cell.adaptive else None, threshold=cell.threshold,
                beta=cell.beta if cell.adaptive else None, reset=cell.reset, detach_reset=cell.detach_reset,
                spike=cell.spike)
            us.append(v - thr)
            zs.append(z)
        u = torch.stack(us, 1).reshape(-1, n).to(torch.float64)
        if u.shape[0] > max_samples:
            u = u[torch.linspace(0, u.shape[0] - 1, max_samples).round().long()]
        spikes = torch.stack(zs, 1)
    return VoltageSamples(u, spikes.reshape(-1, n).mean(0).to(torch.float64)), spikes


def simulated_inputs(stats: TaskStats, batch: int, steps: int, size: int, *,
                     generator: torch.Generator | None = None) -> Tensor:
    """Inputs ``[batch, steps, size]`` with i.i.d. Gaussian entries of the task's mean and variance: the only facts
    about the input the mean-field conditions use (Condition II), for the builder, which has no data."""
    return stats.mean + math.sqrt(stats.var) * torch.randn(batch, steps, size, generator=generator,
                                                           dtype=torch.float64)


def stability_design(cell: nn.Module, task_stats: TaskStats, config: DesignConfig | None = None, *,
                     generator: torch.Generator | None = None, inputs: Tensor | None = None) -> Design:
    """Design one LIF/ALIF layer from the stability conditions (paper B, arXiv:2202.00282), without modifying ``cell``.

    Order, as in the papers' ``build``: Conditions I+II draw the recurrent weights; Conditions III and IV (or the
    tail fit) are then evaluated on those weights. ``task_stats`` are the statistics of this layer's input
    (:meth:`TaskStats.spikes` for layers fed by spikes). ``inputs [B, T, input_size]``: what the layer receives,
    simulated through it (:func:`measure_layer`) when ``on_no_root='match'`` so that Condition IV and the tail can
    be re-solved on its measured voltages.
    """
    cfg = config or DesignConfig()
    if not is_spiking(cell):
        raise ValueError(f"stability_design needs a LIF/ALIF cell, got {type(cell).__name__}")
    if not cell.recurrent and set(cfg.conditions) & {"I", "II", "III"}:
        raise ValueError("Conditions I-III read recurrent weights; this cell was built with recurrent=False")
    conds, reports = set(cfg.conditions), []
    p = LayerParams.from_cell(cell, cfg.rate)
    weight = None
    if "I" in conds:
        r1 = condition_i(p, cfg.rate)
        reports.append(r1)
        if "II" in conds:
            r2 = condition_ii(p, task_stats, r1.value)
            reports.append(r2)
            var = r2.value
        else:
            var = _masked_var(p)
        weight = draw_recurrent(p.mask, r1.value, var, generator=generator, as_in_code=cfg.as_in_code_variance)
        p = LayerParams.from_cell(cell, cfg.rate, weight_hh=weight)
    shape = shape_of(cfg.shape).name  # an alias is designed as its underlying shape
    base_gamma, base_sharp = float(cfg.dampening), float(cfg.sharpness)
    if cfg.shape in ALIASES:  # an alias's own default scale where a condition does not set it
        base_gamma, base_sharp = ALIASES[cfg.shape].scale(ALIASES[cfg.shape].default)
    if "III" in conds:
        r3 = condition_iii(p)
        reports.append(r3)
        gamma = r3.value if cfg.per_neuron_dampening else r3.value.mean()
    else:
        gamma = torch.tensor(base_gamma, dtype=torch.float64)
    sharp = torch.tensor(base_sharp, dtype=torch.float64)
    tail = cfg.tail
    samples = None
    if cfg.on_no_root == "match" and inputs is not None and conds & {"IV", "tail"}:
        samples, _ = measure_layer(cell, inputs, weight_hh=weight, max_samples=cfg.match_samples)
    if "tail" in conds:
        rt = fit_tail(p, gamma.expand(p.n), sharp.expand(p.n), rate=cfg.rate, bounds=cfg.tail_bounds,
                      on_no_root=cfg.on_no_root, cross_term=cfg.cross_term, samples=samples, default=cfg.tail,
                      flat_tol=cfg.flat_tol)
        reports.append(rt)
        tail = float(rt.value.mean())
    if "IV" in conds:
        r4 = condition_iv(p, shape, gamma.expand(p.n), tail, rate=cfg.rate, per_neuron=cfg.per_neuron_sharpness,
                          bounds=cfg.sharpness_bounds, on_no_root=cfg.on_no_root, cross_term=cfg.cross_term,
                          samples=samples, default=base_sharp, flat_tol=cfg.flat_tol)
        reports.append(r4)
        sharp = r4.value if cfg.per_neuron_sharpness else r4.value[0]
    if shape == "q_pseudospike" and tail is None:
        tail = shape_of(shape).default_tail
    if tail is not None and not math.isfinite(tail):
        raise ValueError(f"designed tail q is not finite ({tail})")
    return Design(shape, gamma, sharp, tail if shape == "q_pseudospike" else None, weight, reports)


def design_model(model: nn.Module, task_stats: TaskStats, config: DesignConfig | None = None, *,
                 seed: int = 0, seq_len: int | None = None, inputs: Tensor | None = None) -> list[Design | None]:
    """:func:`stability_design` for every spiking layer of a ``DeepRNN`` (None for other layers): the first layer
    with ``task_stats`` (the statistics of what it receives, i.e. after the encoder), deeper ones with
    Bernoulli(rate) spikes. Does not modify the model; see :func:`apply_design_`.

    With ``on_no_root='match'`` the stack is also simulated forward, layer by layer through the designed weights:
    the first layer on ``inputs [B, T, input_size]`` (e.g. a batch of the task's data after the encoder) or, without
    them, on :func:`simulated_inputs` (``match_batch`` sequences of ``seq_len`` steps, else ``match_steps``), each
    deeper layer on the spikes of the one below. The simulation draws from its own generator, so the weights are
    those the other choices draw."""
    cfg = config or DesignConfig()
    if not isinstance(model, HasCells):
        raise ValueError("design_model needs a model with .cells (a DeepRNN)")
    cells = model.cells
    gen = torch.Generator().manual_seed(seed)
    match = cfg.on_no_root == "match"
    sim_gen = torch.Generator().manual_seed(seed + 7919)  # the simulation's own stream (see the docstring)
    steps = int(seq_len) if seq_len is not None else cfg.match_steps
    if match and inputs is None and is_spiking(cells[0]):
        inputs = simulated_inputs(task_stats, cfg.match_batch, steps, cells[0].input_size, generator=sim_gen)
    layer_in = inputs if match else None
    designs: list[Design | None] = []
    for l, cell in enumerate(cells):
        if match and layer_in is None and is_spiking(cell):  # below it a layer the conditions do not simulate
            layer_in = (torch.rand(cfg.match_batch, steps, cell.input_size, generator=sim_gen,
                                   dtype=torch.float64) < cfg.rate).to(torch.float64)
        if not is_spiking(cell):
            designs.append(None)
            layer_in = None
            continue
        stats = task_stats if l == 0 else TaskStats.spikes(cfg.rate)
        d = stability_design(cell, stats, cfg, generator=gen, inputs=layer_in)
        designs.append(d)
        if match:
            _, layer_in = measure_layer(cell, layer_in, weight_hh=d.weight_hh)
    if all(d is None for d in designs):
        raise ValueError("the model has no LIF/ALIF layer to design")
    return designs


def apply_design_(model: nn.Module, designs: list[Design | None]) -> nn.Module:
    """Write :func:`design_model`'s designs into the model's cells; returns the model."""
    if len(designs) != len(model.cells):
        raise ValueError(f"{len(designs)} designs for {len(model.cells)} layers")
    for cell, d in zip(model.cells, designs, strict=True):
        if d is not None:
            d.apply_(cell)
    return model


__all__ = [
    "CONDITIONS",
    "Design",
    "DesignConfig",
    "apply_design_",
    "design_model",
    "draw_recurrent",
    "init_conditions_",
    "init_recurrent_",
    "is_spiking",
    "measure_layer",
    "simulated_inputs",
    "stability_design",
]
