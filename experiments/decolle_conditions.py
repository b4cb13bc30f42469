"""How well paper B's Conditions I-IV hold on the DECOLLE nets of ``experiments/decolle_quick.toml``, at build time
and after training (issue 15, docs/results.md section 10).

Each condition is a statement about a layer's parameters (arXiv:2202.00282; ``stablernn.snn.conditions``). Here
each is *evaluated* at the parameters the network actually has, with the library's own mean-field formulas, and
reported as the quantity the condition sets to 1 (mean over the layer's neurons):

- I:   stationary mean voltage / threshold at the layer's recurrent weight mean per neuron
       (``stationary_mean_voltage``)
- II:  n_pre (σ²_rec + μ²_rec / 2) / E[i_in²], the recurrent-to-input current second-moment ratio (``condition_ii``'s
       prediction, at the actual per-neuron recurrent mean and variance)
- III: the largest one-step voltage gain at the actual SG dampening (``condition_iii_gain``)
- IV:  the expected squared one-step gain at the actual dampening / sharpness / tail (``expected_sq_gain``)

Layer 1 reads the task's input statistics, layer 2 Bernoulli(1/2) spikes, as the design does
(``stablernn.snn.design.design_model``).

    stablernn sweep experiments/decolle_quick.toml --threads 1
    python experiments/decolle_conditions.py runs/decolle_quick --out runs/decolle_quick/conditions.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from stablernn.cells import LIFCell
from stablernn.data import load_task
from stablernn.models import build_model
from stablernn.snn.conditions import (
    LayerParams,
    condition_iii_gain,
    expected_sq_gain,
    input_current_second_moment,
    stationary_mean_voltage,
)
from stablernn.snn.stats import TaskStats, task_stats
from stablernn.surrogate import shape_of
from stablernn.train.loop import seed_everything
from stablernn.train.runs import load_run
from stablernn.train.stable import resolve_stable

RATE = 0.5  # the conditions' Bernoulli spike rate (paper B)


def layer_residuals(cell: LIFCell, stats: TaskStats) -> dict[str, float]:
    """The four conditions' quantities (target 1 each) at ``cell``'s actual parameters, mean over neurons."""
    p = LayerParams.from_cell(cell, RATE)
    w, n_pre = p.w_rec, p.n_pre
    mu = w.sum(1) / n_pre  # per-neuron mean of the existing recurrent weights
    var = ((w - mu[:, None]) ** 2 * p.mask).sum(1) / n_pre
    e_in = input_current_second_moment(p, stats)
    spike = cell.spike
    damp = spike.dampening.detach().to(torch.float64).expand(p.n)
    sharp = spike.sharpness.detach().to(torch.float64).expand(p.n)
    shape = shape_of(spike.shape.name)
    return {
        "I": float((stationary_mean_voltage(p, mu, RATE) / p.threshold).mean()),
        "II": float((n_pre * (var + mu * mu / 2.0) / e_in).mean()),
        "III": float(condition_iii_gain(p, damp).mean()),
        "IV": float(expected_sq_gain(p, shape, damp, sharp, float(spike.tail_q), rate=RATE).mean()),
    }


def initial_model(config):
    """The network a run started from: the same calls, in the same order, as ``stablernn.fit`` (the global seed,
    then the task, then the build; the weights not set by a condition come from the global generator)."""
    seed_everything(config.train.seed)
    data = load_task(config.data)
    return build_model(resolve_stable(config, data.info).model, data.info, seed=config.train.seed)


def model_residuals(model, stats: TaskStats) -> list[dict[str, float]]:
    return [layer_residuals(c, stats if l == 0 else TaskStats.spikes(RATE)) for l, c in enumerate(model.cells)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="the sweep's output folder (runs/decolle_quick)")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    rows = []
    for run_dir in sorted(p.parent for p in args.runs.glob("*/final.json")):
        run = load_run(run_dir)
        if run.config.model.cell != "decolle":
            continue
        stats = task_stats(run.task)
        init = initial_model(run.config)
        final = json.loads((run_dir / "final.json").read_text())
        rows.append({"run": run_dir.name, "conditions": list(run.config.model.conditions),
                     "local_loss": run.config.train.local_loss, "seed": run.config.train.seed,
                     "test_acc": final["test_acc"], "init": model_residuals(init, stats),
                     "trained": model_residuals(run.model, stats)})
        r = rows[-1]
        print(r["run"], f"acc {r['test_acc']:.3f}",
              " | ".join(f"{when} L{l + 1} " + " ".join(f"{k} {v:.3g}" for k, v in lay.items())
                         for when in ("init", "trained") for l, lay in enumerate(r[when])), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    print(summary_table(rows))


def summary_table(rows: list[dict]) -> str:
    """Markdown: per (conditions, local loss, layer) the four quantities at init -> after training and the test
    accuracy, mean ± sd over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(("-".join(r["conditions"]) or "none", r["local_loss"]), []).append(r)

    def ms(vals: list[float]) -> str:
        t = torch.tensor(vals, dtype=torch.float64)
        return f"{t.mean():.3g} ± {t.std():.2g}" if len(vals) > 1 else f"{t.mean():.3g}"

    lines = ["| conditions | local loss | layer | I: E[v]/ϑ | II: rec/in current | III: max gain | IV: E gain² "
             "| test acc (%) |", "|---|---:|---:|---|---|---|---|---:|"]
    for (conds, ll), rs in sorted(groups.items()):
        for l in range(len(rs[0]["init"])):
            cells = [f"{ms([r['init'][l][k] for r in rs])} → {ms([r['trained'][l][k] for r in rs])}"
                     for k in ("I", "II", "III", "IV")]
            acc = ms([100 * r["test_acc"] for r in rs]) if l == 0 else ""
            lines.append(f"| {conds} | {ll:g} | {l + 1} | " + " | ".join(cells) + f" | {acc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
