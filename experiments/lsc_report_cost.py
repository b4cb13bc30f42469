"""The LSC report's cost and accuracy on the demo's nets (2x128 LSTM / GRU / ALIF, digits rows, the first batch cut to
LSC's 8 sequences, all 8 time steps as ``measure_steps = 16`` gives): the before/after radii by

- ``warm``: the report as it was (warm engine, ``REPORT_WARM_BLOCKS = 24``, exact below ``REPORT_WARM_MIN_DIM``);
- ``exact autograd``: the exact engine with Jacobians by autograd (the reference);
- ``exact closed form``: the exact engine with the cells' closed-form Jacobians (``measures.CLOSED_FORM_NOGRAD``).

At init and after the demo's LSC (the nets' own runs), each timed ``--rounds`` times (median; the first call of a
process pays one-time costs, so one warm-up call runs before). Error: the largest relative difference of any
(family, layer) mean from the reference.

    OMP_NUM_THREADS=1 python experiments/lsc_report_cost.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from stablernn.cli.train import demo_configs
from stablernn.data import load_task
from stablernn.lsc import measures
from stablernn.lsc.measures import WarmState
from stablernn.lsc.pretrain import REPORT_WARM_BLOCKS, lsc_pretrain
from stablernn.lsc.radii import radii_over_time
from stablernn.train.loop import build_for_task, seed_everything


def report(model, x, variant: str) -> dict[str, list[float]]:
    kw = {"families": ["time", "depth", "encoder", "decoder"], "rectangular": "norm", "steps": 16}
    measures.CLOSED_FORM_NOGRAD = variant != "exact autograd"
    try:
        if variant == "warm":
            return radii_over_time(model, x, engine="warm", state=WarmState(), warm_blocks=REPORT_WARM_BLOCKS,
                                   warm_min_dim=256, **kw).mean()
        return radii_over_time(model, x, engine="exact", **kw).mean()
    finally:
        measures.CLOSED_FORM_NOGRAD = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="lstm,gru,alif")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    runs = {r.name.removesuffix("-lsc"): r for r in demo_configs("/tmp/lsc_report_cost", lsc=True) if r.lsc}
    data = load_task(next(iter(runs.values())).data)
    variants = ("warm", "exact autograd", "exact closed form")
    print("| net | weights | " + " | ".join(f"{v} s" for v in variants) + " | warm error | closed-form error |")
    print("|---|---|" + "---:|" * (len(variants) + 2))
    for cell in a.cells.split(","):
        run = runs[cell]
        seed_everything(run.train.seed)
        model = build_for_task(run, data.info)
        batches = [(x, y) for _, (x, y) in zip(range(run.lsc.batches), data.train, strict=False)]
        x = batches[0][0][: run.lsc.batch_size]
        report(model, x, "exact closed form")  # warm-up of the process's first calls
        for when in ("init", "after LSC"):
            if when == "after LSC":
                lsc_pretrain(model, batches, run.lsc)
            secs: dict[str, list[float]] = {v: [] for v in variants}
            got: dict[str, dict[str, list[float]]] = {}
            for _ in range(a.rounds):
                for v in variants:
                    t = time.perf_counter()
                    got[v] = report(model, x, v)
                    secs[v].append(time.perf_counter() - t)
            ref = got["exact autograd"]

            def err(v: str, ref=ref, got=got) -> float:
                return max(abs(a_ - b_) / abs(b_) for f in ref for a_, b_ in zip(got[v][f], ref[f], strict=True))

            print(f"| 2x128 {cell.upper()} | {when} | " + " | ".join(f"{statistics.median(secs[v]):.2f}"
                                                                   for v in variants)
                  + f" | {100 * err('warm'):.2f}% | {100 * err('exact closed form'):.5f}% |", flush=True)


if __name__ == "__main__":
    main()
