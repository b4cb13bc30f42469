"""Does LSC silence a deep ALIF on a long memory task, and does the activity guard undo it? (issue 16)

A 4x32 ALIF on delayed recall (T = 100 by default) is pre-trained by LSC to a target, once with the activity guard
off and once with it on (``LSCConfig.activity``), from the same initial weights; the script prints each layer's firing
rate before LSC, after LSC and after the guard, with the radii LSC reports.

    python experiments/lsc_activity_guard.py                      # ~2-4 min on one thread
    python experiments/lsc_activity_guard.py --seq-len 50 --target theory --steps 100
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from stablernn import DataConfig, ModelConfig, build_model, load_task, lsc_pretrain
from stablernn.lsc.activity import spiking_rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--target", default="0.5", help="LSC target: a number, auto, unbalanced or theory")
    ap.add_argument("--steps", type=int, default=200, help="LSC steps at most")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = load_task(DataConfig(task="delayed_recall", seq_len=args.seq_len, n_train=256, n_test=32, batch_size=32))
    model = build_model(ModelConfig(cell="alif", layers=args.layers, width=args.width), data.info, seed=args.seed)
    x = [next(iter(data.train))[0]]
    target: float | str = float(args.target) if args.target[0].isdigit() else args.target
    fmt = lambda rs: "[" + ", ".join(f"{r:.3f}" for r in rs) + "]"  # noqa: E731
    print(f"{args.layers}x{args.width} ALIF, delayed recall T = {args.seq_len}, LSC target {target}, "
          f"at most {args.steps} steps; rates before LSC {fmt(spiking_rates(model, x))}")
    for guard in (None, (0.01, 0.9)):
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        report = lsc_pretrain(m, x, target=target, max_steps=args.steps, batch_size=16, measure_steps=4,
                              activity=guard, progress=False, seed=args.seed)
        print(f"\nguard {'off' if guard is None else guard}: {time.perf_counter() - t0:.0f} s")
        print(report.table())
        print(f"rates on the LSC batch after pre-training: {fmt(spiking_rates(m, x))}")


if __name__ == "__main__":
    main()
