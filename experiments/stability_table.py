"""Tables and a figure of the stability benchmark: one row per (cell, depth, stabiliser arm), one column per task.

Reads the run directories that ``stablernn sweep experiments/stability_*.toml`` wrote (``config.json``,
``final.json``, ``lsc_report.json``), names each run's arm from its config, and prints a markdown table of test
accuracy (mean ± sd over seeds, n = seeds), training seconds, LSC seconds and, for spiking nets, the test firing rate
and the layers LSC had silenced; ``--figure`` draws the accuracies as grouped bars.

    python experiments/stability_table.py runs/stability_calibration runs/stability_calibration_b \
        --figure docs/figures/results_stability_calibration.png
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def arm_of(cfg: dict[str, Any]) -> str:
    """The stabiliser a run's config switched on ("default" when none)."""
    m, t, lsc = cfg["model"], cfg["train"], cfg.get("lsc")
    classic = m["cell"] in ("gru", "lstm") or m["cell"].endswith("_rnn")
    if t.get("stable") == "auto" and classic and lsc:
        # a classic cell that --stable auto pre-trained with LSC: the rule before layer norm (train/stable.py), run
        # at commit 866743c (experiments/stability_auto_ln.toml); one of the grid's LSC arms now
        target = lsc.get("target")
        no_time = isinstance(target, dict) and m["cell"].endswith("_rnn") and "time" not in target
        name = ("layer norm + LSC 1" if m.get("layer_norm") else "LSC 1 (earlier --stable auto)") + \
            (" without time" if no_time else "")
        return name + (" + LSUV" if m.get("lsuv") else "")
    if t.get("stable") == "auto":
        extra = [name for flag, name in (("layer_norm", "layer norm"), ("lsuv", "LSUV")) if m.get(flag)]
        if classic and not lsc:
            return "--stable auto (= layer norm)"
        return " + ".join(["--stable auto", *extra])
    for flag, name in (("chrono", "chrono"), ("layer_norm", "layer norm"), ("lsuv", "LSUV")):
        if m.get(flag):
            return name
    if m.get("rec_init") == "identity":
        return "IRNN"
    if lsc:
        return f"LSC {lsc['target']}"
    if m.get("conditions"):
        return "conditions " + "+".join(m["conditions"])
    if t.get("init_rate") is not None:
        return f"rate fit {t['init_rate']:g}"
    if t.get("clip_norm") is None:
        return "no clipping"
    if t.get("flossing_weight"):
        return "flossing"
    return "default"


def collect(roots: list[Path], with_lr: bool = False) -> dict[tuple[str, int, str], dict[str, list[dict[str, Any]]]]:
    rows: dict[tuple[str, int, str], dict[str, list[dict[str, Any]]]] = {}
    for root in roots:
        for final in sorted(root.glob("*/final.json")):
            run = final.parent
            cfg = json.loads((run / "config.json").read_text())
            res = json.loads(final.read_text())
            task = f"{cfg['data']['task']} T={cfg['data']['seq_len']}"
            rec: dict[str, Any] = {"acc": res.get("test_acc"), "seconds": res.get("seconds"),
                                   "rate": res.get("test_rate")}
            report = run / "lsc_report.json"
            if report.exists():
                r = json.loads(report.read_text())
                rec["lsc_seconds"] = r["seconds"]
                rec["silenced"] = (r.get("activity") or {}).get("silenced")
            arm = arm_of(cfg) + (f" @ lr {cfg['train']['lr']:g}" if with_lr else "")
            key = (cfg["model"]["cell"], int(cfg["model"]["layers"]), arm)
            rows.setdefault(key, {}).setdefault(task, []).append(rec)
    return rows


def _cell(recs: list[dict[str, Any]]) -> str:
    accs = [100 * r["acc"] for r in recs if r["acc"] is not None]
    if not accs:
        return "-"
    text = f"{statistics.mean(accs):.1f}" + (f" ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else "")
    secs = sum(r["seconds"] or 0 for r in recs) / len(recs)
    lsc = [r["lsc_seconds"] for r in recs if "lsc_seconds" in r]
    text += f" ({secs:.0f} s" + (f" + LSC {sum(lsc) / len(lsc):.0f} s" if lsc else "") + ")"
    rates = [r["rate"] for r in recs if r.get("rate") is not None]
    if rates:
        text += f", rate {statistics.mean(rates):.3f}"
    silenced = [r["silenced"] for r in recs if r.get("silenced")]
    if silenced:
        text += f", LSC silenced {silenced[0]}"
    return text


def table(rows: dict[tuple[str, int, str], dict[str, list[dict[str, Any]]]]) -> str:
    tasks = sorted({t for per in rows.values() for t in per}, key=lambda t: (t.split()[0], int(t.split("=")[1])))
    n = max(len(v) for per in rows.values() for v in per.values())
    lines = ["| net | depth | arm | " + " | ".join(tasks) + f" | mean ({len(tasks)}) |",
             "|---|---:|---|" + "---|" * len(tasks) + "---:|"]
    for cell, depth, arm in sorted(rows, key=lambda k: (k[0], k[1], k[2] != "default", k[2])):
        per = rows[(cell, depth, arm)]
        means = [_mean(per.get(t, [])) for t in tasks]
        overall = f"{sum(means) / len(means):.1f}" if all(v is not None for v in means) else "-"
        lines.append(f"| {cell} | {depth} | {arm} | " + " | ".join(_cell(per.get(t, [])) for t in tasks)
                     + f" | {overall} |")
    seeds = f"mean ± sd over {n} seeds" if n > 1 else "1 seed"
    return "\n".join(lines) + f"\n\n(test accuracy %, {seeds}; in brackets the training seconds (and LSC's); " \
        "spiking nets: the test firing rate)"


def _mean(recs: list[dict[str, Any]]) -> float | None:
    accs = [100 * r["acc"] for r in recs if r["acc"] is not None]
    return statistics.mean(accs) if accs else None


def acceptance(rows: dict[tuple[str, int, str], dict[str, list[dict[str, Any]]]], gap: float = 5.0) -> str:
    """Issue 16's acceptance, per cell: the tasks where the deep default net is ``gap`` points or more below the
    1-layer default ("failing"), each deep arm's mean over them against the best of the other deep arms per task
    (the stabilisers' grid: every deep arm but the current ``--stable auto``), averaged over those tasks."""
    out = []
    for cell in sorted({k[0] for k in rows}):
        shallow = {t: _mean(v) for t, v in rows.get((cell, 1, "default"), {}).items()}
        deep_keys = [k for k in rows if k[0] == cell and k[1] > 1]
        deep_default = [k for k in deep_keys if k[2] == "default"]
        if not shallow or not deep_default:
            continue
        dd = {t: _mean(v) for t, v in rows[deep_default[0]].items()}
        failing = sorted(t for t in dd if t in shallow and dd[t] is not None and shallow[t] is not None
                         and shallow[t] - dd[t] >= gap)
        if not failing:
            continue
        out.append(f"{cell}: failing tasks (deep default >= {gap:g} below 1 layer): {', '.join(failing)}")
        grid = [k for k in deep_keys if not k[2].startswith("--stable auto")]
        best = {t: max((_mean(rows[k].get(t, [])) or 0.0) for k in grid) for t in failing}
        best_mean = sum(best.values()) / len(failing)
        out.append(f"  best of the grid per task: {', '.join(f'{t} {best[t]:.1f}' for t in failing)}; "
                   f"mean {best_mean:.1f}")
        for k in sorted(deep_keys, key=lambda k: k[2]):
            vals = [_mean(rows[k].get(t, [])) for t in failing]
            if any(v is None for v in vals):
                continue
            m = sum(vals) / len(vals)  # type: ignore[arg-type]
            out.append(f"  {k[2]}: {m:.1f} ({m - best_mean:+.1f} vs best)")
    return "\n".join(out)


def figure(rows: dict[tuple[str, int, str], dict[str, list[dict[str, Any]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for per in rows.values() for t in per}, key=lambda t: (t.split()[0], int(t.split("=")[1])))
    keys = sorted(rows, key=lambda k: (k[0], k[1], k[2] != "default", k[2]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 0.32 * len(keys) + 1.2), sharey=True,
                             squeeze=False)
    labels = [f"{c} x{d} {a}" for c, d, a in keys]
    for ax, task in zip(axes[0], tasks, strict=True):
        vals = [statistics.mean([100 * r["acc"] for r in rows[k].get(task, [])]) if rows[k].get(task) else 0.0
                for k in keys]
        colours = ["tab:orange" if k[2].startswith("--stable auto") else "tab:grey" if k[1] == 1 else "tab:blue"
                   for k in keys]
        ax.barh(range(len(keys)), vals, color=colours)
        ax.set_yticks(range(len(keys)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("test accuracy (%)")
        ax.set_title(task, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("grey: 1 layer, blue: 4 layers, orange: --stable auto", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", type=Path, help="sweep output folders (runs/stability_...)")
    ap.add_argument("--figure", type=Path, default=None, help="also draw the accuracies here (png)")
    ap.add_argument("--with-lr", action="store_true", help="name each arm with its learning rate too")
    args = ap.parse_args()
    rows = collect(args.roots, args.with_lr)
    if not rows:
        raise SystemExit(f"no finished runs under {', '.join(map(str, args.roots))}")
    print(table(rows))
    acc = acceptance(rows)
    if acc:
        print("\n" + acc)
    if args.figure is not None:
        figure(rows, args.figure)
        print(f"\nfigure written to {args.figure}")


if __name__ == "__main__":
    main()
