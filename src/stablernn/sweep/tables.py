"""Reading sweep run directories into rows, and the tables made of them: mean ± sd over seeds per configuration,
markdown, pivot and CSV. The report as a whole is :mod:`stablernn.sweep.report`."""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runner import INDEX_FILE, STATUS_FILE, flatten, read_json, run_status
from .spec import NONE, format_value

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
        row.update({k: v for k, v in final.items() if is_number(v)})
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


def is_number(v: Any) -> bool:
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
    if is_number(v):
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
        groups.setdefault(tuple(sort_key(r.get(k)) for k in by), []).append(r)
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


def sort_key(v: Any) -> Any:
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
        vals = {r[m] for r in rows if r.get("status") == "done" and is_number(r.get(m))}
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
    cols = unique(g[column] for g in groups)
    rows = unique(tuple(sort_key(g[k]) for k in rest) for g in groups)
    unit = " (%)" if _percent(metric) else ""
    head = [label(k) for k in rest] + [f"{format_value(c)}" for c in cols]
    lines = [f"{label(metric)}{unit}, mean ± sd over seeds; columns: {label(column)}", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(rest) + ["---:"] * len(cols)) + "|"]
    for rk in rows:
        members = [g for g in groups if tuple(sort_key(g[k]) for k in rest) == rk]
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


def unique(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out
