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

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from .plots import (
    facets,
    is_lsc_key,
    plot_bars,
    plot_lines,
    plot_radii,
    radii_rows,
    seeds_text,
)
from .predictions import (
    PREDICTABLE,
    predict,
    predict_with_status,
    resolve_predictions,
)
from .spec import format_value
from .tables import (
    DEFAULT_METRICS,
    FIGURE_KINDS,
    LABELS,
    SEED_KEYS,
    SweepTable,
    aggregate,
    axis_value,
    default_metric,
    display_value,
    format_mean_sd,
    infer_axes,
    is_number,
    label,
    load_sweep,
    markdown_table,
    mean_sd,
    pivot_table,
    sort_key,
    table_metrics,
    to_csv,
    unique,
)


# --- whole report -----------------------------------------------------------------------------------------------
def auto_figures(table: SweepTable) -> list[dict[str, Any]]:
    """Figures for a sweep whose spec names none: metric vs lr (or another numeric axis) as lines, LSC or other
    categorical axes as bars, and the radii when runs used LSC."""
    axes = list(table.axes)
    numeric = [a for a in axes if all(is_number(r.get(a)) for r in table.rows)]
    lsc_axes = [a for a in axes if is_lsc_key(a)]
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
    metric_cols = sorted({k for r in table.rows for k in r if is_number(r.get(k)) and k not in by
                          and k != "seed"})
    runs_csv = out / "runs.csv"
    atomic_write_text(runs_csv, to_csv(table.rows, ["name", "status", "seed", *by, *metric_cols, "error"]))
    summary_csv = out / "summary.csv"
    atomic_write_text(summary_csv, to_csv(groups, [*by, "n", "n_failed", "n_runs",
                                           *(f"{m}_{s}" for m in cols for s in ("mean", "sd"))]))
    return Report(md, runs_csv, summary_csv, fig_paths, text)


def _fig_name(fs: dict[str, Any], k: int) -> str:
    """``<kind>_<x field>_<hue fields>`` (``_<k>`` for all but the first figure, so names stay unique)."""
    parts = [fs.get("kind", "fig")] + [key.split(".")[-1] for role in ("x", "hue") for key in facets(fs.get(role))]
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
    hue_keys, facet_keys = facets(fs.get("hue")), facets(fs.get("facet"))
    for role, keys in (("hue", hue_keys), ("facet", facet_keys)):
        for key in keys:
            if key not in table.axes:
                raise ValueError(f"figure {role} {key!r} is not a varied key of this sweep ({', '.join(table.axes)})")
    # a figure must never average different configurations together: varied keys it does not name become panels
    used = {x, *hue_keys, *facet_keys}
    facet_keys += [a for a in table.axes if a not in used and len({sort_key(r.get(a)) for r in rows}) > 1]
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
    counts = {s: sum(r["status"] == s for r in table.rows) for s in unique(r["status"] for r in table.rows)}
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


# the report's pieces live in tables.py, plots.py and predictions.py; this module is the way in
__all__ = [
    "DEFAULT_METRICS",
    "FIGURE_KINDS",
    "LABELS",
    "PREDICTABLE",
    "SEED_KEYS",
    "Report",
    "SweepTable",
    "aggregate",
    "auto_figures",
    "axis_value",
    "combine_keys",
    "default_metric",
    "display_value",
    "facets",
    "format_mean_sd",
    "infer_axes",
    "is_lsc_key",
    "is_number",
    "label",
    "load_sweep",
    "markdown_table",
    "mean_sd",
    "pivot_table",
    "plot_bars",
    "plot_lines",
    "plot_radii",
    "predict",
    "predict_with_status",
    "radii_rows",
    "resolve_predictions",
    "seeds_text",
    "sort_key",
    "table_metrics",
    "to_csv",
    "unique",
    "write_report",
]
