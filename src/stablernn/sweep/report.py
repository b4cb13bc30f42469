"""Tables and figures from run directories: per-run rows, mean ± sd over seeds per configuration, markdown + CSV,
and matplotlib figures (Agg backend) readable without the code.

``load_sweep(DIR)`` reads every ``DIR/<run>/`` (config.json, final.json, status.json, lsc_report.json). The varied
keys come from ``DIR/sweep.json`` when the sweep runner wrote one, else from the configs themselves (keys whose
values differ between runs, seeds apart). ``write_report(DIR)`` writes ``report.md``, ``runs.csv``,
``summary.csv`` and the figures the sweep's ``[report]`` table asks for (or a sensible default):

* ``lines``: a metric against a numeric key (``x``, e.g. ``train.lr``), one line per ``hue`` value (e.g.
  ``model.surrogate``; a list of keys combines them), one panel per ``facet`` value (varied keys a figure does
  not name become panels too, so a figure never averages different configurations); error bars are ± sd over
  seeds; an optional stability ``prediction`` is drawn as a dashed vertical line (a number, ``{value, label}``, or
  ``{compute = "III" | "IV" | "tail"}`` to evaluate Condition III / IV / the tail fit on the swept network at
  initialisation).
* ``bars``: a metric per ``x`` value (e.g. net), bars coloured by ``hue`` (e.g. LSC target), panels per ``facet``.
* ``radii``: mean transition radius per family before and after LSC pre-training, with the target.

Spec layout (``[report]`` in the sweep TOML)::

    [report]
    metric = "test_acc"                 # default: test_acc, or test_ppl for language models
    pivot = "lsc.target"                # also a compact table: this key's values as columns
    metrics = ["test_acc", "val_acc"]   # table columns (default: the usual ones present)
    # figure options: kind, x, hue, facet, metric, logx, logy, title, file, prediction, where (a filter such as
    # {"data.task" = ["shd", "slmnist"]}), by (radii only)
    [[report.figures]]
    kind = "lines"
    x = "train.lr"
    hue = "model.surrogate"
    facet = ["model.cell"]
    logx = true
    prediction = {compute = "III", label = "Condition III"}
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..figures import save_figure
from ..io import atomic_write_text
from .runner import INDEX_FILE, NONE, STATUS_FILE, flatten, format_value, read_json, run_status

SEED_KEYS = ("train.seed", "lsc.seed")
# the per-run numbers a table shows by default, in this order, when present
DEFAULT_METRICS = ("test_acc", "test_ppl", "val_acc", "val_ppl", "test_loss", "test_rate", "epochs", "seconds")
LABELS = {
    "test_acc": "test accuracy", "val_acc": "validation accuracy", "test_ppl": "test perplexity",
    "val_ppl": "validation perplexity", "test_loss": "test loss", "val_loss": "validation loss",
    "test_rate": "test firing rate", "epochs": "epochs", "seconds": "seconds",
    "train.lr": "learning rate", "model.cell": "network", "model.layers": "depth", "model.surrogate": "SG shape",
    "model.dampening": "dampening γ", "model.sharpness": "sharpness s", "model.tail": "tail q",
    "lsc.target": "LSC target", "lsc": "LSC", "data.task": "task", "model.init": "init",
    "train.init_rate": "initial firing rate", "train.final_rate": "final firing rate", "model.width": "width",
}
FIGURE_KINDS = ("lines", "bars", "radii")


def label(key: str) -> str:
    """Axis/legend label of a dotted key or metric (``a & b`` for keys combined by :func:`combine_keys`)."""
    if " & " in key:
        return " / ".join(label(k) for k in key.split(" & "))
    return LABELS.get(key, key.split(".")[-1].replace("_", " "))


# --- reading ----------------------------------------------------------------------------------------------------
@dataclass
class SweepTable:
    """Runs of one directory: ``rows`` (one dict per run: name, status, error, seed, the varied keys' display
    values, and every number of final.json), the varied ``axes``, and the sweep spec when there is one."""

    root: Path
    rows: list[dict[str, Any]]
    axes: list[str]
    spec: dict[str, Any] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> config.json
    lsc: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> lsc_report.json

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.root.name)

    def done(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "done"]


def load_sweep(root: str | Path) -> SweepTable:
    """Read the run directories under ``root`` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; give the sweep's out_dir (it holds one folder per run)")
    index = read_json(root / INDEX_FILE) or {}
    run_dirs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").exists())
    by_name = {p.name: p for p in run_dirs}
    order = [r["name"] for r in index.get("runs", []) if r["name"] in by_name]
    order += [n for n in by_name if n not in set(order)]
    # runs the index lists that have not written a config yet (pending, or running before their first checkpoint)
    unstarted = [r for r in index.get("runs", []) if r.get("name") not in by_name]
    if not order and not unstarted:
        raise FileNotFoundError(f"no run directories (folders with config.json) under {root}")
    configs = {n: json.loads((by_name[n] / "config.json").read_text()) for n in order}
    seed_keys = tuple(index.get("seed_keys", SEED_KEYS))
    axes = list(index.get("axes") or infer_axes(list(configs.values()), seed_keys))
    varied = {r["name"]: r["varied"] for r in index.get("runs", [])}
    rows, lsc = [], {}
    for n in order:
        d = by_name[n]
        flat = flatten(configs[n])
        row: dict[str, Any] = {"name": n, "status": run_status(d), "seed": flat.get(seed_keys[0], flat.get(
            "train.seed"))}
        for key in axes:
            row[key] = display_value(varied[n][key] if n in varied and key in varied[n] else axis_value(flat, key))
        final = read_json(d / "final.json") or {}
        row.update({k: v for k, v in final.items() if _is_number(v)})
        st = read_json(d / STATUS_FILE) or {}
        row["error"] = st.get("error") if row["status"] != "done" else None
        rows.append(row)
        rep = read_json(d / "lsc_report.json")
        if rep is not None:
            lsc[n] = rep
    for r in unstarted:
        row = {"name": r["name"], "status": run_status(root / r["name"]), "seed": r.get("seed"), "error": None}
        row.update({key: display_value(r.get("varied", {}).get(key)) for key in axes})
        rows.append(row)
    return SweepTable(root, rows, axes, index.get("spec", {}), configs, lsc)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def axis_value(flat: dict[str, Any], key: str) -> Any:
    """A varied key's value in a flattened config; ``none`` for an LSC key of a run without LSC."""
    if key == "lsc" or key.startswith("lsc."):
        if flat.get("lsc", 0) is None or not any(k.startswith("lsc.") for k in flat):
            return NONE
        if key == "lsc":
            return "on"
    return flat.get(key)


def display_value(v: Any) -> Any:
    """Numbers stay numbers (so they sort and plot); everything else becomes its short text."""
    if _is_number(v):
        return v
    return format_value(v)


def infer_axes(configs: Sequence[dict[str, Any]], seed_keys: Sequence[str] = SEED_KEYS) -> list[str]:
    """Dotted keys whose values differ between run configs (name, out_dir, seeds and display options apart); runs
    with and without LSC count as varying ``lsc.target``."""
    flats = [flatten(c) for c in configs]
    keys: list[str] = []
    for f in flats:
        keys += [k for k in f if k not in keys]
    skip = {"name", "out_dir", "lsc", *seed_keys, "train.progress", "train.threads", "lsc.progress"}
    axes = []
    lsc_on = [f.get("lsc", 0) is not None and any(k.startswith("lsc.") for k in f) for f in flats]
    for k in keys:
        if k in skip:
            continue
        if k.startswith("lsc."):
            vals = {json.dumps(f.get(k), sort_keys=True) for f, on in zip(flats, lsc_on, strict=True) if on}
            if len(vals) > 1 or (k == "lsc.target" and len(set(lsc_on)) > 1):
                axes.append(k)
            continue
        if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1:
            axes.append(k)
    return axes


# --- aggregation ------------------------------------------------------------------------------------------------
def mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (n − 1; NaN for one value) and count of the finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan, 0
    sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
    return statistics.fmean(vals), sd, len(vals)


def aggregate(rows: Sequence[dict[str, Any]], by: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per distinct value of ``by`` (first-appearance order): the ``by`` values, ``n`` (finished runs),
    ``n_failed``, ``n_runs``, and ``<metric>_mean`` / ``<metric>_sd`` over the finished runs."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(_key(r.get(k)) for k in by), []).append(r)
    out = []
    for members in groups.values():
        done = [r for r in members if r["status"] == "done"]
        g: dict[str, Any] = {k: members[0].get(k) for k in by}
        g.update(n=len(done), n_failed=sum(r["status"] == "failed" for r in members), n_runs=len(members))
        for m in metrics:
            mean, sd, _ = mean_sd(r.get(m) for r in done if r.get(m) is not None)
            g[f"{m}_mean"], g[f"{m}_sd"] = mean, sd
        out.append(g)
    return out


def _key(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v


def default_metric(rows: Sequence[dict[str, Any]]) -> str:
    """``test_acc`` for classification sweeps, ``test_ppl`` for language models, else ``test_loss``."""
    for m in ("test_acc", "test_ppl", "test_loss"):
        if any(m in r for r in rows):
            return m
    return "test_acc"


def table_metrics(rows: Sequence[dict[str, Any]], wanted: Sequence[str] | None = None) -> list[str]:
    """``wanted``, else the :data:`DEFAULT_METRICS` that some finished run has and that are not the same in every
    run (e.g. a fixed epoch count)."""
    if wanted:
        return list(wanted)
    out = []
    for m in DEFAULT_METRICS:
        vals = {r[m] for r in rows if r.get("status") == "done" and _is_number(r.get(m))}
        if len(vals) > 1 or (len(vals) == 1 and m.startswith("test_")):
            out.append(m)
    return out


# --- text outputs -----------------------------------------------------------------------------------------------
def _percent(metric: str) -> bool:
    return metric.endswith("_acc") or metric.endswith("_rate")


def format_mean_sd(mean: float, sd: float, metric: str) -> str:
    if not math.isfinite(mean):
        return "–"
    scale = 100.0 if _percent(metric) else 1.0
    digits = 1 if _percent(metric) else (1 if metric.endswith("ppl") or metric in ("seconds", "epochs") else 3)
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {sd * scale:.{digits}f}" if math.isfinite(sd) else "")


def markdown_table(groups: Sequence[dict[str, Any]], by: Sequence[str], metrics: Sequence[str]) -> str:
    """Markdown of :func:`aggregate`'s rows: the ``by`` values, seeds finished/failed, and mean ± sd per metric
    (accuracies and firing rates in %)."""
    heads = [label(k) for k in by] + ["n (failed)"] + [label(m) + (" (%)" if _percent(m) else "") for m in metrics]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(["---"] * len(by) + ["---:"] * (1 + len(metrics))) + "|"]
    for g in groups:
        cells = [format_value(g[k]) for k in by]
        cells.append(f"{g['n']}" + (f" ({g['n_failed']})" if g["n_failed"] else ""))
        cells += [format_mean_sd(g[f"{m}_mean"], g[f"{m}_sd"], m) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pivot_table(groups: Sequence[dict[str, Any]], by: Sequence[str], column: str, metric: str) -> str:
    """Markdown with one row per value of the ``by`` keys other than ``column`` and one column per value of
    ``column``; cells are ``metric`` mean ± sd (with the finished-seed count where runs failed)."""
    if column not in by:
        raise ValueError(f"pivot key {column!r} is not a varied key of this sweep ({', '.join(by)})")
    rest = [k for k in by if k != column]
    cols = _unique(g[column] for g in groups)
    rows = _unique(tuple(_key(g[k]) for k in rest) for g in groups)
    unit = " (%)" if _percent(metric) else ""
    head = [label(k) for k in rest] + [f"{format_value(c)}" for c in cols]
    lines = [f"{label(metric)}{unit}, mean ± sd over seeds; columns: {label(column)}", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(rest) + ["---:"] * len(cols)) + "|"]
    for rk in rows:
        members = [g for g in groups if tuple(_key(g[k]) for k in rest) == rk]
        cells = [format_value(members[0][k]) for k in rest]
        for c in cols:
            g = next((m for m in members if m[column] == c), None)
            if g is None:
                cells.append("")
                continue
            text = format_mean_sd(g[f"{metric}_mean"], g[f"{metric}_sd"], metric)
            if g["n_failed"]:
                text += f" ({g['n']}/{g['n_runs']} ran)"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """CSV text of ``rows`` with these columns (missing values empty)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    return buf.getvalue()


# --- figures ----------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _facets(facet: str | Sequence[str] | None) -> list[str]:
    if facet is None:
        return []
    return [facet] if isinstance(facet, str) else list(facet)


def _facet_title(keys: Sequence[str], values: tuple) -> str:
    return ", ".join(f"{label(k)} {format_value(v)}" for k, v in zip(keys, values, strict=True))


def _unique(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


def seeds_text(rows: Sequence[dict[str, Any]]) -> str:
    seeds = sorted({r["seed"] for r in rows if r.get("seed") is not None})
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"


def plot_lines(rows: Sequence[dict[str, Any]], path: str | Path, *, x: str, metric: str, hue: str | None = None,
               facet: str | Sequence[str] | None = None, logx: bool = False, logy: bool = False,
               title: str | None = None, predictions: dict[tuple, tuple[float, str]] | None = None) -> Path:
    """``metric`` (mean ± sd over seeds) against ``x``, one line per ``hue`` value, one panel per ``facet`` value.

    ``predictions``: ``{(facet values..., hue value): (x value, label)}`` drawn as dashed vertical lines in the hue's
    colour (use ``hue value = None`` for one line per panel). Configurations whose every run failed are marked
    with an ``x`` at the bottom of the panel.
    """
    plt = _plt()
    fkeys = _facets(facet)
    by = [*fkeys, *([hue] if hue else []), x]
    groups = aggregate(rows, by, [metric])
    panels = _unique(tuple(g[k] for k in fkeys) for g in groups)
    hues = _unique(g[hue] for g in groups) if hue else [None]
    colors = {h: f"C{i % 10}" for i, h in enumerate(hues)}
    nr, nc = _grid(len(panels))
    fig, axes = plt.subplots(nr, nc, figsize=(5.2 * nc, 3.9 * nr), squeeze=False, sharey=True)
    failed_label_done = False
    for ax, pv in zip(axes.flat, panels, strict=False):
        in_panel = [g for g in groups if tuple(g[k] for k in fkeys) == pv]
        for h in hues:
            pts = sorted((g for g in in_panel if not hue or g[hue] == h), key=lambda g: _num(g[x]))
            ok = [g for g in pts if g["n"] > 0]
            if ok:
                ax.errorbar([_num(g[x]) for g in ok], [g[f"{metric}_mean"] for g in ok],
                            yerr=[0 if math.isnan(g[f"{metric}_sd"]) else g[f"{metric}_sd"] for g in ok],
                            color=colors[h], marker="o", ms=4, capsize=3, lw=1.5,
                            label=format_value(h) if hue else None)
            dead = [g for g in pts if g["n"] == 0 and g["n_failed"] > 0]
            if dead:
                ax.plot([_num(g[x]) for g in dead], [0.0] * len(dead), "x", color=colors[h], ms=8, mew=2,
                        transform=ax.get_xaxis_transform(), clip_on=False,
                        label=None if failed_label_done else "every seed failed (non-finite)")
                failed_label_done = True
            for (key, value) in (predictions or {}).items():
                if key == (*pv, h) or (key == (*pv, None) and h == hues[0]):
                    ax.axvline(value[0], color=colors[h] if key[-1] is not None else "k", ls="--", lw=1.2,
                               label=value[1])
        if logx:
            ax.set_xscale("log")
            _log_ticks(ax, sorted({_num(g[x]) for g in in_panel}))
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(label(x))
        ax.set_ylabel(label(metric) + " (mean ± sd)")
        if fkeys:
            ax.set_title(_facet_title(fkeys, pv), fontsize=10)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, len(panels), hue,
                   (title or f"{label(metric)} vs {label(x)}") + f" — mean ± sd over {seeds_text(rows)}", path)


def _log_ticks(ax, values: list[float]) -> None:
    """Label a log axis at the swept values when they are spread out enough to read, and never at minor ticks."""
    from matplotlib.ticker import NullFormatter, NullLocator

    vals = [v for v in values if math.isfinite(v) and v > 0]
    if vals and all(b / a >= 1.5 for a, b in itertools.pairwise(vals)):
        ax.set_xticks(vals, [f"{v:g}" for v in vals])
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())


def _legend_items(axes) -> tuple[list, list]:
    seen: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    return list(seen.values()), list(seen)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def plot_bars(rows: Sequence[dict[str, Any]], path: str | Path, *, x: str, metric: str, hue: str | None = None,
              facet: str | Sequence[str] | None = None, title: str | None = None, logy: bool = False) -> Path:
    """Grouped bars of ``metric`` (mean ± sd over seeds): groups along ``x``, one bar per ``hue`` value, one panel
    per ``facet`` value. A configuration whose every run failed gets an ``x`` instead of a bar."""
    plt = _plt()
    fkeys = _facets(facet)
    by = [*fkeys, x, *([hue] if hue else [])]
    groups = aggregate(rows, by, [metric])
    panels = _unique(tuple(g[k] for k in fkeys) for g in groups)
    xs = _unique(g[x] for g in groups)
    hues = _unique(g[hue] for g in groups) if hue else [None]
    nr, nc = _grid(len(panels), max_cols=1 if len(xs) * len(hues) > 12 else 3)
    width = 0.8 / len(hues)
    fig, axes = plt.subplots(nr, nc, figsize=(max(5.0, 0.35 * len(xs) * len(hues) + 2) * nc, 3.6 * nr),
                             squeeze=False, sharey=True)
    failed_label_done = False
    for ax, pv in zip(axes.flat, panels, strict=False):
        for j, h in enumerate(hues):
            for i, xv in enumerate(xs):
                g = next((g for g in groups if tuple(g[k] for k in fkeys) == pv and g[x] == xv
                          and (not hue or g[hue] == h)), None)
                if g is None:
                    continue
                pos = i - 0.4 + width * (j + 0.5)
                lab = (format_value(h) if hue else None) if i == 0 else None
                if g["n"] > 0:
                    sd = g[f"{metric}_sd"]
                    ax.bar(pos, g[f"{metric}_mean"], width * 0.92, yerr=0 if math.isnan(sd) else sd, capsize=2,
                           color=f"C{j % 10}", label=lab)
                elif g["n_failed"]:
                    ax.plot(pos, 0, "x", color=f"C{j % 10}", ms=8, mew=2,
                            label=None if failed_label_done else "every seed failed (non-finite)")
                    failed_label_done = True
        ax.set_xticks(range(len(xs)), [format_value(v) for v in xs], rotation=30 if len(xs) > 4 else 0)
        ax.set_xlabel(label(x))
        ax.set_ylabel(label(metric) + " (mean ± sd)")
        if logy:
            ax.set_yscale("log")
        if fkeys:
            ax.set_title(_facet_title(fkeys, pv), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    return _finish(fig, axes, len(panels), hue,
                   (title or f"{label(metric)} per {label(x)}") + f" — mean ± sd over {seeds_text(rows)}", path)


def radii_rows(table: SweepTable, by: Sequence[str]) -> list[dict[str, Any]]:
    """Per configuration (``by`` values) and family: the mean radius over layers and seeds before and after LSC,
    the target, and the number of runs."""
    acc: dict[tuple, dict[str, Any]] = {}
    rows = {r["name"]: r for r in table.rows}
    for name, rep in table.lsc.items():
        r = rows.get(name)
        if r is None:
            continue
        for fam in rep.get("after", {}):
            key = (*(_key(r.get(k)) for k in by), fam)
            a = acc.setdefault(key, {**{k: r.get(k) for k in by}, "family": fam, "before": [], "after": [],
                                     "target": rep.get("target", {}).get(fam)})
            a["before"].append(_nanmean(rep.get("before", {}).get(fam, [])))
            a["after"].append(_nanmean(rep["after"][fam]))
    out = []
    for a in acc.values():
        b, _, n = mean_sd(a["before"])
        af, af_sd, _ = mean_sd(a["after"])
        out.append({**a, "before": b, "after": af, "after_sd": af_sd, "n": n})
    return out


def _is_lsc_key(key: str) -> bool:
    return key == "lsc" or key.startswith("lsc.")


def _nanmean(values: Sequence[float | None]) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else math.nan


def plot_radii(table: SweepTable, path: str | Path, *, by: Sequence[str] | None = None,
               title: str | None = None) -> Path:
    """Mean transition radius before (grey) and after (colour) LSC pre-training per configuration, one panel per
    family (time, depth, encoder, decoder), the target as a black tick."""
    plt = _plt()
    if by is None:  # LSC runs before training, so training options cannot change its radii
        keep = [k for k in table.axes if not k.startswith("train.")]
        by = [k for k in keep if not _is_lsc_key(k)] + [k for k in keep if _is_lsc_key(k)]
    by = list(by)
    rr = radii_rows(table, by)
    if not rr:
        raise ValueError("no lsc_report.json in any run: nothing to plot (were any runs made with LSC?)")
    fams = [f for f in ("time", "depth", "encoder", "decoder") if any(r["family"] == f for r in rr)]
    configs = _unique(tuple(r[k] for k in by) for r in rr)
    fig, axes = plt.subplots(len(fams), 1, figsize=(max(6.0, 0.45 * len(configs) + 2), 2.9 * len(fams)),
                             squeeze=False, sharex=True)
    for ax, fam in zip(axes[:, 0], fams, strict=True):
        for i, c in enumerate(configs):
            r = next((r for r in rr if r["family"] == fam and tuple(r[k] for k in by) == c), None)
            if r is None:
                continue
            ax.bar(i - 0.2, r["before"], 0.38, color="0.7", label="before LSC" if i == 0 else None)
            ax.bar(i + 0.2, r["after"], 0.38, yerr=0 if math.isnan(r["after_sd"]) else r["after_sd"], capsize=2,
                   color="C0", label="after LSC" if i == 0 else None)
            if r["target"] is not None:
                ax.plot([i - 0.42, i + 0.42], [r["target"]] * 2, color="k", lw=1.5,
                        label="target" if i == 0 else None)
        ax.set_ylabel(f"{fam} radius")
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xticks(range(len(configs)), [" ".join(format_value(v) for v in c) for c in configs],
                           rotation=60, ha="right", fontsize=8)
    axes[-1, 0].set_xlabel(" / ".join(label(k) for k in by))
    handles, labels_ = _legend_items(axes)
    fig.legend(handles, labels_, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=9)
    n = len({r["seed"] for r in table.rows if r["name"] in table.lsc})
    fig.suptitle((title or "Transition radii before and after LSC pre-training")
                 + f" — mean over layers and {n} seed{'s' if n != 1 else ''}")
    fig.tight_layout()
    return _save(fig, path)


def _finish(fig, axes, n_panels: int, hue: str | None, suptitle: str, path: str | Path) -> Path:
    """Hide unused panels, add one legend for all panels and the title, and save."""
    for ax in list(axes.flat)[n_panels:]:
        ax.set_visible(False)
    handles, labels_ = _legend_items(axes)
    if handles:
        fig.legend(handles, labels_, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9,
                   title=label(hue) if hue else None)
    fig.suptitle(suptitle)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    return save_figure(fig, path, dpi=110)


# --- predictions ------------------------------------------------------------------------------------------------
PREDICTABLE = {"III": "dampening", "IV": "sharpness", "tail": "tail"}


def predict(config: dict[str, Any], condition: str, batches: int = 4) -> float:
    """The stability prediction for the network of a run config at initialisation: the mean Condition III dampening
    (``"III"``), Condition IV sharpness (``"IV"``, for the run's SG shape and dampening) or fitted q-PseudoSpike tail
    (``"tail"``) over its LIF/ALIF layers. The first layer's input statistics are measured on ``batches`` training
    batches after the encoder. See :func:`predict_with_status` for whether the condition had a root."""
    return predict_with_status(config, condition, batches)[0]


def predict_with_status(config: dict[str, Any], condition: str, batches: int = 4) -> tuple[float, bool]:
    """:func:`predict` and whether the condition was solved exactly everywhere (False: for some neuron the equation
    has no root in the search range and the closest bound was used)."""
    import torch

    from ..data import load_task
    from ..snn.conditions import TaskStats
    from ..snn.design import DesignConfig, design_model
    from ..train.config import RunConfig
    from ..train.loop import build_for_task

    if condition not in PREDICTABLE:
        raise ValueError(f"unknown prediction {condition!r}; choose one of {', '.join(PREDICTABLE)}")
    run = RunConfig.from_dict(config)
    torch.manual_seed(run.train.seed)
    data = load_task(run.data)
    model = build_for_task(run, data.info)
    with torch.no_grad():
        xs = [model.encode(x) for _, (x, _) in zip(range(batches), data.train, strict=False)]
    stats = TaskStats.from_batches(xs)
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
    if _is_number(spec):
        spec = {"value": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"prediction must be a number or a table {{value = x, label = ...}} / {{compute = ...}}, "
                         f"got {spec!r}")
    if "value" in spec:
        val = float(spec["value"])
        lab = str(spec.get("label", f"prediction ({val:g})"))
        panels = _unique(tuple(r.get(k) for k in fkeys) for r in table.rows) or [()]
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
    for panel in _unique(k[:-1] for k in values):
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


# --- whole report -----------------------------------------------------------------------------------------------
def auto_figures(table: SweepTable) -> list[dict[str, Any]]:
    """Figures for a sweep whose spec names none: metric vs lr (or another numeric axis) as lines, LSC or other
    categorical axes as bars, and the radii when runs used LSC."""
    axes = list(table.axes)
    numeric = [a for a in axes if all(_is_number(r.get(a)) for r in table.rows)]
    lsc_axes = [a for a in axes if _is_lsc_key(a)]
    figs: list[dict[str, Any]] = []
    if axes:
        if "train.lr" in axes or (numeric and not lsc_axes):
            x = "train.lr" if "train.lr" in axes else numeric[0]
            rest = [a for a in axes if a != x]
            figs.append({"kind": "lines", "x": x, "hue": rest[0] if rest else None, "facet": rest[1:],
                         "logx": x == "train.lr"})
        else:
            hue = lsc_axes[0] if lsc_axes else (axes[1] if len(axes) > 1 else None)
            rest = [a for a in axes if a != hue]
            figs.append({"kind": "bars", "x": rest[0] if rest else hue, "hue": hue if rest else None,
                         "facet": rest[1:]})
    if table.lsc:
        figs.append({"kind": "radii"})
    return figs


@dataclass
class Report:
    """Paths written by :func:`write_report` and the markdown text."""

    markdown: Path
    runs_csv: Path
    summary_csv: Path
    figures: list[Path]
    text: str


def write_report(root: str | Path, out: str | Path | None = None, *, metric: str | None = None,
                 metrics: Sequence[str] | None = None, figures: Sequence[dict[str, Any]] | None = None,
                 prefix: str = "", fmt: str = "png", make_figures: bool = True,
                 command: str | None = None, options: dict[str, Any] | None = None) -> Report:
    """Read ``root``'s runs and write ``report.md``, ``runs.csv``, ``summary.csv`` and figures to ``out`` (default
    ``root/report``). ``options``: a ``[report]`` table replacing the one the sweep was run with (e.g. after editing
    the spec's figures); ``figures``: figure tables (see the module docstring), default the ``[report]`` figures or
    :func:`auto_figures`; ``prefix`` goes in front of every figure file name."""
    table = load_sweep(root)
    opts = dict(options if options is not None else table.spec.get("report", {}))
    out = Path(out) if out is not None else table.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    metric = metric or opts.get("metric") or default_metric(table.rows)
    cols = table_metrics(table.rows, metrics or opts.get("metrics"))
    if metric not in cols:
        cols = [metric, *cols]
    by = list(table.axes)
    groups = aggregate(table.rows, by, cols)
    fig_specs = list(figures) if figures is not None else list(opts.get("figures") or auto_figures(table))
    fig_paths: list[Path] = []
    if make_figures:
        for k, fs in enumerate(fig_specs):
            fig_paths.append(_figure(table, fs, out, f"{prefix}{fs.get('file') or _fig_name(fs, k)}.{fmt}",
                                     metric))
    pivot = opts.get("pivot")
    pivots = [pivot_table(groups, by, pivot, metric)] if pivot else []
    text = _markdown(table, groups, by, cols, fig_paths, out, command, pivots)
    md = out / "report.md"
    atomic_write_text(md, text)
    metric_cols = sorted({k for r in table.rows for k in r if _is_number(r.get(k)) and k not in by
                          and k != "seed"})
    runs_csv = out / "runs.csv"
    atomic_write_text(runs_csv, to_csv(table.rows, ["name", "status", "seed", *by, *metric_cols, "error"]))
    summary_csv = out / "summary.csv"
    atomic_write_text(summary_csv, to_csv(groups, [*by, "n", "n_failed", "n_runs",
                                           *(f"{m}_{s}" for m in cols for s in ("mean", "sd"))]))
    return Report(md, runs_csv, summary_csv, fig_paths, text)


def _fig_name(fs: dict[str, Any], k: int) -> str:
    """``<kind>_<x field>_<hue fields>`` (``_<k>`` for all but the first figure, so names stay unique)."""
    parts = [fs.get("kind", "fig")] + [key.split(".")[-1] for role in ("x", "hue") for key in _facets(fs.get(role))]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(parts))
    return name if k == 0 or fs.get("kind") == "radii" else f"{name}_{k}"


def _figure(table: SweepTable, fs: dict[str, Any], out: Path, fname: str, metric: str) -> Path:
    kind = fs.get("kind", "lines")
    unknown = set(fs) - {"kind", "x", "hue", "facet", "metric", "logx", "logy", "title", "file", "prediction",
                         "by", "where"}
    if unknown:
        raise ValueError(f"unknown figure option(s) {sorted(unknown)}; allowed: kind, x, hue, facet, metric, logx, "
                         "logy, title, file, prediction, by, where")
    if kind not in FIGURE_KINDS:
        raise ValueError(f"unknown figure kind {kind!r}; choose one of {', '.join(FIGURE_KINDS)}")
    rows = _where(table.rows, fs.get("where"))
    m = fs.get("metric", metric)
    path = out / fname
    if kind == "radii":
        sub = SweepTable(table.root, rows, table.axes, table.spec, table.configs, table.lsc)
        return plot_radii(sub, path, by=fs.get("by"), title=fs.get("title"))
    x = fs.get("x")
    if x is None or x not in table.axes:
        raise ValueError(f"figure x {x!r} must be one of the sweep's varied keys: {', '.join(table.axes)}")
    hue_keys, facet_keys = _facets(fs.get("hue")), _facets(fs.get("facet"))
    for role, keys in (("hue", hue_keys), ("facet", facet_keys)):
        for key in keys:
            if key not in table.axes:
                raise ValueError(f"figure {role} {key!r} is not a varied key of this sweep ({', '.join(table.axes)})")
    # a figure must never average different configurations together: varied keys it does not name become panels
    used = {x, *hue_keys, *facet_keys}
    facet_keys += [a for a in table.axes if a not in used and len({_key(r.get(a)) for r in rows}) > 1]
    rows, hue = combine_keys(rows, hue_keys)
    if kind == "bars":
        return plot_bars(rows, path, x=x, metric=m, hue=hue, facet=facet_keys, title=fs.get("title"),
                         logy=bool(fs.get("logy")))
    sub = SweepTable(table.root, rows, table.axes, table.spec, table.configs, table.lsc)
    preds = resolve_predictions(sub, fs.get("prediction"), facet_keys, hue, x)
    return plot_lines(rows, path, x=x, metric=m, hue=hue, facet=facet_keys, logx=bool(fs.get("logx")),
                      logy=bool(fs.get("logy")), title=fs.get("title"), predictions=preds)


def combine_keys(rows: list[dict[str, Any]], keys: Sequence[str]) -> tuple[list[dict[str, Any]], str | None]:
    """Several keys as one (``"model.init & lsc.target"`` with values like ``"glorot / 1"``), for a hue made of
    more than one varied key; one key or none pass through."""
    if len(keys) <= 1:
        return rows, (keys[0] if keys else None)
    name = " & ".join(keys)
    return [{**r, name: " / ".join(format_value(r.get(k)) for k in keys)} for r in rows], name


def _where(rows: list[dict[str, Any]], where: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows whose keys equal ``where``'s values (a value may be a list of allowed values)."""
    if not where:
        return rows
    def ok(r: dict[str, Any]) -> bool:
        return all(r.get(k) in (v if isinstance(v, list) else [v]) for k, v in where.items())
    return [r for r in rows if ok(r)]


def _markdown(table: SweepTable, groups: list[dict[str, Any]], by: list[str], cols: list[str],
              figs: list[Path], out: Path, command: str | None, pivots: Sequence[str] = ()) -> str:
    n = len(table.rows)
    counts = {s: sum(r["status"] == s for r in table.rows) for s in _unique(r["status"] for r in table.rows)}
    lines = [f"# Sweep `{table.name}`", ""]
    if table.spec.get("description"):
        lines += [str(table.spec["description"]).strip(), ""]
    lines += [f"{n} runs in `{table.root}` (" + ", ".join(f"{v} {k}" for k, v in counts.items()) + f"); "
              f"{seeds_text(table.rows)}; report written {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    if command:
        lines += ["Produced by:", "", "```", command, "```", ""]
    for p in pivots:
        lines += ["## Summary", "", p, ""]
    lines += ["## Mean ± sd over seeds", "", markdown_table(groups, by, cols), ""]
    if figs:
        lines += ["## Figures", ""]
        for p in figs:
            rel = Path(_relpath(p, out))
            lines += [f"![{p.stem}]({rel.as_posix()})", ""]
    failed = [r for r in table.rows if r["status"] == "failed"]
    if failed:
        lines += ["## Failed runs", "", "| run | error |", "|---|---|"]
        lines += [f"| {r['name']} | {str(r.get('error') or '').splitlines()[0][:160] if r.get('error') else ''} |"
                  for r in failed]
        lines.append("")
    return "\n".join(lines)


def _relpath(p: Path, start: Path) -> str:
    import os

    return os.path.relpath(p, start)
