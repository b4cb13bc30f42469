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
from stablernn.train.runs import load_run

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
        init = build_model(run.config.model, run.task, seed=run.config.train.seed)
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


if __name__ == "__main__":
    main()
