"""The LSC report's cost and accuracy on the demo's nets (2x128 LSTM / GRU / ALIF, digits rows, the first batch cut to
LSC's 8 sequences, all 8 time steps as ``measure_steps = 16`` gives): the before/after radii by

- ``warm``: the report as it was (warm engine, ``REPORT_WARM_BLOCKS = 24``, exact below ``REPORT_WARM_MIN_DIM``);
- ``exact autograd``: the exact engine with Jacobians by autograd (the reference);
- ``exact closed form``: the exact engine with the cells' closed-form Jacobians (``measures.CLOSED_FORM_NOGRAD``).

At init and after the demo's LSC (the nets' own runs), each timed ``--rounds`` times (median; the first call of a
process pays one-time costs, so one warm-up call runs before). Error: the largest relative difference of any
(family, layer) mean from the reference.

    OMP_NUM_THREADS=1 python experiments/lsc_report_cost.py
    OMP_NUM_THREADS=1 python experiments/lsc_report_cost.py --cells lstm,alif --arnoldi 64,128

``--arnoldi``: instead, the time transitions' radii by Arnoldi on the materialised Jacobians (``measures.arnoldi``,
that many iterations at most, tol 1e-4, the top Ritz value) against ``eigvals``: CPU seconds for all of them (8
steps x 2 layers) and the largest relative error per matrix and of their mean.
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
from stablernn.lsc.transitions import as_stack, rnn_transitions
from stablernn.models import detach_states
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


def time_jacobians(model, x) -> list[torch.Tensor]:
    """The time transitions' Jacobians ``[B, n, n]`` at every step of ``x`` (closed forms, no gradient)."""
    stack = as_stack(model)
    states = stack.initial_states(x.shape[0])
    out = []
    with torch.no_grad():
        for x_t in x.unbind(1):
            res = rnn_transitions(stack, x_t, states, ["time"])
            out += [tr.jacobian() for tr in res.transitions]
            states = detach_states(res.states)
    return out


def arnoldi_check(model, x, iters: list[int], label: str) -> None:
    Js = time_jacobians(model, x)
    c = time.process_time()
    ref = torch.stack([measures.spectral_radius(J) for J in Js])
    ref_s = time.process_time() - c
    for m in iters:
        g = torch.Generator().manual_seed(0)
        c = time.process_time()
        est = []
        for J in Js:
            v0 = torch.randn(J.shape[0], J.shape[-1], generator=g)
            res = measures.arnoldi(lambda v, J=J: (J @ v[..., None])[..., 0], v0, m, 1e-4, generator=g)
            est.append(torch.linalg.eigvals(res.H).abs().amax(-1))
        secs = time.process_time() - c
        e = torch.stack(est)
        print(f"| {label} | {m} | {ref_s:.2f} | {secs:.2f} | {100 * float(((e - ref) / ref).abs().max()):.2f}% | "
              f"{100 * float((e.mean() - ref.mean()) / ref.mean()):.3f}% |", flush=True)


def _demo_net(run, data):
    """The demo's net for ``run`` as ``fit`` builds it, LSC's batches, and the report's examples ``[B, T, F]``."""
    seed_everything(run.train.seed)
    model = build_for_task(run, data.info)
    batches = [(x, y) for _, (x, y) in zip(range(run.lsc.batches), data.train, strict=False)]
    return model, batches, batches[0][0][: run.lsc.batch_size]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="lstm,gru,alif")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--arnoldi", default=None, help="comma-separated Arnoldi iteration caps (see above)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    runs = {r.name.removesuffix("-lsc"): r for r in demo_configs("/tmp/lsc_report_cost", lsc=True) if r.lsc}
    data = load_task(next(iter(runs.values())).data)
    if a.arnoldi:
        print("| net, weights | Arnoldi iterations | eigvals CPU s | Arnoldi CPU s | largest error | error of mean |")
        print("|---|---:|---:|---:|---:|---:|")
        for cell in a.cells.split(","):
            run = runs[cell]
            model, batches, x = _demo_net(run, data)
            iters = [int(v) for v in a.arnoldi.split(",")]
            arnoldi_check(model, x, iters, f"2x128 {cell.upper()}, init")
            lsc_pretrain(model, batches, run.lsc)
            arnoldi_check(model, x, iters, f"2x128 {cell.upper()}, after LSC")
        return
    variants = ("warm", "exact autograd", "exact closed form")
    print("| net | weights | " + " | ".join(f"{v} s" for v in variants) + " | warm error | closed-form error |")
    print("|---|---|" + "---:|" * (len(variants) + 2))
    for cell in a.cells.split(","):
        run = runs[cell]
        model, batches, x = _demo_net(run, data)
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
