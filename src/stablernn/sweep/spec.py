"""Sweep specs: a TOML file or dict of a grid of training runs, parsed, checked and expanded into named
:class:`RunConfig` s (the runner is :mod:`stablernn.sweep.runner`).

A spec::

    name = "lsc_quick"
    out_dir = "runs/lsc_quick"
    seeds = [0, 1, 2]                      # sets train.seed (and lsc.seed when LSC is on); innermost loop

    [base.model]                           # a nested RunConfig dict: [base.model], [base.data], [base.train],
    width = 32                             # [base.lsc] (LSC on for every run unless an lsc axis says "none")
    [base.data]
    task = "digits"
    [base.train]
    epochs = 5

    [grid]                                 # cartesian product, in this order
    "model.cell" = ["lstm", "gru"]
    "lsc.target" = ["none", 1.0, 0.5]      # "none" on any lsc.* key: no LSC pre-training for that run

    [[zip]]                                # lists that vary together (equal lengths), crossed with the grid
    "train.lr" = [1e-2, 1e-3]
    "train.epochs" = [5, 10]

    [lsc_options]                          # LSC fields for the runs with LSC (unlike [base.lsc], never switches
    max_steps = 30                         # LSC on by itself; ``--set lsc.field=value`` lands here without [base.lsc])

    [resources]                            # per run, for --ray (and the cluster scheduler)
    cpus = 1
    gpus = 0

    [report]                               # read by ``stablernn report`` (see report.py)

The string ``"none"`` stands for ``None`` (TOML has no null), in grid values (``"model.tail" = ["none", 1.5]``) and
in ``[base.*]`` tables (``clip_norm = "none"``). Run names are built from the varied values
(``cell-lstm_lsc-0.5_s0``): readable, filesystem-safe, deterministic and unique.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.config import DataConfig
from ..lsc.config import LSCConfig
from ..models import ModelConfig
from ..train.config import RunConfig, TrainConfig, read_table_file

SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "lsc": LSCConfig}
SPEC_KEYS = {"name", "description", "out_dir", "base", "grid", "zip", "seeds", "seed_keys", "resources", "report",
             "lsc_options"}
NONE = "none"  # TOML has no null: this string stands for None in grid values
# display options: changing them never changes a run (fit ignores them when it compares configs)
_MAX_NAME = 120


@dataclass
class Resources:
    """What one run asks the scheduler for (Ray task options); ``cpus`` also sets its torch threads."""

    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if not (self.cpus > 0 and math.isfinite(self.cpus)):
            raise ValueError(f"[resources] cpus must be > 0, got {self.cpus}")
        if not (self.gpus >= 0 and math.isfinite(self.gpus)):
            raise ValueError(f"[resources] gpus must be >= 0, got {self.gpus}")


@dataclass
class SweepSpec:
    """A grid of runs. ``base``: nested RunConfig dict; ``grid``: ``{dotted key: values}`` crossed in order;
    ``zips``: groups ``{dotted key: values}`` whose lists vary together; ``seeds``: innermost axis, written to every
    key of ``seed_keys`` (``lsc.*`` keys only where LSC is on); ``report``: options for the report (opaque here)."""

    name: str
    out_dir: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    zips: list[dict[str, list[Any]]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    seed_keys: tuple[str, ...] = ("train.seed", "lsc.seed")
    resources: Resources = field(default_factory=Resources)
    report: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    lsc_options: dict[str, Any] = field(default_factory=dict)  # LSC fields applied where LSC is on, never turning it on

    @property
    def axes(self) -> list[str]:
        """Every varied dotted key (grid first, then zip groups), seeds excluded."""
        return [*self.grid, *(k for z in self.zips for k in z)]

    def to_dict(self) -> dict[str, Any]:
        """The spec in the TOML layout (``zip`` for ``zips``), JSON-ready."""
        return {"name": self.name, "description": self.description, "out_dir": self.out_dir, "base": self.base,
                "grid": self.grid, "zip": self.zips, "seeds": self.seeds, "seed_keys": list(self.seed_keys),
                "resources": dataclasses.asdict(self.resources), "report": self.report,
                "lsc_options": self.lsc_options}


@dataclass
class SweepRun:
    """One run of a sweep: its config, the values of the varied keys (seed apart) and the seed."""

    name: str
    config: RunConfig
    varied: dict[str, Any]
    seed: int

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir


# --- spec -------------------------------------------------------------------------------------------------------
def load_spec(source: str | Path | dict[str, Any], *, out_dir: str | None = None, seeds: Sequence[int] | None = None,
              overrides: Sequence[str] = ()) -> SweepSpec:
    """Read a spec from a TOML/JSON file or a dict; ``out_dir`` / ``seeds`` replace the spec's, ``overrides``
    (``"train.epochs=1"``) set base values."""
    if isinstance(source, dict):
        d, where = copy.deepcopy(source), "<dict>"
    else:
        path = Path(source)
        d = read_table_file(path, "sweep spec")
        where = str(path)
        d.setdefault("name", path.stem)
    if out_dir is not None:
        d["out_dir"] = out_dir
    if seeds is not None:
        d["seeds"] = list(seeds)
    for item in overrides:
        key, value = parse_override(item)
        section, fname = split_key(key)
        if section == "lsc" and d.get("base", {}).get("lsc") is None:
            # an LSC option must not switch LSC on for the runs that are meant to run without it
            d.setdefault("lsc_options", {})[fname] = value
        else:
            d.setdefault("base", {}).setdefault(section, {})[fname] = value
    return parse_spec(d, where)


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.epochs=1"`` -> ``("train.epochs", 1)``; the value is read as a TOML value when it parses as one
    (numbers, booleans, ``[lists]``), else taken as a string."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.field=value, e.g. train.epochs=1")
    key, raw = (s.strip() for s in item.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def split_key(key: str) -> tuple[str, str]:
    """``"model.cell"`` -> ``("model", "cell")``, checked against the config dataclasses."""
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ValueError(f"bad key {key!r}: use section.field with section one of {', '.join(SECTIONS)} "
                         "(e.g. model.cell, train.lr, lsc.target)")
    section, fname = parts
    names = {f.name for f in dataclasses.fields(SECTIONS[section])}
    if fname not in names:
        raise ValueError(f"unknown field {fname!r} in key {key!r}; [{section}] has: {', '.join(sorted(names))}")
    return section, fname


def parse_spec(d: dict[str, Any], where: str = "<dict>") -> SweepSpec:
    """Validate a spec dict (the TOML layout) and every run it expands to; errors name the spec and the key."""
    unknown = set(d) - SPEC_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown spec key(s) {sorted(unknown)}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    if "out_dir" not in d:
        raise ValueError(f"{where}: the spec needs out_dir = \"runs/<sweep name>\" (where its runs are written)")
    base = d.get("base", {})
    if not isinstance(base, dict):
        raise ValueError(f"{where}: [base] must be a table of [base.model], [base.data], [base.train], [base.lsc]")
    bad = set(base) - set(SECTIONS)
    if bad:
        raise ValueError(f"{where}: unknown [base] section(s) {sorted(bad)}; allowed: {', '.join(SECTIONS)} (name "
                         "and out_dir are set by the sweep)")
    for section, table in base.items():
        if not isinstance(table, dict):
            raise ValueError(f"{where}: [base.{section}] must be a table of field = value, got {table!r}")
    grid = d.get("grid", {})
    if not isinstance(grid, dict):
        raise ValueError(f"{where}: [grid] must be a table of \"section.field\" = [values]")
    zips = d.get("zip", [])
    if isinstance(zips, dict):
        zips = [zips]
    if not isinstance(zips, list) or not all(isinstance(z, dict) for z in zips):
        raise ValueError(f"{where}: [[zip]] must be tables of \"section.field\" = [values] that vary together")
    seen: set[str] = set()
    axes = [(kv, True) for kv in grid.items()] + [(kv, False) for z in zips for kv in z.items()]
    for (key, values), unique in axes:
        _check_axis(key, values, where, unique)
        if key in seen:
            raise ValueError(f"{where}: key {key!r} is varied twice (in [grid] and/or [[zip]] groups); keep one")
        seen.add(key)
    for k, z in enumerate(zips):
        lengths = {key: len(v) for key, v in z.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{where}: [[zip]] group {k + 1} has lists of different lengths {lengths}; lists that "
                             "vary together must be equally long")
        points = [json.dumps(p, sort_keys=True) for p in zip(*z.values(), strict=True)]
        if len(set(points)) != len(points):
            raise ValueError(f"{where}: [[zip]] group {k + 1} repeats a combination of values")
    seeds = d.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                              for s in seeds):
        raise ValueError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: seeds has duplicates: {seeds}")
    seed_keys = d.get("seed_keys", ("train.seed", "lsc.seed"))
    if not isinstance(seed_keys, (list, tuple)) or not all(isinstance(k, str) for k in seed_keys):
        raise ValueError(f"{where}: seed_keys must be a list of \"section.field\" keys, got {seed_keys!r}")
    seed_keys = tuple(seed_keys)
    for key in seed_keys:
        split_key(key)
        if key in seen:
            raise ValueError(f"{where}: {key!r} is set by seeds (seed_keys) and cannot also be a grid axis")
    if not isinstance(d.get("resources", {}), dict):
        raise ValueError(f"{where}: [resources] must be a table (cpus, gpus)")
    try:
        resources = Resources(**d.get("resources", {}))
    except TypeError as e:
        raise ValueError(f"{where}: bad [resources] table ({e}); allowed: cpus, gpus") from None
    report = d.get("report", {})
    if not isinstance(report, dict):
        raise ValueError(f"{where}: [report] must be a table")
    lsc_options = d.get("lsc_options", {})
    if not isinstance(lsc_options, dict):
        raise ValueError(f"{where}: [lsc_options] must be a table of LSC fields")
    for key in lsc_options:
        split_key(f"lsc.{key}")
    spec = SweepSpec(name=str(d.get("name", "sweep")), out_dir=str(d["out_dir"]), base=base, grid=dict(grid),
                     zips=[dict(z) for z in zips], seeds=list(seeds), seed_keys=seed_keys, resources=resources,
                     report=report, description=str(d.get("description", "")), lsc_options=dict(lsc_options))
    expand(spec)  # every run must be a valid RunConfig before anything trains
    return spec


def _check_axis(key: str, values: Any, where: str, unique: bool = True) -> None:
    if key == "lsc":
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: axis 'lsc' needs a non-empty list of \"none\" or LSC tables")
        for v in values:
            if v != NONE and not isinstance(v, dict):
                raise ValueError(f"{where}: axis 'lsc' values must be \"none\" or tables like {{target = 0.5}}, "
                                 f"got {v!r}")
        return
    try:
        split_key(key)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: axis {key!r} needs a non-empty list of values, got {values!r}")
    if unique and len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise ValueError(f"{where}: axis {key!r} repeats a value: {values}")


# --- expansion --------------------------------------------------------------------------------------------------
def expand(spec: SweepSpec) -> list[SweepRun]:
    """Every run of the spec, grid axes in order, then zip groups, seeds innermost; names are unique."""
    axes: list[list[dict[str, Any]]] = []
    for key, values in spec.grid.items():
        axes.append([{key: v} for v in values])
    for z in spec.zips:
        keys = list(z)
        axes.append([dict(zip(keys, vals, strict=True)) for vals in zip(*z.values(), strict=True)])
    combos = [dict(kv for part in combo for kv in part.items()) for combo in itertools.product(*axes)]
    labels = short_labels(spec.axes)
    runs: list[SweepRun] = []
    for varied in combos:
        stem = config_stem(varied, labels)
        for seed in spec.seeds:
            name = f"{stem}_s{seed}" if stem else f"s{seed}"
            cfg = build_config(spec, varied, seed, name)
            runs.append(SweepRun(name, cfg, copy.deepcopy(varied), seed))
    _dedupe_names(runs)
    return runs


def build_config(spec: SweepSpec, varied: dict[str, Any], seed: int, name: str) -> RunConfig:
    """The RunConfig of one grid point: base, then the varied values, then the seed."""
    d: dict[str, Any] = {sec: {k: None if v == NONE else v for k, v in vals.items()} if isinstance(vals, dict)
                         else vals for sec, vals in copy.deepcopy(spec.base).items()}
    lsc_values: dict[str, Any] = {}
    lsc_axis = False  # varying any LSC option implies LSC is on (unless a value is "none")
    for key, value in varied.items():
        section, fname = ("lsc", "") if key == "lsc" else split_key(key)
        if section == "lsc":
            lsc_axis = True
            if value != NONE:
                lsc_values.update(value if key == "lsc" else {fname: value})
            continue
        d.setdefault(section, {})[fname] = None if value == NONE else value
    if (d.get("lsc") is not None or lsc_axis) and not _lsc_disabled(varied):
        d["lsc"] = {**(d.get("lsc") or {}), **spec.lsc_options, **lsc_values}
    else:
        d.pop("lsc", None)
    for key in spec.seed_keys:
        section, fname = split_key(key)
        if section == "lsc" and "lsc" not in d:
            continue
        d.setdefault(section, {})[fname] = seed
    d["name"], d["out_dir"] = name, spec.out_dir
    try:
        return RunConfig.from_dict(d)
    except ValueError as e:
        raise ValueError(f"run {name}: {e}") from None


def _lsc_disabled(varied: dict[str, Any]) -> bool:
    """Any ``lsc`` / ``lsc.*`` axis set to "none" switches LSC off for that run."""
    return any(v == NONE for k, v in varied.items() if k == "lsc" or k.startswith("lsc."))


def short_labels(keys: Sequence[str]) -> dict[str, str]:
    """Name fragments of varied keys: the field name (``lr``), ``lsc`` for ``lsc.target``, the section-prefixed
    name where two sections share a field (``data-seq_len``)."""
    fields = [k.split(".")[-1] for k in keys]
    out = {}
    for key, fname in zip(keys, fields, strict=True):
        if key in ("lsc", "lsc.target"):
            out[key] = "lsc"
        elif fields.count(fname) > 1 or fname == "lsc":
            out[key] = key.replace(".", "-")
        else:
            out[key] = fname
    return out


def format_value(v: Any) -> str:
    """A value as it appears in names and tables: ``0.001``, ``1e-05``, ``none``, ``target-0.5`` for a table."""
    if v is None or v == NONE:
        return NONE
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return "-".join(f"{k}-{format_value(x)}" for k, x in sorted(v.items()))
    if isinstance(v, (list, tuple)):
        return "-".join(format_value(x) for x in v)
    return str(v)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"


def config_stem(varied: dict[str, Any], labels: dict[str, str]) -> str:
    """The seed-free part of a run name: ``label-value`` per varied key, joined by ``_``."""
    return "_".join(f"{labels[k]}-{_safe(format_value(v))}" for k, v in varied.items())


def _dedupe_names(runs: list[SweepRun]) -> None:
    """Shorten over-long names and make colliding ones unique with a hash of their varied values."""
    for r in runs:
        if len(r.name) > _MAX_NAME:
            r.name = _with_hash(r.name[: _MAX_NAME - 10], r)
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    for r in runs:
        if counts[r.name] > 1:
            r.name = _with_hash(r.name, r)
    if len({r.name for r in runs}) != len(runs):  # a hash collision would be astronomically unlikely
        raise ValueError("could not give the runs unique names; shorten the varied values")
    for r in runs:
        r.config.name = r.name


def _with_hash(stem: str, run: SweepRun) -> str:
    h = hashlib.sha1(json.dumps([run.varied, run.seed], sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{stem}_{h}"
