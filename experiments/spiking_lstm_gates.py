"""The spiking LSTM's gate bias: firing rates of its gates and test accuracy for a given initial bias of the spiking
input / output gates (issue 15, docs/cells.md and docs/results.md section 8).

Trains exactly the runs of ``experiments/new_cells_quick.toml`` / ``new_cells_mnist1d_quick.toml`` (2 x 32, AdamW,
no clipping, SG dampening 0.5; digits rows 8 epochs, MNIST-1D 4 epochs) with the gate bias overwritten after the
build, and prints one JSON line per run: test accuracy and, per layer, the fraction of steps on which the input
gate (i), the output gate (o), the cell-state spike (c) and the output (h) fire, on the first training batch, at
init and after training.

    python experiments/spiking_lstm_gates.py --gate-bias 1 --task digits --lr 0.01 0.0316 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from stablernn.cells.spiking_lstm import SpikingLSTMCell
from stablernn.data import DataConfig, load_task
from stablernn.models import ModelConfig
from stablernn.train.config import RunConfig, TrainConfig
from stablernn.train.loop import build_for_task, fit, seed_everything


def gate_rates(model, x: torch.Tensor) -> list[dict[str, float]]:
    """Per layer, the fraction of (sample, step, neuron) on which each spike of the cell fires, ``x [B, T, in]``."""
    states = [c.initial_state(x.shape[0]) for c in model.cells]
    acc = [{"i": 0.0, "o": 0.0, "c": 0.0, "h": 0.0} for _ in model.cells]
    with torch.no_grad():
        for t in range(x.shape[1]):
            inp = x[:, t]
            for l, cell in enumerate(model.cells):
                a = F.linear(inp, cell.weight_ih, cell.bias) + F.linear(states[l].h, cell.weight_hh)
                a_i, _, _, a_o = a.chunk(4, -1)
                h, states[l] = cell(inp, states[l])
                r = acc[l]
                r["i"] += float((a_i > 0).float().mean())
                r["o"] += float((a_o > 0).float().mean())
                r["c"] += float((states[l].c > cell.threshold).float().mean())
                r["h"] += float(h.mean())
                inp = h
    return [{k: round(v / x.shape[1], 3) for k, v in r.items()} for r in acc]


def run_one(task: str, lr: float, seed: int, gate_bias: float, out_dir: str, *, forget_bias: float = 1.0,
            dampening: float = 0.5) -> dict:
    layout = {"layout": "rows"} if task == "digits" else {}
    data = load_task(DataConfig(task=task, batch_size=64, **layout))
    name = f"gate{gate_bias:g}_forget{forget_bias:g}_damp{dampening:g}_{task}_lr{lr:g}_s{seed}"
    run = RunConfig(name=name, out_dir=out_dir,
                    model=ModelConfig(cell="spiking_lstm", layers=2, width=32, threshold=0.5, dampening=dampening),
                    data=DataConfig(task=task, batch_size=64, **layout),
                    train=TrainConfig(epochs=8 if task == "digits" else 4, lr=lr, optimizer="adamw", clip_norm=None,
                                      seed=seed, threads=1, progress=False))
    seed_everything(seed)
    model = build_for_task(run, data.info)
    for c in model.cells:
        assert isinstance(c, SpikingLSTMCell)
        H = c.hidden_size
        with torch.no_grad():  # gate order i, f, g, o: the spiking input and output gates
            c.bias[:H] = gate_bias
            c.bias[H:2 * H] = forget_bias
            c.bias[3 * H:] = gate_bias
    data.train.set_epoch(0)
    x, _ = next(iter(data.train))
    before = gate_rates(model, x)
    res = fit(run, data=data, model=model, overwrite=True)
    return {"gate_bias": gate_bias, "forget_bias": forget_bias, "dampening": dampening, "task": task, "lr": lr,
            "seed": seed, "test_acc": res["test_acc"],
            "rates_init": before, "rates_trained": gate_rates(model, x)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gate-bias", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--forget-bias", type=float, default=1.0, help="initial forget-gate bias (the cell's default 1)")
    ap.add_argument("--dampening", type=float, default=0.5, help="SG dampening (the sweeps' 0.5)")
    ap.add_argument("--task", nargs="+", default=["digits"], choices=["digits", "mnist1d"])
    ap.add_argument("--lr", type=float, nargs="+", default=[0.01])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out-dir", default="runs/spiking_lstm_gates")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for task in args.task:
        for gb in args.gate_bias:
            for lr in args.lr:
                for seed in args.seeds:
                    print(json.dumps(run_one(task, lr, seed, gb, args.out_dir, forget_bias=args.forget_bias,
                                             dampening=args.dampening)), flush=True)


if __name__ == "__main__":
    main()
