"""Steps to the LSC target on the demo's nets (2 layers, digits rows, the first 2 batches of 32 cut to LSC's 8), for
the variants issue 13 asked to measure: the leak scaling of gated cells (LSTM forget gate; GRU update gate, not kept),
the learning rate, and skipping the time transition at t = 0. One line per run: steps, seconds, stop reason, the
radii after, and the moving-average time / depth radius at steps 20, 40, 60, 100, 150 (docs/lsc.md).

    python experiments/lsc_steps.py --cells lstm --variants base,no_rescale,lstm_stop --max-steps 200
    python experiments/lsc_steps.py --cells gru --variants base,gru_z,gru_z_stop,gru_z_floor2 --max-steps 150
    python experiments/lsc_steps.py --cells lstm,gru,alif --variants base --lr 4e-2 --max-steps 100
    python experiments/lsc_steps.py --cells gru --variants base,skip_t0 --max-steps 150
    python experiments/lsc_steps.py --report-check --max-steps 40   # the before/after report against exact
    python experiments/lsc_steps.py --cells lstm,gru,alif,lru --variants rw_off,rw_start,rw_step,rw_both
    python experiments/lsc_steps.py --cells gru --layers 5 --width 64 --variants rw_off,rw_start,rw_step,rw_both
    python experiments/lsc_steps.py --cells lstm,gru,alif,lru --variants base,blocks12 --max-steps 200

Variants: ``base`` (the library as it is), ``no_rescale`` (``rescale_time=False``), ``lstm_stop`` (the forget-gate
scaling stopped where the gate reaches the target), ``gru_z`` / ``gru_z_stop`` / ``gru_z_floor2`` (the update gate
scaled like the LSTM's forget gate: unbounded / stopped at the target / stopped at target²), ``skip_t0`` (LSC's steps
start each batch at t = 1, from the state after a forward step), ``rw_off`` / ``rw_start`` / ``rw_step`` /
``rw_both`` (``rescale_weights`` off / start / step / start+step: the closed-form weight rescaling), with the suffix
``_notau`` the start rounds without the time-constant scale (``RESCALE_START_TIME_RANGE = 1``), ``blocksN`` (e.g.
``blocks12``: ``LSCConfig.warm_blocks = N``, the warm engine's Krylov blocks per step).
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from stablernn.cells import gated
from stablernn.data import DataConfig, load_task
from stablernn.lsc import pretrain as P
from stablernn.lsc.pretrain import lsc_pretrain
from stablernn.models import ModelConfig, build_model, detach_states


def _model(cell: str, layers: int, width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {"threshold": 0.5, "dampening": 0.5} if cell == "alif" else {}  # the demo's ALIF
    return build_model(ModelConfig(cell=cell, layers=layers, width=width, **extra), input_size=8, output_size=10,
                       seq_len=8)


def _floor_gate(bias_ih: torch.Tensor, bias_hh: torch.Tensor, before: torch.Tensor, log_floor: float) -> None:
    """Undo a shrink below ``exp(log_floor)`` (a gate already below it keeps its old value)."""
    lg = F.logsigmoid(before + bias_hh)
    new = torch.maximum(F.logsigmoid(bias_ih + bias_hh), torch.clamp(lg, max=log_floor))
    bias_ih.copy_(new - torch.log(-torch.expm1(new)) - bias_hh)


def _gate_scaler(power: float | None):
    """A ``scale_time_constants`` for the gate at ``[H:2H]``; shrinking stops at ``target ** power`` (None: never)."""
    @torch.no_grad()
    def scale(self: Any, m: float, target: float | None = None) -> None:
        H = self.hidden_size
        bi, bh = self.bias_ih[H:2 * H], self.bias_hh[H:2 * H]
        before = bi.clone()
        gated.scale_gate_leak(bi, bh, m, target)
        if m < 1 and power is not None and target is not None and 0 < target < 1:
            _floor_gate(bi, bh, before, power * math.log(target))
    return scale


def _skip_t0_step(orig):
    def step(run: Any):
        if run.states is None or run.t_i >= len(run.steps_x):
            if run.states is not None:
                run.batch_i = (run.batch_i + 1) % len(run.xs)
            x = run.xs[run.batch_i]
            run.steps_x = x.unbind(1)
            st = run.stack.initial_states(x.shape[0], device=x.device, dtype=run.params[0].dtype)
            with torch.no_grad():
                run.states = detach_states(run.stack.step(run.steps_x[0], st, decode=False).states)
            run.t_i = 1
        return orig(run)
    return step


# the closed-form weight rescaling (LSCConfig.rescale_weights), against its "off"
RESCALE_VARIANTS = {"rw_off": "off", "rw_start": "start", "rw_step": "step", "rw_both": "start+step"}


@contextmanager
def variant(name: str) -> Iterator[dict[str, Any]]:
    """Patch the library for one variant; yields extra ``lsc_pretrain`` options."""
    had_gru = "scale_time_constants" in vars(gated.GRUCell)
    old_lstm, old_step, old_range = gated.LSTMCell.scale_time_constants, P._rnn_step, P.RESCALE_START_TIME_RANGE
    try:
        extra: dict[str, Any] = {}
        if name == "no_rescale":
            extra["rescale_time"] = False
        elif name == "lstm_stop":
            gated.LSTMCell.scale_time_constants = _gate_scaler(1.0)
        elif name.startswith("gru_z"):
            power = {"gru_z": None, "gru_z_stop": 1.0, "gru_z_floor2": 2.0}[name]
            gated.GRUCell.scale_time_constants = _gate_scaler(power)
        elif name == "skip_t0":
            P._rnn_step = _skip_t0_step(old_step)
        elif name in RESCALE_VARIANTS:
            extra["rescale_weights"] = RESCALE_VARIANTS[name]
        elif name.startswith("rw_") and name.endswith("_notau"):  # the start rounds leave the time constants alone
            extra["rescale_weights"] = RESCALE_VARIANTS[name.removesuffix("_notau")]
            P.RESCALE_START_TIME_RANGE = 1.0
        elif name.startswith("blocks") and name[6:].isdigit():  # the warm engine's Krylov blocks per LSC step
            extra["warm_blocks"] = int(name[6:])
        elif name != "base":
            raise ValueError(f"unknown variant {name!r}")
        yield extra
    finally:
        gated.LSTMCell.scale_time_constants = old_lstm
        P._rnn_step = old_step
        P.RESCALE_START_TIME_RANGE = old_range
        if not had_gru and "scale_time_constants" in vars(gated.GRUCell):
            del gated.GRUCell.scale_time_constants


REPORT_WARM_BLOCKS, REPORT_WARM_MIN_DIM = P.REPORT_WARM_BLOCKS, P.REPORT_WARM_MIN_DIM  # what LSC's report uses


def report_check(cells: list[str], layers: int, width: int, steps: int, batches: list) -> None:
    """The report's warm measurement (``REPORT_WARM_BLOCKS``, exact below ``REPORT_WARM_MIN_DIM``, one state over
    the time steps) against the exact engine on the same batch, at init and after ``steps`` LSC steps; then the
    exact engine on fewer time steps / samples (4 steps x 8, 8 x 4, 4 x 4) against all 8 x 8."""
    import time

    from stablernn.lsc.measures import WarmState
    from stablernn.lsc.radii import radii_over_time

    x = batches[0][0][:8]

    def err(got: dict[str, list[float]], ref: dict[str, list[float]]) -> float:
        return max(abs(a - b) / b for f in ref for a, b in zip(got[f], ref[f], strict=True))

    for cell in cells:
        model = _model(cell, layers, width)
        t0 = time.perf_counter()
        ref = radii_over_time(model, x, engine="exact", rectangular="norm").mean()
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        ws = WarmState()
        warm = radii_over_time(model, x, engine="warm", rectangular="norm", state=ws,
                               warm_blocks=REPORT_WARM_BLOCKS, warm_min_dim=REPORT_WARM_MIN_DIM).mean()
        t_warm = time.perf_counter() - t0
        fewer = []
        for n_steps, B in ((4, 8), (8, 4), (4, 4)):
            got = radii_over_time(model, x[:B], engine="exact", rectangular="norm", steps=n_steps).mean()
            fewer.append(f"{n_steps}x{B} {100 * err(got, ref):.1f}%")
        lsc_pretrain(model, batches, max_steps=steps, time_limit=None, progress=False)
        after_ref = radii_over_time(model, x, engine="exact", rectangular="norm").mean()
        after_warm = radii_over_time(model, x, engine="warm", rectangular="norm", state=WarmState(),
                                     warm_blocks=REPORT_WARM_BLOCKS, warm_min_dim=REPORT_WARM_MIN_DIM).mean()
        print(f"{layers}x{width} {cell}: init: exact {t_exact:.2f} s, warm {t_warm:.2f} s ({ws.stats}), max rel err "
              f"{100 * err(warm, ref):.2f}%; after {steps} LSC steps: warm max rel err "
              f"{100 * err(after_warm, after_ref):.2f}%; exact on fewer steps x samples at init: {', '.join(fewer)}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="lstm,gru,alif")
    ap.add_argument("--variants", default="base")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None, help="LSC learning rate (default: LSCConfig's)")
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--demo", action="store_true", help="the demo's LSC settings (cli.train.demo_lsc: its lr, "
                    "patience and step budget per cell) instead of LSCConfig's defaults")
    ap.add_argument("--report-check", action="store_true", help="measure the before/after report against exact")
    a = ap.parse_args()
    torch.set_num_threads(1)
    data = load_task(DataConfig(task="digits", layout="rows", batch_size=32))
    data.train.set_epoch(0)
    batches = [b for _, b in zip(range(2), data.train, strict=False)]
    if a.report_check:
        report_check(a.cells.split(","), a.layers, a.width, a.max_steps, batches)
        return
    for cell in a.cells.split(","):
        for name in a.variants.split(","):
            with variant(name) as extra:
                if a.lr is not None:
                    extra["lr"] = a.lr
                if a.demo:
                    from stablernn.cli.train import demo_lsc

                    cfg = demo_lsc(cell)
                    extra.setdefault("lr", cfg.lr)
                    rep = lsc_pretrain(_model(cell, a.layers, a.width), batches, cfg, time_limit=None, **extra)
                else:
                    rep = lsc_pretrain(_model(cell, a.layers, a.width), batches, max_steps=a.max_steps,
                                       time_limit=None, progress=False, **extra)
            h = rep.history
            at = {k: "/".join(f"{h[k - 1][f]:.3f}" for f in ("time", "depth", "encoder") if f in h[k - 1])
                  for k in (10, 20, 40, 60, 100, 150) if len(h) >= k}
            after = {f: [round(v, 3) for v in vals] for f, vals in rep.after.items()}
            print(f"{a.layers}x{a.width} {cell} {name} lr={extra.get('lr', 'default')}: {rep.steps} steps, "
                  f"{rep.seconds:.1f} s, {rep.stop_reason.split(':')[0]}; after {after}; ema time/depth/encoder at {at}"
                  + (f"; rates {rep.activity['after_lsc']} -> {rep.activity['final']}" if rep.activity else ""),
                  flush=True)


if __name__ == "__main__":
    main()
