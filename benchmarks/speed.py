"""Training-step speed and peak memory of a recurrent spiking net: stablernn vs the matmul floor and the peers.

Network (SHD shape): input 700 -> recurrent LIF 256 -> recurrent LIF 256 -> linear readout 20 per step, loss =
cross-entropy of the time-averaged logits; one "batch" = forward + backward of that loss (no optimizer step).
Implementations, each timed in its own subprocess (clean peak memory, no shared caches or allocator state):

- ``matmul_floor``: only the matrix products a training step of this net cannot avoid, run back to back without
  autograd or neuron dynamics: per layer the input projection of all steps, T recurrent ``[B, n] x [n, n]``
  products forward and T backward, the weight gradients (input and recurrent, batched over time), the input
  gradient of every layer above the first, and the readout forward/backward.
- ``stablernn_lif`` / ``stablernn_alif``: ``DeepRNN`` of ``LIFCell`` / ``ALIFCell`` through ``forward_sequence`` (the
  fused path of ``stablernn.cells.fast_spiking``).
- ``step_loop_lif`` / ``step_loop_alif``: the same models with ``cell.fast = False`` (the autograd step loop).
- ``lstm_fused`` / ``gru_fused`` / ``lru_fast`` and their ``*_loop``: DeepRNNs of those cells with the same widths,
  fast path vs step loop (not in ``--quick``).
- ``snntorch`` (``RLeaky``), ``norse`` (``LIFRecurrent``), ``spikingjelly`` (``LinearRecurrentContainer`` around a
  ``LIFNode``), when installed (``bash benchmarks/install_peers.sh``), written as their tutorials do, with the same
  weights and input. snnTorch's ``RLeaky`` (subtractive reset, ``reset_delay=True``) has exactly the LIF dynamics
  here, so its forward loss must equal stablernn's (checked, column "loss"). Norse (current-based synapse, reset to
  ``v_reset`` within the step) and SpikingJelly (soft reset within the step, so the next step leaks ``δ ϑ`` instead
  of ``ϑ``) integrate differently; their losses are shown but not expected to match.

Timing: ``torch.set_num_threads(--threads)`` (default 1, also ``OMP/MKL_NUM_THREADS``) in every worker; warm-up
steps, then ``--repeats`` timed steps; the table shows the median wall-clock ms per batch, the median process CPU
ms (less sensitive to other load on a shared machine), and ratios to the floor computed from medians of the same
run. Peak memory: on CPU the worker resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``,
Linux >= 4.0) after building the model and data, and reports ``VmHWM`` minus the resident set at that moment, i.e.
the extra memory the training steps needed (falls back to ``ru_maxrss`` minus the same baseline elsewhere); on
CUDA ``torch.cuda.max_memory_allocated`` over the steps, minus what was allocated before.

Usage::

    python benchmarks/speed.py --quick                      # SHD shape only, < 2 minutes
    python benchmarks/speed.py --json results.json          # both shapes
    python benchmarks/speed.py --device cuda --threads 16

``--json FILE`` writes ``{impl: {"ms_median": float, "peak_mb": float, ...}}`` for the SHD shape; the larger shape's
entries are keyed ``impl@large``.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BenchConfig:
    """Shape of the benchmark network and batch."""

    batch: int
    steps: int
    inputs: int = 700
    width: int = 256
    layers: int = 2
    classes: int = 20
    tau: float = 20.0  # membrane time constant in steps (δ = exp(-1/τ) ≈ 0.951)
    threshold: float = 1.0
    input_rate: float = 0.05  # Bernoulli input spikes, like SHD's sparse events


CONFIGS: dict[str, BenchConfig] = {
    "shd": BenchConfig(batch=32, steps=250),
    "large": BenchConfig(batch=128, steps=500, width=512),
}
OURS = ("matmul_floor", "stablernn_lif", "stablernn_alif", "step_loop_lif", "step_loop_alif")
PEERS = ("snntorch", "norse", "spikingjelly")
# Other cells of the same widths against their step loops: fused LSTM/GRU kernels; the LRU's fast path (parallel
# scan on CUDA, fused sequential kernel on CPU).
CELLS = ("lstm_fused", "lstm_loop", "gru_fused", "gru_loop", "lru_fast", "lru_loop")
QUICK_IMPLS = ("matmul_floor", "stablernn_lif", "stablernn_alif", "step_loop_lif", *PEERS)


# ----------------------------------------------------------------------------------------------------------------
# worker side: build one implementation, time it, report JSON on the last stdout line
# ----------------------------------------------------------------------------------------------------------------
def _reference_model(cfg: BenchConfig, adaptive: bool, device: Any):
    """stablernn's DeepRNN with self-connections kept (snnTorch's RLeaky has no mask), built from the seed."""
    from stablernn.cells import ALIFCell, LIFCell
    from stablernn.models import DeepRNN

    cells, size = [], cfg.inputs
    for _ in range(cfg.layers):
        common = {"tau": cfg.tau, "threshold": cfg.threshold, "reset": "subtract", "detach_reset": True,
                      "self_connections": True, "spike": "fast_sigmoid"}
        if adaptive:
            cells.append(ALIFCell(size, cfg.width, beta=1.8, tau_adapt=cfg.steps / 2, **common))
        else:
            cells.append(LIFCell(size, cfg.width, **common))
        size = cfg.width
    return DeepRNN(cells, input_size=cfg.inputs, output_size=cfg.classes).to(device)


def _cell_model(cfg: BenchConfig, kind: str, device: Any):
    """DeepRNN of LSTM / GRU / LRU cells with the spiking net's widths."""
    from stablernn.cells import GRUCell, LRUCell, LSTMCell
    from stablernn.models import DeepRNN

    cls = {"lstm": LSTMCell, "gru": GRUCell, "lru": LRUCell}[kind]
    sizes = [cfg.inputs] + [cfg.width] * cfg.layers
    cells = [cls(a, b) for a, b in itertools.pairwise(sizes)]
    return DeepRNN(cells, input_size=cfg.inputs, output_size=cfg.classes).to(device)


def _batch(cfg: BenchConfig, seed: int, device: Any):
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    x = (torch.rand(cfg.batch, cfg.steps, cfg.inputs, generator=gen) < cfg.input_rate).float()
    y = torch.randint(0, cfg.classes, (cfg.batch,), generator=gen)
    return x.to(device), y.to(device)


def _loss(logits, y):
    import torch.nn.functional as F

    return F.cross_entropy(logits.mean(1), y)


def _trainer(module, forward: Callable[[], Any], y) -> Callable[[], float]:
    """One batch: clear grads, forward, loss, backward; returns the loss value."""
    params = [p for p in module.parameters() if p.requires_grad]

    def step() -> float:
        for p in params:
            p.grad = None
        loss = _loss(forward(), y)
        loss.backward()
        return float(loss.detach())

    return step


def build_stablernn(cfg: BenchConfig, ref, x, y, *, fast: bool) -> Callable[[], float]:
    for cell in ref.cells:
        cell.fast = fast
    return _trainer(ref, lambda: ref(x), y)


def build_floor(cfg: BenchConfig, ref, x, y) -> Callable[[], float]:
    """The unavoidable matmuls of one training step, without autograd (see module docstring)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        w_in = [c.weight_ih.detach() for c in ref.cells]
        w_rec = [c.weight_hh.detach() for c in ref.cells]
        w_out = ref.readout.weight.detach()
        # Fixed 0/1 operands stand in for spikes: same cost, and no dependence on values (no denormals).
        spikes = (torch.rand(cfg.batch, cfg.steps, cfg.width, device=x.device) < 0.1).float()
        grad_logits = torch.randn(cfg.batch, cfg.steps, cfg.classes, device=x.device)
    B, T, n = cfg.batch, cfg.steps, cfg.width

    def step() -> float:
        with torch.no_grad():
            inp, layer_inputs = x, []
            for W, R in zip(w_in, w_rec, strict=True):
                cur = F.linear(inp, W)
                out = torch.empty(B, T, n, device=x.device)
                for c_t, z_t, o_t in zip(cur.unbind(1), spikes.unbind(1), out.unbind(1), strict=True):
                    torch.addmm(c_t, z_t, R.t(), out=o_t)
                layer_inputs.append(inp)
                inp = spikes
            F.linear(inp, w_out)  # readout forward
            g = F.linear(grad_logits, w_out.t())  # readout input gradient
            grad_logits.reshape(-1, cfg.classes).t().mm(spikes.reshape(-1, n))  # readout weight gradient
            for l in range(len(w_in) - 1, -1, -1):
                gc = torch.empty(B, T, n, device=x.device)
                for g_t, o_t in zip(g.unbind(1), gc.unbind(1), strict=True):
                    torch.mm(g_t, w_rec[l], out=o_t)
                flat = g.reshape(-1, n)
                flat.t().mm(spikes.reshape(-1, n))  # recurrent weight gradient
                layer_in = layer_inputs[l]
                flat.t().mm(layer_in.reshape(-1, layer_in.shape[-1]))  # input weight gradient
                if l > 0:
                    g = F.linear(g, w_in[l].t())  # gradient to the layer below
        return math.nan  # no loss: nothing but matmuls

    return step


def build_snntorch(cfg: BenchConfig, ref, x, y) -> Callable[[], float]:
    import snntorch as snn
    import torch
    from snntorch import surrogate as ssur
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fcs, self.lifs = nn.ModuleList(), nn.ModuleList()
            for cell in ref.cells:
                fc = nn.Linear(cell.input_size, cell.hidden_size)
                lif = snn.RLeaky(beta=float(cell.decay[0]), threshold=float(cell.threshold[0]),
                                 linear_features=cell.hidden_size, reset_mechanism="subtract",
                                 spike_grad=ssur.fast_sigmoid(), learn_beta=False, learn_threshold=False)
                with torch.no_grad():
                    fc.weight.copy_(cell.weight_ih)
                    fc.bias.copy_(cell.bias)
                    lif.recurrent.weight.copy_(cell.recurrent_weight())
                    lif.recurrent.bias.zero_()
                self.fcs.append(fc)
                self.lifs.append(lif)
            self.readout = nn.Linear(ref.readout.in_features, ref.readout.out_features)
            with torch.no_grad():
                self.readout.weight.copy_(ref.readout.weight)
                self.readout.bias.copy_(ref.readout.bias)

        def forward(self, inp):  # the snnTorch tutorial loop: layers inside the time loop
            states = [lif.init_rleaky() for lif in self.lifs]
            outs = []
            for t in range(inp.shape[1]):
                h = inp[:, t]
                for l, (fc, lif) in enumerate(zip(self.fcs, self.lifs, strict=True)):
                    spk, mem = lif(fc(h), *states[l])
                    states[l] = (spk, mem)
                    h = spk
                outs.append(self.readout(h))
            return torch.stack(outs, 1)

    net = Net().to(x.device)
    return _trainer(net, lambda: net(x), y)


def build_norse(cfg: BenchConfig, ref, x, y) -> Callable[[], float]:
    import torch
    from norse.torch import LIFParameters, LIFRecurrent
    from torch import nn

    dt = 1e-3
    decay = float(ref.cells[0].decay[0])

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # Synaptic current fully replaced every step and the same membrane decay; the reset differs (see top).
            p = LIFParameters(tau_syn_inv=torch.as_tensor(1.0 / dt), tau_mem_inv=torch.as_tensor((1 - decay) / dt),
                              v_th=torch.as_tensor(cfg.threshold))
            self.layers = nn.ModuleList()
            for cell in ref.cells:
                layer = LIFRecurrent(cell.input_size, cell.hidden_size, p=p, autapses=True, dt=dt)
                with torch.no_grad():
                    layer.input_weights.copy_(cell.weight_ih)
                    layer.recurrent_weights.copy_(cell.recurrent_weight())
                self.layers.append(layer)
            self.readout = nn.Linear(ref.readout.in_features, ref.readout.out_features)
            with torch.no_grad():
                self.readout.weight.copy_(ref.readout.weight)
                self.readout.bias.copy_(ref.readout.bias)

        def forward(self, inp):  # inp is time-major [T, B, F], Norse's layout
            h = inp
            for layer in self.layers:
                h, _ = layer(h)
            return self.readout(h).transpose(0, 1)

    net = Net().to(x.device)
    x_tm = x.transpose(0, 1).contiguous()  # handed over in the peer's own layout, outside the timed step
    return _trainer(net, lambda: net(x_tm), y)


def build_spikingjelly(cfg: BenchConfig, ref, x, y) -> Callable[[], float]:
    import torch
    from spikingjelly.activation_based import functional, layer, neuron
    from torch import nn

    decay = float(ref.cells[0].decay[0])

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            blocks = []
            for cell in ref.cells:
                n = cell.hidden_size
                fc = nn.Linear(cell.input_size, n)
                node = neuron.LIFNode(tau=1.0 / (1.0 - decay), decay_input=False, v_threshold=cfg.threshold,
                                      v_reset=None, detach_reset=True, step_mode="s")
                rc = layer.LinearRecurrentContainer(node, in_features=n, out_features=n, bias=False, step_mode="m")
                with torch.no_grad():
                    fc.weight.copy_(cell.weight_ih)
                    fc.bias.copy_(cell.bias)
                    # rc.weight = [I, R]: the node receives x[t] + R y[t-1] (SpikingJelly's documented form).
                    rc.rc.weight.copy_(torch.cat([torch.eye(n), cell.recurrent_weight().detach().cpu()], 1))
                blocks += [layer.SeqToANNContainer(fc), rc]
            self.body = nn.Sequential(*blocks)
            self.readout = nn.Linear(ref.readout.in_features, ref.readout.out_features)
            with torch.no_grad():
                self.readout.weight.copy_(ref.readout.weight)
                self.readout.bias.copy_(ref.readout.bias)

        def forward(self, inp):  # inp is time-major [T, B, F], SpikingJelly's multi-step layout
            functional.reset_net(self)
            return self.readout(self.body(inp)).transpose(0, 1)

    net = Net().to(x.device)
    x_tm = x.transpose(0, 1).contiguous()  # handed over in the peer's own layout, outside the timed step
    return _trainer(net, lambda: net(x_tm), y)


def _status_mb(key: str) -> float | None:
    """A memory line of ``/proc/self/status`` (``VmRSS``: resident now, ``VmHWM``: its high-water mark) in MB;
    ``None`` where the file does not exist (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build and time one implementation in this process; returns the measurements."""
    threads = int(spec["threads"])
    import torch

    torch.set_num_threads(threads)
    device = torch.device(spec["device"])
    cfg = BenchConfig(**spec["config"])
    impl = spec["impl"]
    torch.manual_seed(spec["seed"])
    adaptive = impl.endswith("alif")
    kind = impl.split("_")[0]
    ref = _cell_model(cfg, kind, device) if impl in CELLS else _reference_model(cfg, adaptive, device)
    x, y = _batch(cfg, spec["seed"], device)
    builders: dict[str, Callable[[], Callable[[], float]]] = {
        "matmul_floor": lambda: build_floor(cfg, ref, x, y),
        "stablernn_lif": lambda: build_stablernn(cfg, ref, x, y, fast=True),
        "stablernn_alif": lambda: build_stablernn(cfg, ref, x, y, fast=True),
        "step_loop_lif": lambda: build_stablernn(cfg, ref, x, y, fast=False),
        "step_loop_alif": lambda: build_stablernn(cfg, ref, x, y, fast=False),
        "snntorch": lambda: build_snntorch(cfg, ref, x, y),
        "norse": lambda: build_norse(cfg, ref, x, y),
        "spikingjelly": lambda: build_spikingjelly(cfg, ref, x, y),
        **{name: (lambda fast=name.endswith(("fused", "fast")): build_stablernn(cfg, ref, x, y, fast=fast))
           for name in CELLS},
    }
    step = builders[impl]()
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    # Baseline for peak memory: after building everything, before the first step.
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    base_rss = _status_mb("VmRSS")
    hwm_ok = _reset_hwm()
    loss = step()
    for _ in range(int(spec["warmup"])):
        step()
    wall, cpu = [], []
    for _ in range(int(spec["repeats"])):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    hwm = _status_mb("VmHWM") if hwm_ok and not cuda else None
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        method = "cuda.max_memory_allocated"
    elif hwm is not None and base_rss is not None:
        peak_mb = hwm - base_rss
        method = "VmHWM after clear_refs"
    else:  # ru_maxrss is in KiB on Linux, bytes on macOS
        scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 1024
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - (base_rss or 0.0)
        method = "ru_maxrss"
    rates = []
    if impl.startswith(("stablernn", "step_loop")):
        with torch.no_grad():
            rates = [float(h.mean()) for h in ref.run(x).layer_outputs]
    return {"ms_median": statistics.median(wall), "cpu_ms_median": statistics.median(cpu), "peak_mb": peak_mb,
            "loss": loss, "ms_all": wall, "memory_method": method, "threads": torch.get_num_threads(),
            "firing_rates": rates}


# ----------------------------------------------------------------------------------------------------------------
# parent side: one subprocess per implementation, table, JSON
# ----------------------------------------------------------------------------------------------------------------
def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def run_one(impl: str, config: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = {"impl": impl, "config": asdict(CONFIGS[config]), "threads": args.threads, "device": args.device,
            "repeats": args.repeats, "warmup": args.warmup, "seed": args.seed}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env=env, timeout=args.timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def merge_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One implementation's rounds -> medians over rounds of its per-round medians (errors only if all failed)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    merged = dict(ok[0])
    for key in ("ms_median", "cpu_ms_median", "peak_mb"):
        merged[key] = statistics.median(r[key] for r in ok)
    merged["cpu_ms_rounds"] = [r["cpu_ms_median"] for r in ok]
    merged["rounds"] = len(ok)
    return merged


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def table(config: str, results: dict[str, dict[str, Any]]) -> str:
    floor = results.get("matmul_floor", {})
    fl_wall, fl_cpu = floor.get("ms_median", math.nan), floor.get("cpu_ms_median", math.nan)
    ref_loss = results.get("stablernn_lif", {}).get("loss")
    cfg = CONFIGS[config]
    lines = [f"**{config}**: {cfg.inputs} -> {' -> '.join([str(cfg.width)] * cfg.layers)} -> {cfg.classes}, "
             f"batch {cfg.batch}, T = {cfg.steps}",
             "",
             "| implementation | ms / batch (wall) | x floor | CPU ms / batch | x floor (CPU) | CPU ms per round | "
             "peak MB | loss |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for impl, r in results.items():
        if "error" in r:
            lines.append(f"| {impl} | failed: {r['error'][:80]} | | | | | | |")
            continue
        loss = r.get("loss", math.nan)
        per_round = "/".join(f"{v:.0f}" for v in r.get("cpu_ms_rounds", [r["cpu_ms_median"]]))
        note = ""
        if impl in ("snntorch", "step_loop_lif") and ref_loss is not None:
            same = abs(loss - ref_loss) <= 1e-4 * max(1.0, abs(ref_loss))
            note = " (= stablernn_lif)" if same else " (differs from stablernn_lif!)"
        elif impl in ("norse", "spikingjelly"):
            note = " (other dynamics)"
        loss_txt = "—" if math.isnan(loss) else f"{loss:.5f}{note}"
        lines.append(f"| {impl} | {r['ms_median']:.0f} | {ratio(r['ms_median'], fl_wall):.2f} | "
                     f"{r['cpu_ms_median']:.0f} | {ratio(r['cpu_ms_median'], fl_cpu):.2f} | {per_round} | "
                     f"{r['peak_mb']:.0f} | {loss_txt} |")
    ours = results.get("stablernn_lif", {})
    for peer in ("snntorch", *PEERS[1:]):
        if "ms_median" in results.get(peer, {}) and "ms_median" in ours:
            lines.append("")
            lines.append(f"{peer} time / stablernn_lif time: "
                         f"{ratio(results[peer]['ms_median'], ours['ms_median']):.2f} (wall), "
                         f"{ratio(results[peer]['cpu_ms_median'], ours['cpu_ms_median']):.2f} (CPU).")
            break
    return "\n".join(lines)


def cells_table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["Other cells, same widths: fused LSTM/GRU kernels and the LRU fast path (parallel scan on CUDA, fused "
             "sequential kernel on CPU) vs their step loops",
             "",
             "| implementation | ms / batch (wall) | CPU ms / batch | peak MB | loop / fast (CPU) | loss |",
             "|---|---:|---:|---:|---:|---|"]
    for impl, r in results.items():
        if "error" in r:
            lines.append(f"| {impl} | failed: {r['error'][:80]} | | | | |")
            continue
        kind = impl.split("_")[0]
        fast = results.get(f"{kind}_{'fast' if kind == 'lru' else 'fused'}", {})
        loop = results.get(f"{kind}_loop", {})
        speedup = (f"{ratio(loop['cpu_ms_median'], fast['cpu_ms_median']):.1f}"
                   if impl == f"{kind}_loop" and "cpu_ms_median" in fast and "cpu_ms_median" in loop else "")
        lines.append(f"| {impl} | {r['ms_median']:.0f} | {r['cpu_ms_median']:.0f} | {r['peak_mb']:.0f} | {speedup} | "
                     f"{r['loss']:.5f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="SHD shape only, 5 repeats, 1 warm-up (< 2 minutes)")
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=None,
                   help="shapes to run (default: all; --quick: shd)")
    p.add_argument("--impls", nargs="+", choices=[*OURS, *PEERS, *CELLS], default=None,
                   help="implementations to run (default: all installed, plus the LSTM/GRU/LRU comparison; "
                        "--quick: the spiking ones without step_loop_alif)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every worker (default 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per implementation (default 7; quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; quick 1)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every implementation this many times, round-robin, and report medians over rounds "
                        "(steadier on a shared machine; default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per implementation before giving up")
    p.add_argument("--json", type=Path, default=None, help="also write {impl: {ms_median, peak_mb, ...}} here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 7
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.repeats < 5:
        p.error("--repeats must be >= 5 (medians of at least five timed steps)")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    configs = args.configs or (["shd"] if args.quick else list(CONFIGS))
    impls = args.impls or list(QUICK_IMPLS if args.quick else (*OURS, *PEERS, *CELLS))
    impls = [i for i in impls if i not in PEERS or installed(i)]
    missing = [p for p in PEERS if not installed(p)]
    started = time.time()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    out: dict[str, Any] = {}
    reports = []
    for config in configs:
        runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
        for round_ in range(args.rounds):  # round-robin, so slow drifts in machine load hit every impl alike
            for impl in impls:
                print(f"[{config}] round {round_ + 1}/{args.rounds}: {impl} ...", file=sys.stderr, flush=True)
                runs[impl].append(run_one(impl, config, args))
        results = {impl: merge_rounds(r) for impl, r in runs.items()}
        spiking = {k: v for k, v in results.items() if k not in CELLS}
        others = {k: v for k, v in results.items() if k in CELLS}
        reports.append(table(config, spiking) if spiking else f"**{config}**")
        if others:
            reports.append(cells_table(others))
        suffix = "" if config == "shd" else f"@{config}"
        for impl, r in results.items():
            if "ms_median" in r:
                out[impl + suffix] = {k: (None if isinstance(r[k], float) and math.isnan(r[k]) else r[k])
                                      for k in ("ms_median", "cpu_ms_median", "peak_mb", "loss")}
    import torch

    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"torch {torch.__version__}, device {args.device}, threads {args.threads}, {args.rounds} round(s) x "
          f"{args.repeats} timed steps (+{args.warmup} warm-up) per implementation, {os.cpu_count()} CPUs, load "
          f"average {load:.2f} at start / {load_end:.2f} at end, {time.time() - started:.0f} s")
    if missing:
        print(f"not installed (skipped): {', '.join(missing)} — bash benchmarks/install_peers.sh")
    print()
    print("\n\n".join(reports))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
