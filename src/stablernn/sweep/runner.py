"""Grids of training runs: a sweep spec (TOML file or dict) expanded into named :class:`RunConfig` s, and a runner
that trains them serially, in local worker processes, or as Ray tasks.

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

Each run writes ``out_dir/<name>/`` through :func:`stablernn.train.fit` plus ``status.json`` (``status``: running,
done, failed, interrupted; ``error``) and, for a failure, ``traceback.txt``. ``out_dir/sweep.json`` indexes the
sweep (the spec, and every run's name, varied values, seed and status) and is rewritten after every finished run.
Rerunning a sweep skips finished runs, resumes interrupted ones from their checkpoint, and leaves failed ones alone
unless asked to retry them.

Concurrency: a run is trained only under its lock (:class:`stablernn.io.RunLock`, an OS file lock on
``<run>/.lock`` that the kernel frees when the holder dies). "running" means "a live process holds the lock", never
just a status string, so a run whose runner was killed reads as interrupted and is resumed. Two sweeps on one
``out_dir`` (one machine, or several on storage with working ``flock``, e.g. NFSv4) skip each other's locked runs
and so share the work. Local workers exit when the sweep process dies (parent-death signal and a watchdog thread);
Ray tasks belong to their driver, so a killed driver's runs are cancelled by Ray and resume on the next run of the
sweep.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import socket
import time
import tomllib
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.config import DataConfig
from ..errors import MissingDependencyError, RunBusyError
from ..io import RunLock, atomic_write_json, atomic_write_text, is_locked
from ..lsc.config import LSCConfig
from ..models import ModelConfig
from ..train.config import RunConfig, TrainConfig, read_table_file

SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "lsc": LSCConfig}
SPEC_KEYS = {"name", "description", "out_dir", "base", "grid", "zip", "seeds", "seed_keys", "resources", "report",
             "lsc_options"}
NONE = "none"  # TOML has no null: this string stands for None in grid values
STATUS_FILE, TRACEBACK_FILE, INDEX_FILE = "status.json", "traceback.txt", "sweep.json"
# display options: changing them never changes a run (fit ignores them when it compares configs)
_DISPLAY_FIELDS = {("train", "progress"), ("train", "threads"), ("lsc", "progress")}
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


# --- run state --------------------------------------------------------------------------------------------------
def run_status(run_dir: Path) -> str:
    """``done`` (final.json present); ``running`` only while a live process holds the run's lock (a status string
    alone is never trusted: a killed runner cannot update it); ``failed`` as recorded; ``interrupted`` for a run
    recorded as interrupted or as running by a process that is gone; else ``partial`` (a checkpoint exists) or
    ``pending``."""
    run_dir = Path(run_dir)
    if (run_dir / "final.json").exists():
        return "done"
    if is_locked(run_dir):
        return "running"
    st = read_json(run_dir / STATUS_FILE)
    if st and st.get("status") == "failed":
        return "failed"
    if st and st.get("status") in ("interrupted", "running"):
        return "interrupted"
    return "partial" if (run_dir / "checkpoint.pt").exists() else "pending"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys where two run configs differ (display options ignored), as ``key: old -> new``."""
    a, b = flatten(old), flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        parts = tuple(key.split(".")[:2])
        if parts in _DISPLAY_FIELDS or key in ("name", "out_dir"):
            continue
        va, vb = _norm(a.get(key)), _norm(b.get(key))
        if va != vb:
            out.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v, default=list))


def flatten(d: dict[str, Any]) -> dict[str, Any]:
    """A run config as ``{"model.cell": "gru", ..., "lsc": None}``: sections split into ``section.field`` keys (one
    level only, so a per-family LSC target stays one value); top-level values and None sections kept as they are."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update({f"{k}.{f}": x for f, x in v.items()})
        else:
            out[k] = v
    return out


def check_out_dir(runs: Iterable[SweepRun]) -> None:
    """Refuse to start when a run directory holds a run with another config (fit would refuse it run by run)."""
    for r in runs:
        old = read_json(r.run_dir / "config.json")
        if old is None:
            continue
        diff = config_differences(old, r.config.to_dict())
        if diff:
            raise ValueError(f"run directory {r.run_dir} holds a run made with a different config ("
                             + "; ".join(diff[:4]) + (" ..." if len(diff) > 4 else "")
                             + "); use another --out-dir, or delete that run directory to train it again")


# --- one run ----------------------------------------------------------------------------------------------------
def execute_run(config: dict[str, Any], threads: int | None = None, retry_failed: bool = True) -> dict[str, Any]:
    """Train one run (a RunConfig dict) under its lock and record the outcome in its ``status.json``; never raises
    for a failed run (its error and ``traceback.txt`` are written instead). Returns ``{"name", "status", "error",
    "seconds", "trained", metrics...}``; ``trained`` is False when the run was skipped because another live
    process holds its lock (``status`` "running") or finished it meanwhile (``status`` "done", or "failed" when
    ``retry_failed`` is off). Top-level so worker processes and Ray tasks can import it."""
    run = RunConfig.from_dict(config)
    run_dir = run.run_dir
    try:
        lock = RunLock(run_dir).acquire()
    except RunBusyError:
        return {"name": run.name, "status": "running", "error": None, "trained": False}
    try:
        # another sweep may have finished (or failed) this run since it was planned; run_status would say
        # "running" now, as we hold the lock, so read the files themselves
        recorded = (read_json(run_dir / STATUS_FILE) or {}).get("status")
        now = "done" if (run_dir / "final.json").exists() else "failed" if recorded == "failed" else None
        if now == "done" or (now == "failed" and not retry_failed):
            return {"name": run.name, "status": now, "error": None, "trained": False}
        return {**_execute_locked(run, threads), "trained": True}
    finally:
        lock.release()


def _execute_locked(run: RunConfig, threads: int | None) -> dict[str, Any]:
    import torch

    from ..train import fit

    run.train.progress = False
    if run.lsc is not None:
        run.lsc.progress = False
    if threads:
        torch.set_num_threads(int(threads))
        run.train.threads = int(threads)
    run_dir = run.run_dir
    t0 = time.time()
    started = {"status": "running", "host": socket.gethostname(), "pid": os.getpid(), "started": _now()}
    atomic_write_json(run_dir / STATUS_FILE, started)
    try:
        final = fit(run)
    except KeyboardInterrupt:
        atomic_write_json(run_dir / STATUS_FILE, {**started, "status": "interrupted", "ended": _now()})
        raise
    except Exception as e:  # a failed run must not stop the sweep: record it and go on
        err = f"{type(e).__name__}: {e}"
        atomic_write_text(run_dir / TRACEBACK_FILE, traceback.format_exc())
        out = {**started, "status": "failed", "error": err, "error_type": type(e).__name__, "ended": _now(),
               "seconds": round(time.time() - t0, 3)}
        atomic_write_json(run_dir / STATUS_FILE, out)
        return {"name": run.name, **out}
    (run_dir / TRACEBACK_FILE).unlink(missing_ok=True)
    out = {**started, "status": "done", "error": None, "ended": _now(), "seconds": round(time.time() - t0, 3)}
    atomic_write_json(run_dir / STATUS_FILE, out)
    metrics = {k: v for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"name": run.name, **out, **metrics}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# --- the runner -------------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What a sweep call did: per-run status and the counts."""

    out_dir: Path
    statuses: dict[str, str]
    ran: list[str]
    skipped: list[str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)

    def summary(self) -> str:
        n = len(self.statuses)
        parts = [f"{self.count(s)} {s}" for s in ("done", "running", "failed", "interrupted", "partial", "pending")
                 if self.count(s)]
        return (f"{n} runs in {self.out_dir}: " + ", ".join(parts)
                + f" (trained now: {len(self.ran)}, skipped: {len(self.skipped)})")


def plan(spec: SweepSpec, *, retry_failed: bool = False, only: str | None = None
         ) -> tuple[list[SweepRun], list[SweepRun], list[SweepRun]]:
    """``(all runs, runs to train, runs skipped)``; ``only``: a regex runs' names must match to be trained."""
    runs = expand(spec)
    todo, skip = [], []
    pattern = re.compile(only) if only else None
    for r in runs:
        st = run_status(r.run_dir)
        wanted = pattern is None or pattern.search(r.name) is not None
        if not wanted or st in ("done", "running") or (st == "failed" and not retry_failed):
            skip.append(r)
        else:
            todo.append(r)
    return runs, todo, skip


def write_index(spec: SweepSpec, runs: Sequence[SweepRun]) -> Path:
    """``out_dir/sweep.json``: the spec and every run's name, varied values, seed and current status."""
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = {"name": spec.name, "updated": _now(), "spec": spec.to_dict(), "axes": spec.axes,
             "seed_keys": list(spec.seed_keys),
             "runs": [{"name": r.name, "varied": r.varied, "seed": r.seed, "status": run_status(r.run_dir)}
                      for r in runs]}
    path = out / INDEX_FILE
    atomic_write_json(path, index)
    return path


def run_sweep(spec: SweepSpec, *, workers: int = 1, use_ray: bool = False, ray_address: str | None = None,
              ray_init: dict[str, Any] | None = None, threads: int | None = None, retry_failed: bool = False,
              only: str | None = None, progress: bool = True,
              on_result: Callable[[dict[str, Any]], None] | None = None) -> SweepResult:
    """Train every run of ``spec`` not yet done and return what happened.

    ``workers > 1``: that many local processes (spawn), one torch thread each unless ``threads``. ``use_ray``: each
    run is a Ray task asking ``spec.resources``; ``ray_address`` (or ``$RAY_ADDRESS``) joins a cluster, otherwise a
    local Ray starts (``ray_init``: extra ``ray.init`` arguments, e.g. ``{"num_cpus": 2}``). On a cluster,
    ``out_dir`` must be on storage every node sees. A KeyboardInterrupt stops the sweep; finished runs are kept and a
    rerun resumes the rest.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    ray = _import_ray() if use_ray else None  # a missing ray is reported before anything is written
    runs, todo, skipped = plan(spec, retry_failed=retry_failed, only=only)
    check_out_dir(todo)
    write_index(spec, runs)
    results: dict[str, dict[str, Any]] = {}
    bar = _SweepBar(len(todo), spec.name, progress)

    def done(res: dict[str, Any]) -> None:
        results[res["name"]] = res
        bar.update(res)
        write_index(spec, runs)  # sweep.json tells the truth after every run, also if this process dies next
        if on_result is not None:
            on_result(res)

    try:
        if todo:
            configs = [r.config.to_dict() for r in todo]
            if ray is not None:
                _run_ray(ray, configs, spec.resources, ray_address, ray_init or {}, threads, retry_failed, done)
            elif workers > 1:
                _run_processes(configs, workers, threads or 1, retry_failed, done)
            else:
                for cfg in configs:
                    done(execute_run(cfg, threads, retry_failed))
    finally:
        bar.close()
        write_index(spec, runs)
    statuses = {r.name: run_status(r.run_dir) for r in runs}
    ran = [n for n, res in results.items() if res.get("trained", True)]
    skipped_names = [r.name for r in skipped] + [n for n, res in results.items() if not res.get("trained", True)]
    return SweepResult(Path(spec.out_dir), statuses, ran, skipped_names, results)


class _SweepBar:
    """One tqdm bar over the sweep's runs, with done/failed counts; a line per failure."""

    def __init__(self, total: int, name: str, enabled: bool):
        self.bar, self.counts = None, {"done": 0, "failed": 0}
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"sweep {name}", unit="run", dynamic_ncols=True)

    def update(self, res: dict[str, Any]) -> None:
        key = res["status"] if res.get("trained", True) else "skipped"
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.bar is not None:
            if res["status"] == "failed":
                self.bar.write(f"failed: {res['name']}: {res.get('error')}")
            self.bar.set_postfix(self.counts, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _init_worker(threads: int, parent: int) -> None:
    """Worker set-up: torch threads, and dying with the sweep process however it dies (no orphans)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)


def _die_with_parent(parent: int, poll: float = 0.5) -> None:
    """Exit when ``parent`` is gone: the kernel's parent-death signal on Linux (``prctl(PR_SET_PDEATHSIG)``), and a
    daemon thread that polls ``os.getppid()`` everywhere (it also covers a parent that died before the prctl).
    A run cut short this way keeps its checkpoint; its lock dies with the worker, so a rerun resumes it."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl here: the thread below still works
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(70)  # the sweep that started us is gone: stop now rather than train runs no one collects

    if os.getppid() != parent:
        os._exit(70)
    threading.Thread(target=watch, name="stablernn-parent-watch", daemon=True).start()


def _run_processes(configs: list[dict[str, Any]], workers: int, threads: int, retry_failed: bool,
                   done: Callable[[dict[str, Any]], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and any CUDA state
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, os.getpid())) as pool:
        futures = {pool.submit(execute_run, cfg, threads, retry_failed): cfg["name"] for cfg in configs}
        try:
            for fut in as_completed(futures):
                done(fut.result())
        except BrokenProcessPool:
            raise RuntimeError("a worker process died (out of memory or killed); finished runs are kept, rerun "
                               "the same command to resume the rest") from None
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            raise


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--ray needs the ray package: pip install 'stablernn[ray]' (or pip install "
                                     "ray), or run without --ray (--workers N for local processes)") from None
    return ray


def _run_ray(ray: Any, configs: list[dict[str, Any]], res: Resources, address: str | None, init: dict[str, Any],
             threads: int | None, retry_failed: bool, done: Callable[[dict[str, Any]], None]) -> None:
    """Each run a Ray task. The tasks belong to this driver: if it is killed, Ray cancels them, their run locks die
    with them, and rerunning the sweep resumes every unfinished run from its checkpoint (the Ray way: no detached
    actors, no state outside ``out_dir``)."""
    started_here = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs = dict(init)
        if address:
            kwargs["address"] = address
        kwargs.setdefault("log_to_driver", False)
        ray.init(**kwargs)
        started_here = True
    pending: dict[Any, dict[str, Any]] = {}
    try:
        task = ray.remote(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0)(execute_run)
        n_threads = threads or max(1, int(res.cpus))
        pending = {task.remote(cfg, n_threads, retry_failed): cfg for cfg in configs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cfg = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as e:  # the task died outside fit (worker lost, out of memory)
                    out = _record_lost(cfg, e)
                done(out)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _record_lost(cfg: dict[str, Any], err: BaseException) -> dict[str, Any]:
    run_dir = Path(cfg["out_dir"]) / cfg["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    out = {"status": "failed", "error": f"{type(err).__name__}: {err}", "error_type": type(err).__name__,
           "ended": _now()}
    atomic_write_text(run_dir / TRACEBACK_FILE, "".join(traceback.format_exception(err)))
    atomic_write_json(run_dir / STATUS_FILE, out)
    return {"name": cfg["name"], **out}


def describe_runs(runs: Sequence[SweepRun]) -> str:
    """One line per run: status, name and the varied values (for ``--dry-run``)."""
    lines = []
    for r in runs:
        vals = ", ".join(f"{k}={format_value(v)}" for k, v in r.varied.items())
        lines.append(f"{run_status(r.run_dir):11s} {r.name}  ({vals}{', ' if vals else ''}seed={r.seed})")
    return "\n".join(lines)
