"""The stabilised Li-GRU's time radius per step from the zero initial state, for three layer-norm epsilons (issue 15,
docs/cells.md): why ``LiGRUCell`` uses ε = 1 on its recurrent layer norm.

    python experiments/ligru_ln_eps.py          # 1 x 64, a fresh cell (seed 0), 32 digits sequences of 8 rows

Prints, per step t, the RMS of h[t-1] and the mean / max over samples of the spectral radius of ∂h[t]/∂h[t-1].
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from stablernn.cells.ligru import LiGRUCell
from stablernn.data import DataConfig, load_task


def per_step_radii(cell: LiGRUCell, x: torch.Tensor) -> list[tuple[float, float, float]]:
    """``(rms |h[t-1]|, mean radius, max radius)`` for each step of ``x [B, T, in]`` from the zero state."""
    h, rows = cell.initial_state(x.shape[0]).h, []
    step = torch.func.vmap(torch.func.jacrev(lambda hh, aa: cell._step(aa[None], hh[None])[0]))
    with torch.no_grad():
        for t in range(x.shape[1]):
            a = cell._normalise(F.linear(x[:, t], cell.weight_ih))
            rad = torch.linalg.eigvals(step(h, a)).abs().amax(-1)
            rows.append((float(h.pow(2).mean().sqrt()), float(rad.mean()), float(rad.max())))
            h = cell._step(a, h)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--eps", type=float, nargs="+", default=[1e-5, 1e-2, 1.0])
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_task(DataConfig(task="digits", batch_size=32))
    data.train.set_epoch(0)
    x, _ = next(iter(data.train))
    for eps in args.eps:
        torch.manual_seed(0)
        cell = LiGRUCell(x.shape[-1], args.width, stable=True, ln_eps=eps).eval()
        print(f"ln_eps = {eps:g}")
        for t, (rms, mean, mx) in enumerate(per_step_radii(cell, x)):
            print(f"  t = {t}: rms|h[t-1]| = {rms:.3f}, time radius mean {mean:.2f}, max {mx:.2f}")


if __name__ == "__main__":
    main()
