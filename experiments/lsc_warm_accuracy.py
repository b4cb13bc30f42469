"""How accurate the warm engine's radii are along a real LSC run, and what its Krylov budget costs per step.

For each cell kind and each ``--blocks`` value, one LSC run of ``--steps`` steps (2 layers of ``--width``, digits rows,
LSC batch ``--lsc-batch``, ``LSCConfig.warm_blocks`` = that value, everything else default). Every ``--check-every``-th
step, the radius of every square transition the warm engine measured is compared with ``eigvals`` of the same
Jacobian (per sample: ``|warm - exact| / exact``); those steps are left out of the timing. The other steps are timed
against a training step of the same net (batch ``--train-batch``, AdamW), alternating, so a load change hits both.

    python experiments/lsc_warm_accuracy.py --cells alif,lstm,gru --blocks 12,8
    python experiments/lsc_warm_accuracy.py --cells alif --blocks 8 --steps 60 --width 128

One block of lines per run: ms per LSC step, ms per training step and their ratio (medians), the warm engine's
counters (``WarmStats``: retried, cold, exact fallbacks), the moving-average radii at the end, then per transition
the median / 90th percentile / largest relative error (docs/lsc.md "Krylov blocks per LSC step").
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from lsc_cost import LSCStep, TrainStep, _timer
from stablernn.data import DataConfig, load_task
from stablernn.lsc import pretrain
from stablernn.lsc.measures import spectral_radius


def run(cell: str, width: int, blocks: int, a: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> None:
    step = LSCStep(cell, 2, width, [x], engine="warm", batch_size=a.lsc_batch, warm_blocks=blocks)
    train = TrainStep(cell, 2, width, x, y)
    errors: dict[str, list[float]] = {}
    checking = False
    measure = pretrain._measure

    def checked(r: pretrain._Run, trs: list) -> list:
        out = measure(r, trs)
        if checking:
            with torch.no_grad():
                for tr, radius in out:
                    if tr.source.shape[-1] != tr.out_dim() or tr.source.shape[-1] < r.cfg.warm_min_dim:
                        continue  # the exact engine measured it (rectangular or small): nothing to compare
                    ref = spectral_radius(tr.jacobian())
                    errors.setdefault(f"{tr.family} {tr.layer}", []).extend(
                        ((radius.detach() - ref).abs() / ref).tolist())
        return out

    lsc_ms, train_ms = [], []
    pretrain._measure = checked
    try:
        for i in range(a.steps):
            checking = i % a.check_every == a.check_every - 1
            t0 = time.perf_counter()
            pretrain._one_step(step.run)
            dt = time.perf_counter() - t0
            if not checking and i >= 2:  # the first two: the cold start
                lsc_ms.append(1e3 * dt)
                train_ms.append(1e3 * _timer(train))
    finally:
        pretrain._measure = measure
    ls, ts = statistics.median(lsc_ms), statistics.median(train_ms)
    st = step.run.warm.stats
    ema = {k: round(v, 3) for k, v in step.run.tracker.family_means().items()}
    print(f"2x{width} {cell.upper()}, {blocks} blocks: LSC step {ls:.1f} ms, training step {ts:.1f} ms, "
          f"{ls / ts:.2f}x; retried {st.retried}, cold {st.cold}, exact {st.exact}; moving averages {ema}")
    for name, e in errors.items():
        e = sorted(e)
        print(f"  {name}: median {100 * e[len(e) // 2]:.2f}%, p90 {100 * e[int(0.9 * len(e))]:.2f}%, "
              f"max {100 * e[-1]:.2f}% (n = {len(e)})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="alif,lstm,gru")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--blocks", default="12,8", help="LSCConfig.warm_blocks values, comma-separated")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--check-every", type=int, default=4)
    ap.add_argument("--lsc-batch", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x, y = next(iter(load_task(DataConfig(task="digits", layout="rows", batch_size=a.train_batch)).train))
    for cell in a.cells.split(","):
        for blocks in (int(b) for b in a.blocks.split(",")):
            run(cell, a.width, blocks, a, x, y)


if __name__ == "__main__":
    main()
