"""First LSC comparison: deep GRU / LSTM / ALIF trained from the default initialisation vs after LSC pre-training to
radius 1.0 and to 0.5, several seeds, a small budget; plus the FFN claim (radii of 30x128 FFNs at standard inits).

    python experiments/lsc_compare.py compare            # 5-layer nets on digits (64 pixels as a sequence)
    python experiments/lsc_compare.py compare --layout rows --epochs 20 --width 64
    python experiments/lsc_compare.py ffn                # radii of 30x128 FFNs against the target 1

``compare`` writes ``OUT/results.jsonl`` (one line per finished run; rerunning skips them), the run directories,
``OUT/grid_<cell>.png`` (gradient grids at initialisation, seed 0) and prints markdown tables: test accuracy (mean ±
sd over seeds) and the measured gradient grid at initialisation: ``log10 |dL/ds|`` at the first step of the first
layer relative to the last step of the last layer (how much gradient reaches the far corner of the depth x time grid).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import torch

from stablernn.data import DataConfig, load_task
from stablernn.diagnostics import gradient_grid, plot_gradient_grid
from stablernn.lsc.config import LSCConfig
from stablernn.lsc.pretrain import lsc_pretrain
from stablernn.lsc.radii import radii_over_time
from stablernn.models import FFN, ModelConfig, build_model
from stablernn.train import fit
from stablernn.train.config import RunConfig, TrainConfig

INITS = {"default": None, "lsc1.0": 1.0, "lsc0.5": 0.5}
CELL_OPTIONS: dict[str, dict[str, Any]] = {"alif": {"threshold": 0.5}}  # as in `stablernn demo`


def _grid_summary(norms: torch.Tensor) -> dict[str, float]:
    g = norms.clamp_min(1e-30).log10()
    return {"corner": float(g[0, 0] - g[-1, -1]), "first_step_layer1": float(g[0, 0]),
            "last_step_top": float(g[-1, -1]), "spread": float(g.max() - g.min())}


def run_one(a: argparse.Namespace, data, cell: str, init: str, seed: int) -> dict[str, Any]:
    info = data.info
    mcfg = ModelConfig(cell=cell, layers=a.layers, width=a.width, **CELL_OPTIONS.get(cell, {}))
    torch.manual_seed(seed)
    model = build_model(mcfg, input_size=info.input_size, output_size=info.output_size, seq_len=info.seq_len)
    t0 = time.perf_counter()
    lsc_rep = None
    if INITS[init] is not None:
        batches = [b for _, b in zip(range(2), data.train, strict=False)]
        lsc_rep = lsc_pretrain(model, batches, LSCConfig(target=INITS[init], max_steps=a.lsc_steps, seed=seed,
                                                         progress=False))
    lsc_s = time.perf_counter() - t0
    xt, yt = next(iter(data.test))
    grid = gradient_grid(model, xt[:64], yt[:64])
    radii = radii_over_time(model, xt[:16], steps=4, rectangular="norm").mean()
    run = RunConfig(name=f"{cell}-{init}-s{seed}", out_dir=str(Path(a.out) / "runs"), model=mcfg,
                    data=DataConfig(task=a.task, layout=a.layout, batch_size=a.batch_size),
                    train=TrainConfig(epochs=a.epochs, lr=a.lr, seed=seed, progress=False, threads=1))
    t1 = time.perf_counter()
    final = fit(run, data=data, model=model)
    return {"cell": cell, "init": init, "seed": seed, "test_acc": final["test_acc"], "val_acc": final.get("val_acc"),
            "train_s": round(time.perf_counter() - t1, 1), "lsc_s": round(lsc_s, 1),
            "lsc": lsc_rep.to_json() if lsc_rep else None, "radii_init": radii,
            "grid": grid.norms.tolist(), "grid_summary": _grid_summary(grid.norms)}


def compare(a: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.jsonl"
    done = {}
    if res_path.exists():
        for line in res_path.read_text().splitlines():
            r = json.loads(line)
            done[(r["cell"], r["init"], r["seed"])] = r
    data = load_task(DataConfig(task=a.task, layout=a.layout, batch_size=a.batch_size))
    cells, seeds = a.cells.split(","), [int(s) for s in a.seeds.split(",")]
    t0 = time.perf_counter()
    for cell in cells:
        for seed in seeds:
            for init in INITS:
                if (cell, init, seed) in done:
                    continue
                r = run_one(a, data, cell, init, seed)
                done[(cell, init, seed)] = r
                with res_path.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"{cell} {init} seed {seed}: test acc {r['test_acc']:.3f} (train {r['train_s']} s, LSC "
                      f"{r['lsc_s']} s)", flush=True)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s this call\n")
    report(done, cells, seeds, out, a)


def _ms(v: list[float], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    v = [x * scale for x in v if x is not None and not math.isnan(x)]
    if not v:
        return "-"
    return (fmt + " ± " + fmt).format(mean(v), stdev(v) if len(v) > 1 else 0.0)


def report(done: dict, cells: list[str], seeds: list[int], out: Path, a: argparse.Namespace) -> None:
    print(f"{a.layers}-layer nets, width {a.width}, digits layout {a.layout}, {a.epochs} epochs, lr {a.lr}, "
          f"batch {a.batch_size}; LSC max {a.lsc_steps} steps; seeds {seeds}\n")
    print("| net | init | test acc % | LSC s | radii at init (time / depth / enc / dec) | grid corner log10 ratio |")
    print("|---|---|---:|---:|---|---:|")
    for cell in cells:
        for init in INITS:
            rs = [done[(cell, init, s)] for s in seeds if (cell, init, s) in done]
            if not rs:
                continue
            rad = " / ".join(f"{mean(mean(r['radii_init'][f]) for r in rs):.2f}" for f in
                             ("time", "depth", "encoder", "decoder"))
            print(f"| {a.layers}x{a.width} {cell.upper()} | {init} | {_ms([r['test_acc'] for r in rs], 100)} | "
                  f"{_ms([r['lsc_s'] for r in rs], fmt='{:.0f}') if init != 'default' else '-'} | {rad} | "
                  f"{_ms([r['grid_summary']['corner'] for r in rs], fmt='{:.2f}')} |")
    for cell in cells:
        grids = {}
        for init in INITS:
            r = done.get((cell, init, seeds[0]))
            if r is not None:
                from stablernn.diagnostics import GradientGrid

                grids[f"{cell} {init}"] = GradientGrid(torch.tensor(r["grid"]), [], 0.0)
        if grids:
            plot_gradient_grid(grids, out / f"grid_{cell}.png")


def ffn(a: argparse.Namespace) -> None:
    """Radii of 30x128 FFNs at standard initialisations (the FFN claim of paper A), on digits (64 inputs)."""
    torch.set_num_threads(1)
    data = load_task(DataConfig(task="digits", batch_size=a.ffn_batch))
    x = next(iter(data.train))[0].reshape(a.ffn_batch, -1)
    cases = [("glorot", "tanh"), ("glorot", "linear"), ("he", "relu"), ("glorot", "relu"), ("orthogonal", "linear"),
             ("orthogonal", "tanh"), ("orthogonal", "relu")]
    print(f"30x{a.ffn_width} FFN on digits (batch {a.ffn_batch}), depth transitions h[l-1] -> h[l] (29 per net), "
          f"{len(a.ffn_seeds.split(','))} seeds; target 1\n")
    print("| init | activation | radius: mean | min | max | top singular value: mean |")
    print("|---|---|---:|---:|---:|---:|")
    for init, act in cases:
        rad, norm = [], []
        for seed in (int(s) for s in a.ffn_seeds.split(",")):
            torch.manual_seed(seed)
            net = FFN(30, a.ffn_width, input_size=64, output_size=10, activation=act, init=init)
            g = torch.Generator().manual_seed(seed)
            rad += radii_over_time(net, x, families=("depth",), generator=g).mean()["depth"]
            norm += radii_over_time(net, x, families=("depth",), measure="norm").mean()["depth"]
        print(f"| {init} | {act} | {mean(rad):.3f} | {min(rad):.3f} | {max(rad):.3f} | {mean(norm):.3f} |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["compare", "ffn"])
    ap.add_argument("--out", default="runs/lsc_compare")
    ap.add_argument("--task", default="digits")
    ap.add_argument("--layout", default="pixels")
    ap.add_argument("--cells", default="gru,lstm,alif")
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lsc-steps", type=int, default=150)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ffn-width", type=int, default=128)
    ap.add_argument("--ffn-batch", type=int, default=32)
    ap.add_argument("--ffn-seeds", default="0,1,2")
    a = ap.parse_args()
    compare(a) if a.what == "compare" else ffn(a)


if __name__ == "__main__":
    main()
