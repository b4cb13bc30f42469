"""Stability predictions drawn into a sweep's figures: Condition III / IV / the tail fit (paper B,
arXiv:2202.00282) evaluated on the swept network at initialisation."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from .runner import flatten
from .spec import format_value
from .tables import SweepTable, is_number, unique

# --- predictions ------------------------------------------------------------------------------------------------
PREDICTABLE = {"III": "dampening", "IV": "sharpness", "tail": "tail"}


def predict(config: dict[str, Any], condition: str) -> float:
    """The stability prediction for the network of a run config at initialisation: the mean Condition III dampening
    (``"III"``), Condition IV sharpness (``"IV"``, for the run's SG shape and dampening) or fitted q-PseudoSpike tail
    (``"tail"``) over its LIF/ALIF layers, built by :func:`stablernn.models.build_model` (the first layer reads
    :func:`stablernn.snn.stats.task_stats`). See :func:`predict_with_status` for whether the condition had a root."""
    return predict_with_status(config, condition)[0]


def predict_with_status(config: dict[str, Any], condition: str) -> tuple[float, bool]:
    """:func:`predict` and whether the condition was solved exactly everywhere (False: for some neuron the equation
    has no root in the search range and the closest bound was used)."""
    import torch

    from ..data import load_task
    from ..models import build_model
    from ..snn.design import DesignConfig, design_model
    from ..snn.stats import task_stats
    from ..train.config import RunConfig

    if condition not in PREDICTABLE:
        raise ValueError(f"unknown prediction {condition!r}; choose one of {', '.join(PREDICTABLE)}")
    run = RunConfig.from_dict(config)
    torch.manual_seed(run.train.seed)
    data = load_task(run.data)
    model = build_model(run.model, data.info, seed=run.train.seed)
    stats = task_stats(data.info)
    m = run.model
    shape = "q_pseudospike" if condition == "tail" else m.surrogate
    cfg = DesignConfig(shape=shape, conditions=(condition,), dampening=m.dampening, sharpness=m.sharpness,
                       tail=m.tail if condition != "tail" else None)
    designs = [d for d in design_model(model, stats, cfg, seed=run.train.seed) if d is not None]
    attr = PREDICTABLE[condition]
    values = [float(getattr(d, attr).float().mean()) if attr != "tail" else float(d.tail) for d in designs]
    reports = [d.report(condition) for d in designs]
    solved = all(bool(r.solved.all()) for r in reports if r is not None)
    return sum(values) / len(values), solved


def resolve_predictions(table: SweepTable, spec: Any, fkeys: Sequence[str], hue: str | None, x: str | None = None
                        ) -> dict[tuple, tuple[float, str]]:
    """A figure's ``prediction`` option as ``{(facet values..., hue value or None): (x, label)}``: a number or
    ``{value, label}`` applies to every panel; ``{compute = "III" | "IV" | "tail"}`` is evaluated on the networks of
    the runs at initialisation, per panel and hue (mean over seeds), and drawn once per panel where every hue gets
    the same value. ``x``: the swept key, which the prediction replaces and so does not take part in it."""
    if spec is None:
        return {}
    if is_number(spec):
        spec = {"value": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"prediction must be a number or a table {{value = x, label = ...}} / {{compute = ...}}, "
                         f"got {spec!r}")
    if "value" in spec:
        val = float(spec["value"])
        lab = str(spec.get("label", f"prediction ({val:g})"))
        panels = unique(tuple(r.get(k) for k in fkeys) for r in table.rows) or [()]
        return {(*p, None): (val, lab) for p in panels}
    cond = spec.get("compute")
    if cond is None:
        raise ValueError("prediction table needs value = <number> or compute = \"III\" | \"IV\" | \"tail\"")
    base = str(spec.get("label", {"III": "Condition III", "IV": "Condition IV", "tail": "tail fit"}.get(cond, cond)))
    groups: dict[tuple, list[str]] = {}
    for r in table.rows:
        groups.setdefault((*(r.get(k) for k in fkeys), r.get(hue) if hue else None), []).append(r["name"])
    cache: dict[str, tuple[float, bool]] = {}
    values: dict[tuple, float] = {}
    unsolved: dict[tuple, bool] = {}
    for key, names in groups.items():
        nets: dict[str, tuple[float, bool]] = {}
        for n in names:
            ck = _network_key(table.configs[n], x)
            if ck not in cache:
                cache[ck] = predict_with_status(table.configs[n], cond)
            nets[ck] = cache[ck]
        values[key] = sum(v for v, _ in nets.values()) / len(nets)
        unsolved[key] = not all(ok for _, ok in nets.values())

    def text(who: str, v: float, keys: Iterable[tuple]) -> str:
        # a clipped value is the edge of the search range, not a solution: say so on the figure
        bound = ", no root: search bound" if any(unsolved[k] for k in keys) else ""
        return f"predicted{who} ({base}{bound}) = {v:.3g}"

    out: dict[tuple, tuple[float, str]] = {}
    for panel in unique(k[:-1] for k in values):
        these = {k: v for k, v in values.items() if k[:-1] == panel}
        vs = list(these.values())
        if len(vs) > 1 and max(vs) - min(vs) <= 1e-9 * max(1.0, abs(vs[0])):
            out[(*panel, None)] = (vs[0], text("", vs[0], these))
            continue
        for k, v in these.items():
            out[k] = (v, text(f" {format_value(k[-1])}" if hue else "", v, [k]))
    return out


def _network_key(config: dict[str, Any], swept: str | None) -> str:
    """What decides the network a prediction is made for: model and data options and the seed (not the swept
    value, not the training options)."""
    flat = flatten(config)
    keep = {k: v for k, v in flat.items() if (k.startswith(("model.", "data.")) or k == "train.seed") and k != swept}
    return json.dumps(keep, sort_keys=True, default=str)
