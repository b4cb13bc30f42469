"""Issue 13, item 3: the LSC optimizer on the demo's three nets (2x128 LSTM / GRU / ALIF, digits rows, the demo's
LSC settings with a 150-step budget): the papers' AdaBelief + Lookahead at the demo's lr 4e-2 against AdamW at 4e-2,
2e-2 and 1e-2, in one process. (When it was run, AdaBelief + Lookahead came from pytorch_optimizer, imported here
once before the timings; they are stablernn.optim's own since, same trajectory.) Results: docs/lsc.md
"Fewer steps".

    python experiments/lsc_demo_optimizers.py
"""
from __future__ import annotations

import dataclasses
import time

import torch

from stablernn import DataConfig, build_model, load_task, lsc_pretrain
from stablernn.cli.train import DEMO_RUNS, demo_lsc

ARMS = (("adabelief_lookahead", 4e-2), ("adamw", 4e-2), ("adamw", 2e-2), ("adamw", 1e-2))


def main() -> None:
    torch.set_num_threads(1)
    data = load_task(DataConfig(task="digits", layout="rows"))
    for cell in DEMO_RUNS:
        for opt, lr in ARMS:
            torch.manual_seed(0)
            model = build_model(DEMO_RUNS[cell][0], data.info, seed=0)
            cfg = dataclasses.replace(demo_lsc(cell), optimizer=opt, lr=lr, max_steps=150)
            t0 = time.perf_counter()
            rep = lsc_pretrain(model, data.train, cfg)
            after = {k: [round(x, 3) for x in v] for k, v in rep.after.items()}
            print(f"{cell} {opt} lr {lr:g}: {time.perf_counter() - t0:.2f} s, {rep.steps} steps "
                  f"({rep.stop_reason[:20]}), after {after}", flush=True)


if __name__ == "__main__":
    main()
