"""What LSC pre-training costs, next to training.

1. One LSC step (one time step: every transition Jacobian of a batch of ``--lsc-batch`` sequences, radii, loss,
   backward, AdaBelief+Lookahead step) vs one training step (a batch of ``--train-batch`` whole sequences: forward,
   cross-entropy, backward, AdamW step) on 2x256 LSTM and ALIF nets on digits (8 rows of 8 pixels).
2. Time to reach the target (default LSCConfig, target auto = 0.5) on 2x128 GRU, LSTM and ALIF nets, against the
   time of one training epoch.

    python benchmarks/lsc_cost.py                       # both parts
    python benchmarks/lsc_cost.py --part step --width 256
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from stablernn.data import DataConfig, load_task
from stablernn.lsc.config import LSCConfig
from stablernn.lsc.pretrain import lsc_loss, lsc_pretrain, make_lsc_optimizer, resolve_targets
from stablernn.models import ModelConfig, build_model, detach_states


def _model(cell: str, width: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(cell=cell, layers=2, width=width), input_size=8,
                       output_size=10, seq_len=8)


def train_step_seconds(cell: str, width: int, x: torch.Tensor, y: torch.Tensor, n: int) -> float:
    model = _model(cell, width)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x).mean(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def lsc_step_seconds(cell: str, width: int, x: torch.Tensor, n: int) -> float:
    model = _model(cell, width).eval()
    cfg = LSCConfig()
    targets = resolve_targets(model, cfg)
    opt = make_lsc_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    states = model.initial_states(x.shape[0])
    times = []
    for t in range(n + 1):
        t0 = time.perf_counter()
        loss, new = lsc_loss(model, x[:, t % x.shape[1]], states, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        states = detach_states(new)
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def part_step(a: argparse.Namespace, data) -> None:
    x, y = next(iter(data.train))
    print(f"## one LSC step vs one training step (2x{a.width}, digits rows T=8; training batch {x.shape[0]}, LSC "
          f"batch {a.lsc_batch}; best of {a.n} after one warm-up)\n")
    print("| net | training step s | LSC step s | LSC step / training step | LSC steps per training epoch-time |")
    print("|---|---:|---:|---:|---:|")
    n_batches = sum(1 for _ in data.train)
    for cell in a.cells.split(","):
        tr = train_step_seconds(cell, a.width, x, y, a.n)
        ls = lsc_step_seconds(cell, a.width, x[: a.lsc_batch], a.n)
        print(f"| 2x{a.width} {cell.upper()} | {tr:.3f} | {ls:.3f} | {ls / tr:.1f}x | {tr * n_batches / ls:.1f} |",
              flush=True)


def part_target(a: argparse.Namespace, data) -> None:
    x, y = next(iter(data.train))
    n_batches = sum(1 for _ in data.train)
    print(f"\n## time to reach the target (2x{a.target_width}, default LSCConfig: target auto = 0.5, lr 7.2e-3, "
          f"batch 8, tol 0.05, patience 20, max {a.max_steps} steps)\n")
    print("| net | LSC steps | LSC s | stop | worst |after - target| | one training epoch s | LSC / epoch |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for cell in a.cells.split(","):
        epoch = train_step_seconds(cell, a.target_width, x, y, 2) * n_batches
        model = _model(cell, a.target_width)
        rep = lsc_pretrain(model, data.train, max_steps=a.max_steps, time_limit=None, progress=False)
        worst = max(abs(rep.mean_after(f) - t) for f, t in rep.target.items())
        stop = rep.stop_reason.split(":")[0]
        print(f"| 2x{a.target_width} {cell.upper()} | {rep.steps} | {rep.seconds:.1f} | {stop} | {worst:.3f} | "
              f"{epoch:.2f} | {rep.seconds / epoch:.1f}x |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["step", "target", "both"], default="both")
    ap.add_argument("--cells", default="lstm,alif")
    ap.add_argument("--target-cells", default="gru,lstm,alif")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--target-width", type=int, default=128)
    ap.add_argument("--lsc-batch", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--max-steps", type=int, default=400)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = load_task(DataConfig(task="digits", batch_size=a.train_batch))
    if a.part in ("step", "both"):
        part_step(a, data)
    if a.part in ("target", "both"):
        a.cells = a.target_cells
        part_target(a, data)


if __name__ == "__main__":
    main()
