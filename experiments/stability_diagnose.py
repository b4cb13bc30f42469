"""Why does ``--stable auto`` fail a deep Elman net on a memory task? Radii, forward signal and gradient reach after
LSC to several target rules, on one batch (issue 16, docs/results.md "Where stability matters").

For each rule the script builds the same default-initialised net, runs LSC (100 steps, as the benchmark does) and
prints: the mean radius per family after LSC, the std of each layer's state at the last step (forward signal), and
from the measured gradient grid ``|dL/ds[t, l]|`` the reach of the loss to the first step relative to the last step,
``log10 |dL/ds[0, 0]| - log10 |dL/ds[T-1, L-1]|`` (how much of the cue's gradient survives the depth x time lattice).

    python experiments/stability_diagnose.py --cell tanh_rnn --task delayed_recall --seq-len 50
"""
from __future__ import annotations

import argparse
import copy
import math

import torch

from stablernn import DataConfig, ModelConfig, build_model, gradient_grid, load_task, lsc_pretrain
from stablernn.lsc.theory import theory_targets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cell", default="tanh_rnn")
    ap.add_argument("--task", default="delayed_recall")
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rules", default="none,theory,0.5,1.0,depth1_time1")
    a = ap.parse_args()
    torch.set_num_threads(1)
    data = load_task(DataConfig(task=a.task, seq_len=a.seq_len, n_train=256, n_test=64, batch_size=64))
    x, y = next(iter(data.train))
    L, T = a.layers, a.seq_len
    print(f"{a.cell} L={L} T={T} {a.task}; theory targets {theory_targets(L, T)}")
    print("| rule | time | depth | encoder | decoder | reach (log10) | per-layer reach at t=0 |")
    print("|---|---|---|---|---|---|---|")
    for rule in a.rules.split(","):
        model = build_model(ModelConfig(cell=a.cell, layers=L, width=a.width), data.info, seed=0)
        if rule == "none":
            target = None
        elif rule.startswith("depth1_time"):
            target = {"depth": 1.0, "time": float(rule.split("time")[1]), "encoder": 1.0, "decoder": 1.0}
        elif rule in ("theory", "auto", "unbalanced"):
            target = rule
        else:
            target = float(rule)
        radii = {}
        if target is not None:
            rep = lsc_pretrain(model, [(x, y)], target=target, max_steps=a.steps, progress=False)
            radii = {f: rep.mean_after(f) for f in rep.after}
        else:
            rep = lsc_pretrain(copy.deepcopy(model), [(x, y)], target=1.0, max_steps=1, progress=False)
            radii = {f: rep.mean_before(f) for f in rep.before}  # the default init's radii (the copy is dropped)
        g = gradient_grid(model, x, y, loss_fn=lambda lg, yy: torch.nn.functional.cross_entropy(lg[:, -1], yy,
                                                                                                reduction="none"))
        n = g.norms.clamp_min(1e-30)
        reach = math.log10(float(n[0, 0])) - math.log10(float(n[-1, -1]))
        per = " ".join(f"{math.log10(float(n[0, l])) - math.log10(float(n[-1, -1])):+.1f}" for l in range(L))
        fmt = {f: f"{v:.2f}" for f, v in radii.items()}
        print(f"| {rule} | {fmt.get('time', '-')} | {fmt.get('depth', '-')} | {fmt.get('encoder', '-')} | "
              f"{fmt.get('decoder', '-')} | {reach:+.1f} | {per} |", flush=True)


if __name__ == "__main__":
    main()
