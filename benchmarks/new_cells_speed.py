"""Whole-sequence path vs the step loop for the issue-15 cells: training-step time ratio, in one run.

For each cell kind, a 2-layer ``DeepRNN`` of width ``--width`` on ``[batch, T, 40]`` random input; one "batch" =
forward + backward of the time-averaged cross-entropy (no optimizer step). ``fast`` is ``cell.fast = True`` (the
cell's ``forward_sequence``), ``loop`` is ``cell.fast = False`` (the autograd step loop). Both share weights and
input; after warm-up, ``--repeats`` batches alternate fast / loop, and the table shows the median process-CPU ms
per batch (less sensitive to other load on a shared machine) and the ratio loop / fast of the medians.

    PYTHONPATH=src python benchmarks/new_cells_speed.py --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from stablernn.models import ModelConfig, build_model


def one_batch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    t0 = time.process_time()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x).mean(1), y).backward()
    return (time.process_time() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="ligru,ligru_stable,spiking_lstm,decolle,lif")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, args.steps, 40), torch.randint(0, 10, (args.batch,))
    print(f"| cell | fast ms | loop ms | loop / fast |  (2 x {args.width}, batch {args.batch}, T {args.steps}, "
          f"{args.threads} thread(s), median of {args.repeats})")
    print("|---|---:|---:|---:|")
    for kind in args.cells.split(","):
        torch.manual_seed(0)
        model = build_model(ModelConfig(cell=kind, layers=2, width=args.width, threshold=0.5), input_size=40,
                            output_size=10, seq_len=args.steps)
        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(args.repeats + 2):
            for fast in (True, False):
                for c in model.cells:
                    c.fast = fast
                ms = one_batch(model, x, y)
                if i >= 2:  # warm-up
                    times[fast].append(ms)
        f, lo = statistics.median(times[True]), statistics.median(times[False])
        print(f"| {kind} | {f:.1f} | {lo:.1f} | {lo / f:.2f} |", flush=True)


if __name__ == "__main__":
    main()
