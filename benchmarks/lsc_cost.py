"""What LSC pre-training costs, next to training: old engine (``exact``: eigvals of materialised Jacobians) vs new
(``warm``: bases kept across steps, exact gradient at the converged pair), all in one run, as ratios.

1. ``step``: ms per LSC step (every transition of one time step of the first ``--lsc-batch`` sequences: radii,
   loss, backward, optimiser step; ``stablernn.lsc.pretrain``'s own step function) for each engine, against ms per
   training step of the same net (a batch of ``--train-batch`` whole sequences: forward, cross-entropy of the
   time-averaged logits, backward, AdamW step). The warm engine twice: with the cells' closed-form Jacobians
   (``warm``, the default) and with them off (``warm autograd``: ``WARM_CLOSED_FORM_MAX = 0``, the dense path
   materialising by pullbacks up to ``WARM_DENSE_MAX``, matrix-free above; and ``FORWARD_MODE = False``: the
   exactly measured encoder by reverse mode); and ``warm before``: closed forms on, but the Krylov step, one Krylov
   call per transition, vmapped pullbacks and the cold restart of a lost pair as before issue 13's second pass
   (``WARM_FAST_KRYLOV``, ``WARM_GROUPED``, ``BATCH_FN``, ``WARM_RETRY`` off; 12 Krylov blocks); and ``warm 12
   blocks``: the present engine with the 12 blocks LSC used before its default became 8 (the accuracy trade-off is
   in docs/lsc.md). Medians over ``--rounds`` rounds; in each round every variant and the training step run back to
   back, so a load change on this shared machine hits all of them alike.
2. ``target``: steps and seconds to reach the target (default ``LSCConfig``, one run per engine) against the demo
   net's training time (median training step x batches per epoch x the demo's epochs).
3. ``width``: how the per-step cost grows with width (``--width-cell``, 2 layers, 64 -> 1024): exact up to
   ``--exact-max``; warm with the closed forms as the library uses them, always structured, always materialised;
   warm without closed forms (autograd dense up to ``WARM_DENSE_MAX``) and fully matrix-free.

Digits rows (T = 8, 8 features), one torch thread (``--threads``).

    python benchmarks/lsc_cost.py                                   # all parts
    python benchmarks/lsc_cost.py --part step --nets lstm:2x256,gru:2x256,alif:2x256
    python benchmarks/lsc_cost.py --part width --width-cell alif --widths 128,256,512,1024 --exact-max 0
    python benchmarks/lsc_cost.py --part profile --nets alif:2x256 --rounds 5
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from stablernn.cli.train import DEMO_RUNS
from stablernn.data import DataConfig, load_task
from stablernn.lsc import measures
from stablernn.lsc.config import LSCConfig
from stablernn.lsc.pretrain import _one_step, _prepare_batches, _start, lsc_pretrain, make_lsc_optimizer
from stablernn.models import ModelConfig, build_model

ENGINES = ("exact", "warm")
# the warm engine's Krylov blocks per LSC step before LSCConfig.warm_blocks went from 12 to 8: "warm before" runs with
# them, and the step part times the present engine with them too ("warm 12 blocks": warm_radius's default, the
# estimator the 1% accuracy tests hold for; docs/lsc.md "Krylov blocks per LSC step")
BEFORE_BLOCKS = 12


def _model(cell: str, layers: int, width: int, seed: int = 0):
    torch.manual_seed(seed)
    extra: dict[str, Any] = {}
    if cell in DEMO_RUNS:  # the demo's own settings (ALIF threshold and dampening)
        base = DEMO_RUNS[cell][0]
        extra = {k: getattr(base, k) for k in ("threshold", "dampening") if cell == "alif"}
    return build_model(ModelConfig(cell=cell, layers=layers, width=width, **extra), input_size=8, output_size=10,
                       seq_len=8)


def _parse(nets: str) -> list[tuple[str, int, int]]:
    out = []
    for item in nets.split(","):
        cell, shape = item.split(":")
        layers, width = shape.split("x")
        out.append((cell, int(layers), int(width)))
    return out


# the variants of the warm engine: (WARM_CLOSED_FORM_MAX, WARM_DENSE_MAX, WARM_CLOSED_FORM_DENSE_MAX, FORWARD_MODE,
# CLOSED_FORM_NOGRAD: the exact engine's Jacobians without gradient, i.e. the report's, WARM_FAST_KRYLOV, WARM_GROUPED,
# BATCH_FN, WARM_RETRY), None = the library's value: closed forms (and the encoder's forward mode) as the library uses
# them; both off, i.e. the engine before them (autograd dense up to WARM_DENSE_MAX, pullbacks above); off and every
# product a pullback; on with every product structured (never materialised); on and always materialised;
# "warm_before": the closed forms on but the Krylov step, the per-transition calls, the vmapped pullbacks and the cold
# restart of a lost pair as before issue 13's second pass (the engine this pass started from; with its 12 blocks,
# BEFORE_BLOCKS)
VARIANTS: dict[str, tuple[int | bool | None, ...]] = {
    "warm": (None,) * 9, "warm_autograd": (0, None, None, False, False, None, None, None, None),
    "mf": (0, 0, None, False, False, None, None, None, None),
    "structured": (None, None, 0, None, None, None, None, None, None),
    "cf_dense": (None, None, 1 << 30, None, None, None, None, None, None),
    "warm_before": (None, None, None, None, None, False, False, False, False)}
KNOBS = ("WARM_CLOSED_FORM_MAX", "WARM_DENSE_MAX", "WARM_CLOSED_FORM_DENSE_MAX", "FORWARD_MODE", "CLOSED_FORM_NOGRAD",
         "WARM_FAST_KRYLOV", "WARM_GROUPED", "BATCH_FN", "WARM_RETRY")


@contextlib.contextmanager
def _knobs(variant: str) -> Iterator[None]:
    """Run with the warm engine's size limits of ``variant`` (restored afterwards)."""
    old = [getattr(measures, k) for k in KNOBS]
    for k, v in zip(KNOBS, VARIANTS.get(variant, (None,) * len(KNOBS)), strict=True):
        if v is not None:
            setattr(measures, k, v)
    try:
        yield
    finally:
        for k, v in zip(KNOBS, old, strict=True):
            setattr(measures, k, v)


def _timed(variant: str, fn: Callable[[], Any]) -> float:
    with _knobs(variant):
        return _timer(fn)


def _timer(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class TrainStep:
    """One training step of a fresh copy of the net on ``(x, y)``."""

    def __init__(self, cell: str, layers: int, width: int, x: torch.Tensor, y: torch.Tensor):
        self.model, self.x, self.y = _model(cell, layers, width), x, y
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)

    def __call__(self) -> None:
        loss = F.cross_entropy(self.model(self.x).mean(1), self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()


class LSCStep:
    """LSC steps of a fresh copy of the net with the given engine options, through the pre-training's own step."""

    def __init__(self, cell: str, layers: int, width: int, batches: list, **cfg: Any):
        model = _model(cell, layers, width).eval()
        c = LSCConfig(progress=False, **cfg)
        self.run = _start(model, _prepare_batches(batches, c, None), c)

    def __call__(self) -> None:
        _one_step(self.run)


def part_step(a: argparse.Namespace, data) -> None:
    x, y = next(iter(data.train))
    print(f"## ms per LSC step vs per training step (training batch {x.shape[0]} x T={x.shape[1]}, LSC batch "
          f"{a.lsc_batch}; median of {a.rounds} rounds after one warm-up, same run)\n")
    print("| net | train step ms | LSC exact ms | LSC warm autograd ms | LSC warm before ms | "
          f"LSC warm {BEFORE_BLOCKS} blocks ms | LSC warm ms | exact / train | warm autograd / train | "
          f"warm before / train | warm {BEFORE_BLOCKS} blocks / train | warm / train | before / warm |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cell, layers, width in _parse(a.nets):
        train = TrainStep(cell, layers, width, x, y)
        more = {"warm_before": {"warm_blocks": BEFORE_BLOCKS}, "warm_b": {"warm_blocks": BEFORE_BLOCKS}}
        lsc = {v: LSCStep(cell, layers, width, [x], engine=e, batch_size=a.lsc_batch, **more.get(v, {}))
               for v, e in (("exact", "exact"), ("warm_autograd", "warm"), ("warm_before", "warm"),
                            ("warm_b", "warm"), ("warm", "warm"))}
        times: dict[str, list[float]] = {"train": [], **{v: [] for v in lsc}}
        for r in range(a.rounds + 1):
            t = {"train": _timer(train), **{v: _timed(v, fn) for v, fn in lsc.items()}}
            if r:  # round 0 is the warm-up (and the warm engine's cold start)
                for k, v in t.items():
                    times[k].append(v)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        tr = med["train"]
        print(f"| {layers}x{width} {cell.upper()} | {tr:.1f} | {med['exact']:.1f} | {med['warm_autograd']:.1f} | "
              f"{med['warm_before']:.1f} | {med['warm_b']:.1f} | {med['warm']:.1f} | {med['exact'] / tr:.1f}x | "
              f"{med['warm_autograd'] / tr:.1f}x | {med['warm_before'] / tr:.1f}x | {med['warm_b'] / tr:.1f}x | "
              f"{med['warm'] / tr:.1f}x | {med['warm_before'] / med['warm']:.2f}x |", flush=True)


def part_target(a: argparse.Namespace, _data) -> None:
    data = load_task(DataConfig(task="digits", layout="rows", batch_size=32))  # the demo's batches
    x, y = next(iter(data.train))
    n_batches = sum(1 for _ in data.train)
    print(f"\n## steps and seconds to the target (default LSCConfig but the engine: target auto = 0.5, "
          f"max {a.max_steps} steps), against the demo's training time\n")
    print("| net | engine | LSC steps | LSC s | stop | worst \\|after - target\\| | training s (demo epochs) | "
          "LSC / training |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    make_lsc_optimizer([torch.nn.Parameter(torch.zeros(1))], LSCConfig())  # its import outside every timing
    for cell, layers, width in _parse(a.target_nets):
        train = TrainStep(cell, layers, width, x, y)
        step = statistics.median(_timer(train) for _ in range(a.rounds + 1))
        epochs = DEMO_RUNS[cell][1].epochs if cell in DEMO_RUNS else 20
        training = step * n_batches * epochs
        for engine in a.target_engines.split(","):
            with _knobs(engine):  # a warm variant (e.g. warm_autograd: closed forms off) runs the warm engine
                rep = lsc_pretrain(_model(cell, layers, width), data.train,
                                   engine="warm" if engine in VARIANTS else engine, max_steps=a.max_steps,
                                   time_limit=None, progress=False)
            worst = max(abs(rep.mean_after(f) - t) for f, t in rep.target.items())
            print(f"| {layers}x{width} {cell.upper()} | {engine} | {rep.steps} | {rep.seconds:.1f} | "
                  f"{rep.stop_reason.split(':')[0]} | {worst:.3f} | {training:.1f} ({epochs}) | "
                  f"{rep.seconds / training:.2f}x |", flush=True)


def part_width(a: argparse.Namespace, data) -> None:
    x, _ = next(iter(data.train))
    cell = a.width_cell
    print(f"\n## ms per LSC step against width (2-layer {cell.upper()}, LSC batch {a.lsc_batch}, median of {a.rounds} "
          "rounds)\n")
    print("| width | exact ms | warm ms (closed forms) | warm before ms | closed forms structured ms | "
          "closed forms dense ms | warm autograd ms | warm matrix-free ms | exact / warm | before / warm | "
          "autograd / warm | matrix-free / warm |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for width in (int(w) for w in a.widths.split(",")):
        variants: dict[str, LSCStep] = {}
        if width <= a.exact_max:
            variants["exact"] = LSCStep(cell, 2, width, [x], engine="exact", batch_size=a.lsc_batch)
        for v in a.width_variants.split(","):
            variants[v] = LSCStep(cell, 2, width, [x], engine="warm", batch_size=a.lsc_batch)
        times: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(a.rounds + 1):
            for k, fn in variants.items():
                dt = _timed(k, fn)
                if r:
                    times[k].append(dt)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}

        def ms(k: str, med: dict[str, float] = med) -> str:
            return f"{med[k]:.0f}" if k in med else "-"

        def rel(k: str, med: dict[str, float] = med) -> str:
            return f"{med[k] / med['warm']:.2f}x" if k in med and "warm" in med else "-"
        print(f"| {width} | {ms('exact')} | {ms('warm')} | {ms('warm_before')} | {ms('structured')} | "
              f"{ms('cf_dense')} | {ms('warm_autograd')} | {ms('mf')} | {rel('exact')} | {rel('warm_before')} | "
              f"{rel('warm_autograd')} | {rel('mf')} |", flush=True)


def part_profile(a: argparse.Namespace, data) -> None:
    """cProfile of ``--rounds`` warm LSC steps of each of ``--nets`` (after two unprofiled ones), by own time."""
    import cProfile
    import pstats

    x, _ = next(iter(data.train))
    for cell, layers, width in _parse(a.nets):
        step = LSCStep(cell, layers, width, [x], engine="warm", batch_size=a.lsc_batch)
        step()
        step()
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(a.rounds):
            step()
        prof.disable()
        print(f"\n## cProfile of {a.rounds} warm LSC steps, {layers}x{width} {cell.upper()}: "
              f"{1e3 * (time.perf_counter() - t0) / a.rounds:.0f} ms per step under the profiler\n")
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["step", "target", "width", "profile", "all"], default="all",
                    help="'profile' is not part of 'all'")
    ap.add_argument("--nets", default="lstm:2x128,gru:2x128,alif:2x128,lru:2x128,gru:5x64,lstm:2x256,gru:2x256,"
                                      "alif:2x256")
    ap.add_argument("--target-nets", default="lstm:2x128,gru:2x128,alif:2x128,lru:2x128,gru:5x64")
    ap.add_argument("--target-engines", default="exact,warm",
                    help="exact, warm, or a warm variant: " + ", ".join(v for v in VARIANTS if v != "warm"))
    ap.add_argument("--widths", default="64,128,256,512,1024")
    ap.add_argument("--width-cell", default="gru", help="cell kind of the width part")
    ap.add_argument("--width-variants", default=",".join(VARIANTS),
                    help="warm variants the width part times (comma-separated; 'warm' is needed for the ratios)")
    ap.add_argument("--closed-form-max", type=int, default=None,
                    help="override measures.WARM_CLOSED_FORM_MAX for the 'warm' variant (to measure where it pays)")
    ap.add_argument("--exact-max", type=int, default=512, help="widest net the exact engine is timed on")
    ap.add_argument("--lsc-batch", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--max-steps", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.closed_form_max is not None:
        VARIANTS["warm"] = (a.closed_form_max, *(None,) * (len(KNOBS) - 1))
    data = load_task(DataConfig(task="digits", layout="rows", batch_size=a.train_batch))
    if a.part in ("step", "all"):
        part_step(a, data)
    if a.part in ("target", "all"):
        part_target(a, data)
    if a.part in ("width", "all"):
        part_width(a, data)
    if a.part == "profile":
        part_profile(a, data)


if __name__ == "__main__":
    main()
