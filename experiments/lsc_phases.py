"""Where the seconds of the demo's LSC go: lsc_pretrain's phases on the demo's three nets (2x128 LSTM / GRU / ALIF,
digits rows, T = 8), configured exactly as ``stablernn demo`` configures them (``cli.train.demo_configs``: the same
model config, seed, data loader and ``demo_lsc`` LSCConfig; the model built and the batches drawn as ``fit`` does).

Each phase is the inclusive wall time of one function of ``stablernn.lsc.pretrain`` (wrapped by a timer for the run;
nested phases are indented, so a parent includes its children). The nets run in one process, in the demo's order, so
the first LSC pays the process's one-time costs (first calls) as in the demo; as in ``fit``, the training's optimizer
is built before LSC (a torch optimizer's first construction imports ``torch._dynamo``, ~1.8 s, which the demo pays in
its first training run). ``make_lsc_optimizer`` counts its call in ``_start`` too. One torch thread.

    OMP_NUM_THREADS=1 python experiments/lsc_phases.py
    OMP_NUM_THREADS=1 python experiments/lsc_phases.py --cells alif --repeat 2    # the second run: warm process
"""
from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict
from typing import Any

import torch

from stablernn.cli.train import demo_configs
from stablernn.data import load_task
from stablernn.lsc import pretrain as P
from stablernn.optim import make_optimizer
from stablernn.train.loop import build_for_task, seed_everything
from stablernn.train.stable import resolve_stable

# (name in stablernn.lsc.pretrain, depth in the printed tree); _radii_means is split into before / after by call order
PHASES: list[tuple[str, int]] = [
    ("_radii_means", 0),
    ("spiking_rates", 0),
    ("gate_saturation", 0),
    ("_rescale_start", 0),
    ("_round_radii", 1),
    ("_undo_silencing", 1),
    ("make_lsc_optimizer", 1),
    ("_one_step", 0),
    ("_measure", 1),
    ("_descend", 1),
    ("_bookkeep", 1),
    ("guard_activity", 0),
    ("_rescale_after_refit", 0),
]


class Timers:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)  # process CPU time: less moved by other jobs on the machine
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            key = name
            if name == "_radii_means":  # first call: the report's "before", second: "after"
                key = "report before" if not self.calls["report before"] else "report after"
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[key] += time.perf_counter() - t
                self.cpu[key] += time.process_time() - c
                self.calls[key] += 1
        return timed


def profile(cell: str, run: Any, data: Any) -> tuple[Timers, Any]:
    timers = Timers()
    originals = {name: getattr(P, name) for name, _ in PHASES}
    for name in originals:
        setattr(P, name, timers.wrap(name, originals[name]))
    try:
        seed_everything(run.train.seed)
        run = resolve_stable(run, data.info)
        model = build_for_task(run, data.info)
        make_optimizer(model.parameters(), run.train.optimizer, run.train.lr, run.train.weight_decay)  # as fit
        batches = [(x, y) for _, (x, y) in zip(range(run.lsc.batches), data.train, strict=False)]
        t, c = time.perf_counter(), time.process_time()
        report = P.lsc_pretrain(model, batches, run.lsc)
        timers.seconds["total (wall)"] = time.perf_counter() - t
        timers.cpu["total (wall)"] = time.process_time() - c
    finally:
        for name, fn in originals.items():
            setattr(P, name, fn)
    return timers, report


def show(cell: str, timers: Timers, report: Any) -> None:
    total, cpu = timers.seconds["total (wall)"], timers.cpu["total (wall)"]
    print(f"\n### {cell}: {report.steps} steps, {report.seconds:.2f} s (report.seconds), stop: {report.stop_reason}")
    after = {f: round(report.mean_after(f), 3) for f in report.target}
    print(f"radii after (mean per family): {after}")
    print("| phase | calls | s | % of LSC | CPU s |")
    print("|---|---:|---:|---:|---:|")
    top = top_cpu = 0.0
    rows = [("report before", 0), *[(n, d) for n, d in PHASES if n != "_radii_means"], ("report after", 0)]
    for name, depth in rows:
        s = timers.seconds.get(name, 0.0)
        if not timers.calls.get(name):
            continue
        if depth == 0:
            top, top_cpu = top + s, top_cpu + timers.cpu[name]
        print(f"| {'&nbsp;&nbsp;' * depth}{name} | {timers.calls[name]} | {s:.3f} | {100 * s / total:.0f}% | "
              f"{timers.cpu[name]:.3f} |")
    print(f"| other (checks, snapshot, restore) | | {total - top:.3f} | {100 * (total - top) / total:.0f}% | "
          f"{cpu - top_cpu:.3f} |")
    print(f"| **total** | | {total:.3f} | 100% | {cpu:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="lstm,gru,alif")
    ap.add_argument("--repeat", type=int, default=1, help="runs per net (the later ones in a warm process)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    runs = {r.name.removesuffix("-lsc"): r for r in demo_configs("/tmp/lsc_phases", lsc=True) if r.lsc is not None}
    data = load_task(next(iter(runs.values())).data)
    for _ in range(a.repeat):
        for cell in a.cells.split(","):
            timers, report = profile(cell, runs[cell], data)
            show(cell, timers, report)


if __name__ == "__main__":
    main()
