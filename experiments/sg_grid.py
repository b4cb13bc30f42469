"""Surrogate-gradient grid vs the stability design (paper B Fig. 2 and Fig. 4 in miniature).

A 2-layer ALIF network on a small task, trained with every SG shape (default dampening 1, sharpness 1; q = 1.56
for q-PseudoSpike) at three learning rates and two seeds, plus the configuration the stability conditions design
(Conditions I+II init, per-neuron γ from III, s from IV), with and without the paper's firing-rate control (initial
rate 0.5 fitted through the biases, sparsity loss to 0.01 ramped in over 20-60 % of training).

Prints a markdown table of test accuracy (mean ± sd over seeds) and answers two questions: is the fast-sigmoid
derivative the most robust across learning rates (paper B's claim), and how far is the designed configuration from
the grid's best. Runs are written under ``--out`` and reused when the script is rerun.

Example (about 3.5 CPU-minutes on one thread): python experiments/sg_grid.py --epochs 30 --lrs 1e-3,1e-2,1e-1
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from stablernn.cli.snn import design_for_task, train_designed
from stablernn.data import DataConfig, load_task
from stablernn.models import ModelConfig
from stablernn.surrogate import SHAPES
from stablernn.train import RunConfig, TrainConfig, fit


def grid_runs(args, data) -> dict[tuple[str, float, int], dict]:
    results = {}
    for shape in SHAPES:
        for lr in args.lrs:
            for seed in args.seeds:
                name = f"{shape}-lr{lr:g}-s{seed}"
                run = RunConfig(name=name, out_dir=args.out,
                                model=ModelConfig(cell="alif", layers=2, width=args.width, tau=args.tau,
                                                  surrogate=shape),
                                data=DataConfig(task=args.task),
                                train=TrainConfig(epochs=args.epochs, lr=lr, seed=seed, progress=False, threads=1))
                results[(shape, lr, seed)] = fit(run, data=data)
                print(f"{name}: test_acc {results[(shape, lr, seed)]['test_acc']:.4f}", flush=True)
    return results


def designed_runs(args, rate_control: bool) -> tuple[dict[tuple[str, float, int], dict], list]:
    results, designs_out = {}, []
    label = "designed+rate" if rate_control else "designed"
    for seed in args.seeds:
        for lr in args.lrs:
            (data_cfg, model_cfg, model, info), designs, _ = design_for_task(
                args.task, "alif", 2, args.width, tau=args.tau, threshold=1.0, reset="subtract",
                shape="fast_sigmoid", conditions=("I", "II", "III", "IV"), rate=0.5, seed=seed)
            if lr == args.lrs[0]:
                designs_out.append([d.to_dict() for d in designs])
            name = f"{label}-lr{lr:g}-s{seed}"
            res = train_designed(model, designs, data_cfg, model_cfg, info, epochs=args.epochs, lr=lr, seed=seed,
                                 init_rate=0.5 if rate_control else None, final_rate=0.01 if rate_control else None,
                                 rate_ramp="0.2:0.6", out_dir=args.out, name=name, progress=False, threads=1)
            results[(label, lr, seed)] = res
            print(f"{name}: test_acc {res['test_acc']:.4f} test_rate {res.get('test_rate', float('nan')):.3f}",
                  flush=True)
    return results, designs_out


def table(results: dict, rows: list[str], lrs: list[float], seeds: list[int]) -> tuple[str, dict]:
    def acc(row, lr):
        return [results[(row, lr, s)]["test_acc"] for s in seeds if (row, lr, s) in results]

    head = "| SG / config | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | mean over lr | worst lr |"
    lines = [head, "|" + "---|" * (len(lrs) + 3)]
    stats = {}
    for row in rows:
        cells, means = [], []
        for lr in lrs:
            a = acc(row, lr)
            m = statistics.mean(a)
            sd = statistics.stdev(a) if len(a) > 1 else 0.0
            cells.append(f"{m:.3f} ± {sd:.3f}")
            means.append(m)
        stats[row] = {"per_lr": means, "mean": statistics.mean(means), "worst": min(means), "best": max(means)}
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {stats[row]['mean']:.3f} | {stats[row]['worst']:.3f} |")
    return "\n".join(lines), stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="digits")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--tau", type=float, default=20.0)
    ap.add_argument("--lrs", type=lambda s: [float(x) for x in s.split(",")], default=[3e-4, 3e-3, 3e-2])
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    ap.add_argument("--out", default="runs/sg_grid")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0, w0 = time.process_time(), time.time()
    data = load_task(DataConfig(task=args.task))
    results = grid_runs(args, data)
    res_d, designs = designed_runs(args, rate_control=False)
    res_r, _ = designed_runs(args, rate_control=True)
    results.update(res_d)
    results.update(res_r)
    rows = [*SHAPES, "designed", "designed+rate"]
    md, stats = table(results, rows, args.lrs, args.seeds)
    grid_rows = list(SHAPES)
    most_robust_mean = max(grid_rows, key=lambda r: stats[r]["mean"])
    most_robust_worst = max(grid_rows, key=lambda r: stats[r]["worst"])
    best_row, best_lr_i = max(((r, i) for r in grid_rows for i in range(len(args.lrs))),
                              key=lambda ri: stats[ri[0]]["per_lr"][ri[1]])
    best = stats[best_row]["per_lr"][best_lr_i]
    print(f"\n## {args.task}, ALIF 2x{args.width}, tau {args.tau:g}, {args.epochs} epochs, AdamW, test accuracy "
          f"(mean ± sd over seeds {args.seeds})\n")
    print(md)
    print(f"\nmost robust across lr (mean over lr): {most_robust_mean} ({stats[most_robust_mean]['mean']:.3f}); "
          f"by worst lr: {most_robust_worst} ({stats[most_robust_worst]['worst']:.3f}); fast_sigmoid: mean "
          f"{stats['fast_sigmoid']['mean']:.3f}, worst {stats['fast_sigmoid']['worst']:.3f}")
    print(f"best cell of the grid: {best_row} at lr {args.lrs[best_lr_i]:g}: {best:.3f}")
    for row in ("designed", "designed+rate"):
        print(f"{row}: best lr {stats[row]['best']:.3f} ({stats[row]['best'] - best:+.3f} vs grid best), "
              f"mean over lr {stats[row]['mean']:.3f} ({stats[row]['mean'] - stats['fast_sigmoid']['mean']:+.3f} vs "
              f"default fast_sigmoid)")
    d0 = designs[0]
    print("designed SG (seed 0): " + "; ".join(
        f"layer {l}: γ {d['dampening_mean']:.4g}, s {d['sharpness_mean']:.4g}" for l, d in enumerate(d0)))
    print(f"CPU time {time.process_time() - t0:.0f} s, wall {time.time() - w0:.0f} s (this run; reused runs are not "
          f"retrained)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(md + "\n")
    (out / "summary.json").write_text(json.dumps({"stats": stats, "designs": designs, "args": vars(args)},
                                                 indent=2, default=str))


if __name__ == "__main__":
    main()
