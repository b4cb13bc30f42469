"""``--stable auto``: one switch for a stable start with zero per-task tuning, and the data-dependent LSUV step.

:func:`resolve_stable` turns ``TrainConfig.stable = "auto"`` into explicit settings before anything is built, so
``config.json`` holds what ran and ``load_run`` rebuilds the same network:

- for the cells with a layer-norm option (Elman, GRU, LSTM: ``models.CLASSIC_KINDS``): layer norm in the cell
  (``ModelConfig.layer_norm``, arXiv:1607.06450) and no LSC, unless the run gives an LSC target of its own. Chosen by
  measurement (issue 16, docs/results.md "Where stability matters", 4-layer tanh RNN, 3 seeds): on the four tasks
  where the deep default fails, layer norm alone averages 81.9 % against 82.6 for the best arm of the stabilisers'
  grid per task (it is that best on three of them; copy T = 50: 27.8 vs 30.3 for LSC 1), 59.5 for LSC to radius 1 on
  every signal edge (the earlier rule), 40.8 for layer norm + LSC 1 and 21.4 for layer norm + LSC 1 without the time
  family. Why LSC does not combine with it: layer norm is scale-invariant, so while a pre-activation's spread is well
  above the norm's epsilon the radius does not depend on the scale of the weights feeding it (only on the norm's gain
  and the weights' direction), and where the spread is small (blank input steps, zero state) the norm's Jacobian grows
  as 1 / spread: on delayed XOR the first layer's time radius started at 13 and ended at 3·10^2-2·10^4 after LSC.
  Not alone for the ReLU cell: a 4-layer ReLU-RNN (delayed recall T = 20, lr 1e-2, 3 seeds) learned 41.1 % with it
  vs 75.8 % at default (the earlier LSC rule: 14.0, one seed), so the ReLU cell also gets the identity recurrent
  init (IRNN, arXiv:1504.00941, the init designed for it) when its ``rec_init`` is the default: 100 % on all three
  seeds, with or without layer norm (``experiments/stability_auto_relu_irnn.toml``); IRNN is not used for tanh,
  where it measured 44.7 % over the six tasks;
- for every other cell (LIF, ALIF, LRU, Li-GRU, ...): LSC pre-training to the signal-preserving targets of
  :func:`stablernn.lsc.theory.stable_targets` (encoder, depth and decoder at radius 1; the time family left alone,
  these cells have a clock of their own: leaks, LRU eigenvalues, gates), written into the config as an explicit
  per-family dict; the run's own ``[lsc]`` options are kept when given (its target too, unless it is the default
  ``"auto"``). Chosen by measurement (issue 16,
  docs/results.md "Where stability matters"): the earlier ``"theory"`` split (depth ~0.2) cut the gradient reaching
  the first step of a 4x32 tanh RNN at T = 50 to 10^-4.2 and left a 4-layer GRU (T = 50) and ReLU-RNN (T = 20) at
  chance where their default or IRNN nets learn;
- the activity guard on (``LSCConfig.activity``; a user's explicit ``None`` is kept);
- for LIF/ALIF nets without conditions of their own: the weight part of paper B's stability design (arXiv:2202.00282,
  Sec. 3), Conditions I and II, applied by the builder; where Condition II has no solution for the task (it asks
  for a negative recurrent variance when the input current is weak, e.g. an ALIF on digits at threshold 1), none.
  Chosen by measurement (docs/results.md, "Condition ablation", 2x32 LIF on digits, best lr): I+II 67.6 vs none
  65.0, while adding III (64.0), I+III (60.5), I alone (62.5) and IV (42.8, its no-root fallback at τ = 20) were
  worse than no conditions.

:func:`lsuv_for_run` applies ``ModelConfig.lsuv`` (LSUV, arXiv:1511.06422) on the first training batch, before LSC.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..data.base import TaskInfo
from ..inits import lsuv_init_
from ..lsc.config import LSCConfig
from ..lsc.theory import stable_targets
from ..models import CLASSIC_KINDS, ModelConfig, build_model
from .config import RunConfig

SPIKING_CELLS = ("lif", "alif")
LAYER_NORM_CELLS: tuple[str, ...] = CLASSIC_KINDS  # the cells --stable auto gives layer norm (and no LSC)
IDENTITY_INIT_CELLS: tuple[str, ...] = ("relu_rnn",)  # ... and, on top, the identity recurrent init (IRNN)
AUTO_CONDITIONS: tuple[str, ...] = ("I", "II")
FALLBACK_CONDITIONS: tuple[str, ...] = ()


def resolve_stable(run: RunConfig, info: TaskInfo | None = None) -> RunConfig:
    """``run`` with ``train.stable = "auto"`` expanded into explicit LSC / design settings (a copy; ``run`` itself
    when ``stable`` is ``"off"``). ``info`` (the task) lets a spiking net check that Condition II has a solution
    there (a trial build; the global RNG is left as it was)."""
    stable = run.train.stable
    if stable == "off":
        return run
    if stable != "auto":
        raise ValueError(f"unknown train.stable {stable!r}; choose off or auto")
    if run.model.cell == "ffn":
        raise ValueError("--stable auto is for recurrent nets; for an FFN use --lsc 1.0 (one path per layer)")
    if run.model.cell in LAYER_NORM_CELLS:  # layer norm in the cell; LSC only when the run names a target
        lsc_own = run.lsc if run.lsc is not None and run.lsc.target != "auto" else None
        model = dataclasses.replace(run.model, layer_norm=True)
        if model.cell in IDENTITY_INIT_CELLS and model.rec_init == "default":
            model = dataclasses.replace(model, rec_init="identity")
        return dataclasses.replace(run, lsc=lsc_own, model=model)
    lsc = run.lsc if run.lsc is not None else LSCConfig()
    if lsc.target == "auto":  # the user named no target: signal-preserving targets (lsc/theory.py stable_targets)
        targets = stable_targets(run.model.layers, run.model.cell)
        families = tuple(f for f in lsc.families if f in targets)
        if not families:
            raise ValueError(f"--stable auto pre-trains {sorted(targets)} for a {run.model.cell} net, but the LSC "
                             f"families are limited to {list(lsc.families)}; drop the families option or give a target")
        lsc = dataclasses.replace(lsc, target={f: targets[f] for f in families}, families=families)
    model = run.model
    if model.cell in SPIKING_CELLS and not model.conditions:
        model = dataclasses.replace(model, conditions=_spiking_conditions(model, info, run.train.seed))
    return dataclasses.replace(run, lsc=lsc, model=model)


def _spiking_conditions(model: ModelConfig, info: TaskInfo | None, seed: int) -> tuple[str, ...]:
    """Conditions I and II when Condition II is solvable on the task (or no task is given), else none."""
    if info is None:
        return AUTO_CONDITIONS
    with torch.random.fork_rng():
        try:
            build_model(dataclasses.replace(model, conditions=AUTO_CONDITIONS), info, seed=seed)
        except ValueError as e:
            if "Condition II" not in str(e):
                raise
            return FALLBACK_CONDITIONS
    return AUTO_CONDITIONS


def lsuv_for_run(run: RunConfig, model: nn.Module, batches: Iterable[Any], device: Any = None
                 ) -> list[dict[str, Any]]:
    """LSUV on the first training batch's inputs ``x [B, T, F]`` when ``run.model.lsuv``; returns the history rows
    (one, or none when LSUV is off)."""
    if not run.model.lsuv:
        return []
    first = next(iter(batches), None)
    if first is None:
        raise ValueError("lsuv needs at least one training batch")
    x = first[0] if isinstance(first, (tuple, list)) else first
    with torch.no_grad():
        before = lsuv_init_(model, x.to(device) if device is not None else x)
    return [{"phase": "lsuv", "var_before": [None if v != v else round(v, 6) for v in before]}]  # nan: skipped


__all__ = ["AUTO_CONDITIONS", "FALLBACK_CONDITIONS", "IDENTITY_INIT_CELLS", "LAYER_NORM_CELLS", "lsuv_for_run",
           "resolve_stable"]
