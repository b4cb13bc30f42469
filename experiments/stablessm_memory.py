"""StableSSM's point (Wang & Li 2023, arXiv:2311.14495, §3.3 and §4) on the LRU's eigenvalue reparameterisations
``exp`` (the LRU's own), ``softplus`` and ``best`` (issue 15).

Task: a synthetic long-memory target, the causal filter ``y[t] = Σ_s ρ(s) x[t-s]`` with polynomially decaying
memory ``ρ(s) = (s + 1)^-1.5`` on i.i.d. Gaussian inputs (an SSM's memory decays exponentially, so a polynomial tail
is the "curse of memory" case). Model: one LRU layer, 1 input, 1 output, N = 16 complex states.

1. Gradient norm over memory length: every |λ| set to ``1 - 1/m`` for memory lengths m = 4 .. 1024 (phases from the
   ring init), ``|dL/dν|`` at that point, per reparameterisation (the same function of λ for all three: only the
   chain-rule factor dρ/dν differs), mean over seeds.
2. Training: Adam on the MSE for ``--steps`` steps at several learning rates from the ring init
   (r_min 0.4, r_max 0.99), normalised test MSE (MSE / Var y) at the end, and the largest |λ| reached, which is
   LSC's time radius of the layer.

    PYTHONPATH=src python experiments/stablessm_memory.py --out runs/stablessm_memory

Writes ``results.json`` and ``stablessm_memory.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from stablernn.cells import REPARAMS, LRUCell, lru_nu


def target_filter(T: int, power: float = 1.5) -> torch.Tensor:
    """ρ(s) = (s + 1)^-power, s = 0..T-1, ``[T]``."""
    return (torch.arange(T, dtype=torch.float64) + 1.0) ** -power


def make_batch(batch: int, T: int, rho: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [B, T, 1]`` i.i.d. N(0, 1) and ``y [B, T, 1]`` = the causal filter of x with ``rho``."""
    x = torch.randn(batch, T, generator=gen, dtype=torch.float64)
    y = F.conv1d(F.pad(x[:, None], (T - 1, 0)), rho.flip(0)[None, None])[:, 0]
    return x[..., None].float(), y[..., None].float()


def lru(reparam: str, seed: int) -> LRUCell:
    torch.manual_seed(seed)
    return LRUCell(1, 1, state_size=16, reparam=reparam)  # type: ignore[arg-type]


def gradient_over_memory(reparam: str, memories: list[int], seeds: list[int], T: int) -> list[float]:
    """Mean over seeds of |dL/dν| with every |λ| = 1 - 1/m."""
    rho = target_filter(T)
    out = []
    for m in memories:
        norms = []
        for seed in seeds:
            cell = lru(reparam, seed)
            with torch.no_grad():
                mod = torch.full_like(cell.nu_log, 1.0 - 1.0 / m)
                cell.nu_log.copy_(lru_nu(mod.double(), reparam).float())
            x, y = make_batch(16, T, rho, torch.Generator().manual_seed(1000 + seed))
            pred, _ = cell.forward_sequence(x, cell.initial_state(16))
            (g,) = torch.autograd.grad(F.mse_loss(pred, y), cell.nu_log)
            norms.append(float(g.norm()))
        out.append(sum(norms) / len(norms))
    return out


def train(reparam: str, lr: float, seed: int, steps: int, T: int) -> dict[str, float]:
    rho = target_filter(T)
    cell = lru(reparam, seed)
    opt = torch.optim.Adam(cell.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    x_test, y_test = make_batch(64, T, rho, torch.Generator().manual_seed(99))
    diverged = False
    for _ in range(steps):
        x, y = make_batch(32, T, rho, gen)
        pred, _ = cell.forward_sequence(x, cell.initial_state(32))
        loss = F.mse_loss(pred, y)
        if not torch.isfinite(loss):
            diverged = True
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred, _ = cell.forward_sequence(x_test, cell.initial_state(64))
        nmse = float(F.mse_loss(pred, y_test) / y_test.var())
        radius = float(cell.eigenvalues().abs().max())
    return {"nmse": nmse if math.isfinite(nmse) and not diverged else float("nan"), "diverged": diverged,
            "time_radius": radius}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/stablessm_memory")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--lrs", default="0.001,0.01,0.1")
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    lrs = [float(v) for v in args.lrs.split(",")]
    memories = [4, 16, 64, 256, 1024]
    t0 = time.perf_counter()
    grads = {r: gradient_over_memory(r, memories, seeds, 2048) for r in REPARAMS}
    print(json.dumps({"memories": memories, "grad_norm": grads}), flush=True)
    runs = []
    for r in REPARAMS:
        for lr in lrs:
            res = [train(r, lr, s, args.steps, args.T) for s in seeds]
            row = {"reparam": r, "lr": lr, "nmse": [x["nmse"] for x in res],
                   "time_radius": [x["time_radius"] for x in res], "diverged": sum(x["diverged"] for x in res)}
            runs.append(row)
            print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps({"memories": memories, "grad_norm": grads, "training": runs,
                                                  "steps": args.steps, "T": args.T, "seeds": seeds,
                                                  "seconds": time.perf_counter() - t0}, indent=1))
    plot(memories, grads, runs, out / "stablessm_memory.png")


def plot(memories: list[int], grads: dict[str, list[float]], runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r, g in grads.items():
        a.loglog(memories, g, marker="o", label=r)
    a.set_xlabel("memory length m (|λ| = 1 - 1/m)")
    a.set_ylabel("|dL/dν| at that point")
    a.set_title("gradient w.r.t. the eigenvalue parameters", fontsize=9)
    a.legend(fontsize=8)
    for r in grads:
        rows = [x for x in runs if x["reparam"] == r]
        mean = [sum(v for v in x["nmse"] if v == v) / max(1, sum(v == v for v in x["nmse"])) for x in rows]
        b.semilogx([x["lr"] for x in rows], mean, marker="o", label=r)
    b.set_xlabel("Adam learning rate")
    b.set_ylabel("test MSE / Var y")
    b.set_title("training on the polynomial-memory target", fontsize=9)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
