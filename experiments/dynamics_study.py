"""Dynamics before and after LSC: Lyapunov spectrum, memory capacity and capacity vs readout size for a 2-layer GRU
and a 2-layer ALIF network (digits task shapes), at initialisation and after LSC pre-training to 0.5 and 1.0.

    python experiments/dynamics_study.py [--seeds 0 1] [--width 64] [--out runs/dynamics_study] [--quick]

Writes ``<out>/summary.json`` (every number) and ``docs/figures/dynamics_study.png``, and prints the tables that
docs/dynamics.md quotes. Single-threaded; about 10 min on one CPU core with the defaults (most of it LSC).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stablernn import ModelConfig, build_model
from stablernn.cli.dynamics import task_stream
from stablernn.data import DataConfig, load_task
from stablernn.dynamics.memory import DynamicsConfig, dynamics_profile
from stablernn.lsc.config import LSCConfig
from stablernn.lsc.pretrain import lsc_pretrain

CELLS = ("gru", "alif")
VARIANTS = ("init", "LSC 0.5", "LSC 1.0")


def run(seeds: list[int], width: int, quick: bool) -> dict[str, Any]:
    torch.set_num_threads(1)
    data = load_task(DataConfig(task="digits"))
    info = data.info
    cfg = DynamicsConfig(lyapunov=10, memory=100, ipc_degree=3, n_steps=1600 if quick else 2600,
                         streams=4 if quick else 8, draws=3 if quick else 5)
    results: dict[str, Any] = {}
    for cell in CELLS:
        for seed in seeds:
            torch.manual_seed(seed)
            model = build_model(ModelConfig(cell=cell, layers=2, width=width), input_size=info.input_size,
                                output_size=info.output_size, seq_len=info.seq_len)
            x = task_stream(data.test, 4, 200 if quick else 400)
            for variant in VARIANTS:
                t0 = time.perf_counter()
                net, lsc = model, None
                if variant != "init":
                    net = copy.deepcopy(model)
                    target = float(variant.split()[1])
                    # batch 16 and 150 steps keep the study near 10 min on one core; the GRU reaches its targets
                    # within them (see the rho columns of the table)
                    rep = lsc_pretrain(net, data.train, LSCConfig(target=target, seed=seed, progress=False,
                                                                  batch_size=16, max_steps=60 if quick else 150,
                                                                  time_limit=300))
                    lsc = rep.to_json()
                prof = dynamics_profile(net, x, DynamicsConfig(**{**cfg.__dict__, "seed": seed})).summary()
                prof["lsc"] = lsc
                prof["total_seconds"] = round(time.perf_counter() - t0, 1)
                results[f"{cell}|{variant}|{seed}"] = prof
                print(f"{cell:<5} {variant:<8} seed {seed}: lambda_1 {prof['top_lyapunov']:+.3f}  MC "
                      f"{prof['mc']:.2f}  IPC {prof['ipc']}  ({prof['total_seconds']} s)", flush=True)
    return results


def aggregate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mean and sd over seeds per (cell, variant)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for key, prof in results.items():
        cell, variant, _ = key.split("|")
        groups.setdefault(f"{cell}|{variant}", []).append(prof)
    out = {}
    for key, profs in groups.items():
        def stat(get: Any, profs: list[dict[str, Any]] = profs) -> tuple[float, float]:
            v = np.array([get(p) for p in profs], dtype=float)
            return float(v.mean()), float(v.std())

        row: dict[str, Any] = {
            "n": len(profs),
            "lambda1": stat(lambda p: p["top_lyapunov"]),
            "lambda_mean": stat(lambda p: np.mean(p["lyapunov"])),
            "mc": stat(lambda p: p["mc"]),
            "corr": stat(lambda p: p["scaling"][-1]["corr"]),
            "lsc_time": stat(lambda p: np.mean(p["lsc"]["after"]["time"]) if p["lsc"] else float("nan")),
            "lsc_depth": stat(lambda p: np.mean(p["lsc"]["after"]["depth"]) if p["lsc"] else float("nan")),
            "spectrum": np.mean([p["lyapunov"] for p in profs], 0).tolist(),
            "mc_per_lag": np.mean([p["mc_per_lag"] for p in profs], 0).tolist(),
            "sizes": [r["n"] for r in profs[0]["scaling"]],
        }
        for d in profs[0]["ipc"]:
            row[f"ipc{d}"] = stat(lambda p, d=d: p["ipc"][d])
        for k in ("mc", "ipc1", "ipc2", "ipc3", "corr"):
            row[f"scaling_{k}"] = np.mean([[r[k] for r in p["scaling"]] for p in profs], 0).tolist()
        out[key] = row
    return out


def table(agg: dict[str, dict[str, Any]]) -> str:
    head = (f"{'network':<15} {'rho_time':>8} {'rho_depth':>9} {'lambda_1':>14} {'mean lambda':>12} {'MC':>12} "
            f"{'IPC1':>11} {'IPC2':>11} {'IPC3':>11} {'|corr|':>7}")
    lines = [head]
    for key, r in agg.items():
        cell, variant = key.split("|")

        def pm(v: tuple[float, float], d: int = 2) -> str:
            return f"{v[0]:.{d}f}±{v[1]:.{d}f}"

        lines.append(f"{cell + ' ' + variant:<15} {r['lsc_time'][0]:>8.3f} {r['lsc_depth'][0]:>9.3f} "
                     f"{pm(r['lambda1'], 3):>14} {r['lambda_mean'][0]:>12.3f} {pm(r['mc']):>12} "
                     f"{pm(r['ipc1']):>11} {pm(r['ipc2']):>11} {pm(r['ipc3']):>11} {r['corr'][0]:>7.3f}")
    return "\n".join(lines)


def scaling_text(agg: dict[str, dict[str, Any]]) -> str:
    lines = []
    for key, r in agg.items():
        lines.append(f"{key.replace('|', ' ')}: n = {r['sizes']}")
        for k in ("mc", "ipc2", "ipc3", "corr"):
            lines.append(f"  {k:<5} " + " ".join(f"{v:6.2f}" for v in r[f"scaling_{k}"]))
    return "\n".join(lines)


def figure(agg: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [("spectrum", "Lyapunov spectrum λ_i"), ("mc_per_lag", "MC_k vs lag k"), ("scaling_mc", "MC vs readout n"),
            ("scaling_ipc2", "degree-2 capacity vs n"), ("scaling_ipc3", "degree-3 capacity vs n"),
            ("scaling_corr", "mean |corr| vs n")]
    fig, axes = plt.subplots(len(CELLS), len(cols), figsize=(3.1 * len(cols), 2.9 * len(CELLS)), squeeze=False)
    for i, cell in enumerate(CELLS):
        for j, (key, title) in enumerate(cols):
            ax = axes[i, j]
            for variant in VARIANTS:
                r = agg.get(f"{cell}|{variant}")
                if r is None:
                    continue
                y = r[key]
                x = r["sizes"] if key.startswith("scaling") else list(range(1, len(y) + 1))
                ax.plot(x, y, marker="o" if key != "mc_per_lag" else None, ms=3, label=variant)
            if key.startswith("scaling"):
                ax.set_xscale("log", base=2)
            if key == "spectrum":
                ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"{cell.upper()}: {title}", fontsize=9)
            ax.tick_params(labelsize=7)
        axes[i, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("runs/dynamics_study"))
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/dynamics_study.png"))
    ap.add_argument("--quick", action="store_true", help="shorter drives and LSC, for a smoke run")
    args = ap.parse_args()
    t0 = time.perf_counter()
    results = run(args.seeds, args.width, args.quick)
    agg = aggregate(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps({"runs": results, "aggregate": agg}, indent=1) + "\n")
    figure(agg, args.figure)
    print(table(agg))
    print(scaling_text(agg))
    print(f"wrote {args.out / 'summary.json'} and {args.figure}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
