"""The report's figures (matplotlib, Agg backend): a metric against a numeric key (``lines``), per value
(``bars``), and transition radii before/after LSC (``radii``); see :mod:`stablernn.sweep.report`."""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..figures import save_figure
from .spec import format_value
from .tables import SweepTable, aggregate, label, mean_sd, sort_key, unique


# --- figures ----------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def facets(facet: str | Sequence[str] | None) -> list[str]:
    if facet is None:
        return []
    return [facet] if isinstance(facet, str) else list(facet)


def _facet_title(keys: Sequence[str], values: tuple) -> str:
    return ", ".join(f"{label(k)} {format_value(v)}" for k, v in zip(keys, values, strict=True))


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
    fkeys = facets(facet)
    by = [*fkeys, *([hue] if hue else []), x]
    groups = aggregate(rows, by, [metric])
    panels = unique(tuple(g[k] for k in fkeys) for g in groups)
    hues = unique(g[hue] for g in groups) if hue else [None]
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
    fkeys = facets(facet)
    by = [*fkeys, x, *([hue] if hue else [])]
    groups = aggregate(rows, by, [metric])
    panels = unique(tuple(g[k] for k in fkeys) for g in groups)
    xs = unique(g[x] for g in groups)
    hues = unique(g[hue] for g in groups) if hue else [None]
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
                # every bar carries its hue's label (the legend keeps one per label): a hue absent at the first x
                # value must still reach the legend
                lab = format_value(h) if hue else None
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
            key = (*(sort_key(r.get(k)) for k in by), fam)
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


def is_lsc_key(key: str) -> bool:
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
        by = [k for k in keep if not is_lsc_key(k)] + [k for k in keep if is_lsc_key(k)]
    by = list(by)
    rr = radii_rows(table, by)
    if not rr:
        raise ValueError("no lsc_report.json in any run: nothing to plot (were any runs made with LSC?)")
    fams = [f for f in ("time", "depth", "encoder", "decoder") if any(r["family"] == f for r in rr)]
    configs = unique(tuple(r[k] for k in by) for r in rr)
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
