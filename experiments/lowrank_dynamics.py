"""How rank and sparsity of the recurrent weight move the time radius, the top Lyapunov exponent and the linear
memory capacity (Tumma et al. 2023, arXiv:2310.03915; issue 15).

One-layer networks of width 64, freshly initialised with ``W_hh = (U V^T) ⊙ M`` at rank r and mask density p, the
initial spectral radius of every block rescaled to the dense init's (1 for the orthogonal init of tanh-RNN and GRU),
so what changes with r and p is the *shape* of the spectrum and the non-normality, not its largest modulus. The
dense (unparametrised, orthogonal) cell is the reference row. Measured on the same seeds for every configuration:

- time radius: batch-mean spectral radius of the one-step time Jacobian, mean over 8 steps of 32 digits rows
  (``stablernn.lsc.radii.radii_over_time``);
- top Lyapunov exponent per step on digits laid end to end (``stablernn.dynamics.lyapunov.lyapunov_spectrum``);
- linear memory capacity MC (``stablernn.dynamics.memory.memory_capacity``, k_max 40, 4 x 1040 steps).

    PYTHONPATH=src python experiments/lowrank_dynamics.py --out runs/lowrank_dynamics

Writes ``results.json`` and ``lowrank_dynamics.png`` (one panel per measure, x = rank, one line per density).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from stablernn.data import DataConfig, load_task
from stablernn.dynamics.lyapunov import lyapunov_spectrum
from stablernn.dynamics.memory import memory_capacity
from stablernn.lsc.radii import radii_over_time
from stablernn.models import ModelConfig, build_model


def measure(cell: str, rank: int | None, density: float, seeds: list[int], digits_x: torch.Tensor,
            stream: torch.Tensor) -> dict[str, float]:
    rows = []
    for seed in seeds:
        torch.manual_seed(seed)
        low = rank is not None or density < 1.0
        cfg = ModelConfig(cell=cell, layers=1, width=64, recurrent_rank=rank if low else None,
                          recurrent_density=density)
        model = build_model(cfg, input_size=8, output_size=10, seq_len=8)
        radius = radii_over_time(model, digits_x, families=("time",)).mean()["time"][0]
        lyap = lyapunov_spectrum(model.cells[0], stream, k=1, seed=seed).top
        mc = memory_capacity(model.cells[0], 40, n_steps=1040, streams=4, seed=seed).total
        rows.append((radius, lyap, mc))
    t = torch.tensor(rows, dtype=torch.float64)
    mean, sd = t.mean(0), t.std(0) if len(seeds) > 1 else torch.zeros(3, dtype=torch.float64)
    return {"time_radius": float(mean[0]), "time_radius_sd": float(sd[0]), "top_lyapunov": float(mean[1]),
            "top_lyapunov_sd": float(sd[1]), "memory_capacity": float(mean[2]), "memory_capacity_sd": float(sd[2])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/lowrank_dynamics")
    ap.add_argument("--cells", default="tanh_rnn,gru")
    ap.add_argument("--ranks", default="1,4,16,64")
    ap.add_argument("--densities", default="0.1,0.3,1.0")
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_task(DataConfig(task="digits", batch_size=32))
    data.train.set_epoch(0)
    digits_x = next(iter(data.train))[0]  # [32, 8, 8]
    stream = torch.cat([digits_x.roll(i, 0).reshape(-1, 8)[None, :200] for i in range(4)])
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    t0 = time.perf_counter()
    for cell in args.cells.split(","):
        res = {"cell": cell, "rank": "dense", "density": 1.0, **measure(cell, None, 1.0, seeds, digits_x, stream)}
        results.append(res)
        print(json.dumps(res), flush=True)
        for density in [float(p) for p in args.densities.split(",")]:
            for rank in [int(r) for r in args.ranks.split(",")]:
                res = {"cell": cell, "rank": rank, "density": density,
                       **measure(cell, rank, density, seeds, digits_x, stream)}
                results.append(res)
                print(json.dumps(res), flush=True)
    (out / "results.json").write_text(json.dumps({"seeds": seeds, "seconds": time.perf_counter() - t0,
                                                  "results": results}, indent=1))
    plot(results, out / "lowrank_dynamics.png")


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({r["cell"] for r in results})
    keys = [("time_radius", "time radius"), ("top_lyapunov", "top Lyapunov exponent / step"),
            ("memory_capacity", "memory capacity (k_max 40)")]
    fig, axes = plt.subplots(len(cells), 3, figsize=(12, 3.2 * len(cells)), squeeze=False)
    for i, cell in enumerate(cells):
        rows = [r for r in results if r["cell"] == cell]
        dense = next(r for r in rows if r["rank"] == "dense")
        for j, (k, label) in enumerate(keys):
            ax = axes[i][j]
            for p in sorted({r["density"] for r in rows if r["rank"] != "dense"}):
                pts = sorted((r["rank"], r[k], r[k + "_sd"]) for r in rows if r["rank"] != "dense"
                             and r["density"] == p)
                ax.errorbar([a for a, _, _ in pts], [b for _, b, _ in pts], [c for _, _, c in pts], marker="o",
                            capsize=2, label=f"density {p:g}")
            ax.axhline(dense[k], color="k", ls="--", lw=1, label="dense orthogonal")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("rank r")
            ax.set_title(f"{cell}: {label}", fontsize=9)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
