"""Does LSC saturate a deep gated net's gates to reach a radius, and what does the gate guard do? (issue 16)

A 4x32 LSTM / GRU on delayed recall (T = 50 by default) is pre-trained by LSC to each target from the same initial
weights with the guard on (``LSCConfig.activity``, the default); the script prints each layer's fraction of saturated
sigmoid-gate units (``σ' < 0.01``) before LSC, after LSC and after the guard, which layers it recentred, and the
radii LSC reports (measured after the guard).

    python experiments/lsc_gate_guard.py                        # LSTM and GRU, targets 0.5 and 1; ~2 min, one thread
    python experiments/lsc_gate_guard.py --cells lstm --targets 0.5 --seq-len 100
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from stablernn import DataConfig, ModelConfig, build_model, load_task, lsc_pretrain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--targets", default="0.5,1.0")
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100, help="LSC steps at most")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_task(DataConfig(task="delayed_recall", seq_len=args.seq_len, n_train=256, n_test=32, batch_size=32))
    x = [next(iter(data.train))[0]]
    fmt = lambda rs: "[" + ", ".join("-" if r is None else f"{r:.3f}" for r in rs) + "]"  # noqa: E731
    for cell in args.cells.split(","):
        torch.manual_seed(args.seed)
        start = build_model(ModelConfig(cell=cell, layers=args.layers, width=args.width), data.info, seed=args.seed)
        for target in (float(t) for t in args.targets.split(",")):
            model = copy.deepcopy(start)
            t0 = time.perf_counter()
            report = lsc_pretrain(model, x, target=target, max_steps=args.steps, progress=False)
            g = report.activity["gates"]
            radii = ", ".join(f"{f} {report.mean_after(f):.2f}" for f in report.after)
            print(f"{args.layers}x{args.width} {cell}, delayed recall T = {args.seq_len}, LSC {target:g} "
                  f"({report.steps} steps, {time.perf_counter() - t0:.0f} s): saturated gate units before "
                  f"{fmt(g['before'])}, after LSC {fmt(g['after_lsc'])}, final {fmt(g['final'])}; recentred "
                  f"{g['recentred']}; radii after (mean) {radii}")


if __name__ == "__main__":
    main()
