"""``stablernn dynamics``: Lyapunov spectrum, memory capacity, nonlinear capacity and readout-size scaling of a
network (fresh, from a run directory, and optionally after LSC pre-training), as a table and figures."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
import typer
from torch import Tensor, nn

from ..dynamics.memory import DynamicsConfig, FeatureKind
from ..io import atomic_write_text
from ..models import CellKind, ModelConfig
from .app import app
from .options import choice_option, field_default, field_help

FIGURES = ("spectrum.png", "memory.png", "readout.png")


def _h(name: str) -> str:
    return field_help(DynamicsConfig, name)


def _d(name: str) -> object:
    return field_default(DynamicsConfig, name)


def task_stream(loader: Any, streams: int, steps: int) -> Tensor:
    """Examples of a task laid end to end: ``[streams, >= steps, F]`` (or ``[streams, >= steps]`` token ids), so
    the Lyapunov spectrum sees task-like input for longer than one example lasts."""
    pieces: list[Tensor] = []
    have = 0
    need = streams * steps
    for batch in loader:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        pieces.append(x)
        have += x.shape[0] * x.shape[1]
        if have >= need:
            break
    if not pieces:
        raise ValueError("the task's loader gave no batches")
    x = torch.cat(pieces, 0)
    T = x.shape[1]
    per_stream = -(-steps // T)  # examples per stream
    if x.shape[0] < streams * per_stream:  # a small test set: cycle it
        reps = -(-(streams * per_stream) // x.shape[0])
        x = x.repeat(reps, *([1] * (x.dim() - 1)))
    x = x[: streams * per_stream]
    return x.reshape(streams, per_stream * T, *x.shape[2:])


def _build(task: str, cell: str, layers: int, width: int, seed: int, run: Path | None
           ) -> tuple[nn.Module, Any, str]:
    from ..data import DataConfig, load_task
    from ..models import ModelConfig, build_model

    if run is not None:
        from ..train.runs import load_run

        loaded = load_run(run)
        return loaded.model, load_task(loaded.config.data), f"{run.name} ({loaded.weights.name})"
    torch.manual_seed(seed)
    data = load_task(DataConfig(task=task, seed=seed))
    model = build_model(ModelConfig(cell=cell, layers=layers, width=width), data.info, seed=seed)
    return model, data, f"{task}-{cell}-{layers}x{width} (init, seed {seed})"


def _lsc_variant(model: nn.Module, data: Any, target: float, seed: int, progress: bool = False
                 ) -> tuple[nn.Module, dict[str, Any]]:
    try:
        from ..lsc.pretrain import lsc_pretrain
    except ImportError as e:  # pragma: no cover - only before LSC exists
        raise ValueError(f"--lsc needs stablernn.lsc.pretrain.lsc_pretrain, which is not available: {e}") from None
    from ..lsc.config import LSCConfig

    m = copy.deepcopy(model)
    report = lsc_pretrain(m, data.train, LSCConfig(target=target, seed=seed, progress=progress))
    return m, report.to_json()


def print_table(rows: dict[str, dict[str, Any]]) -> str:
    """The one-line-per-network summary table."""
    degrees = sorted({d for s in rows.values() for d in s.get("ipc", {})}, key=int)
    head = f"{'network':<26} {'lambda_1':>9} {'mean k':>8} {'MC':>7}" + "".join(f" {'IPC' + d:>7}" for d in degrees)
    head += f" {'IPC sum':>8} {'|corr|':>7} {'N':>5} {'sec':>6}"
    lines = [head]
    for name, s in rows.items():
        lam = s.get("lyapunov")
        line = f"{name:<26} {_f(lam[0] if lam else None):>9} {_f(sum(lam) / len(lam) if lam else None):>8} "
        line += f"{_f(s.get('mc'), 2):>7}" + "".join(f" {_f(s.get('ipc', {}).get(d), 2):>7}" for d in degrees)
        corr = s["scaling"][-1]["corr"] if s.get("scaling") else None
        line += f" {_f(s.get('ipc_total'), 2):>8} {_f(corr, 3):>7} {s.get('n_features', 0):>5} {s['seconds']:>6.1f}"
        lines.append(line)
    return "\n".join(lines)


def scaling_table(rows: dict[str, dict[str, Any]]) -> str:
    """Readout-size scaling per network: MC, capacity per degree and mean |corr| against the readout size."""
    lines = []
    for name, s in rows.items():
        if not s.get("scaling"):
            continue
        degs = sorted(k[3:] for k in s["scaling"][0] if k.startswith("ipc") and not k.endswith("_sd"))
        lines.append(f"readout-size scaling: {name}")
        lines.append(f"  {'n':>5} {'MC':>13}" + "".join(f" {'IPC' + d:>13}" for d in degs) + f" {'|corr|':>7}")
        for r in s["scaling"]:
            line = f"  {r['n']:>5} {r['mc']:>7.2f}±{r['mc_sd']:<5.2f}"
            line += "".join(f" {r['ipc' + d]:>7.2f}±{r['ipc' + d + '_sd']:<5.2f}" for d in degs)
            lines.append(line + f" {r['corr']:>7.3f}")
    return "\n".join(lines)


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def plot_profiles(rows: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """Three figures: the Lyapunov spectrum, MC_k against the lag, capacity against the readout size per degree."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if any(s.get("lyapunov") for s in rows.values()):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, s in rows.items():
            if s.get("lyapunov"):
                lam = s["lyapunov"]
                ax.errorbar(range(1, len(lam) + 1), lam, yerr=s.get("lyapunov_sd"), marker="o", ms=3, capsize=2,
                            label=name)
        ax.axhline(0, color="k", lw=0.6)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set(xlabel="index i", ylabel="Lyapunov exponent λ_i (per step)", title="Lyapunov spectrum")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(_save(fig, out / FIGURES[0]))
    if any(s.get("mc_per_lag") for s in rows.values()):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, s in rows.items():
            if s.get("mc_per_lag"):
                ax.plot(range(1, len(s["mc_per_lag"]) + 1), s["mc_per_lag"], label=f"{name}: MC={s['mc']:.2f}")
        ax.set(xlabel="lag k", ylabel="MC_k = corr²(y_k, u(t-k))", title="Memory capacity per lag", ylim=(0, 1.02))
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(_save(fig, out / FIGURES[1]))
    scaled = {n: s for n, s in rows.items() if s.get("scaling")}
    if scaled:
        first = next(iter(scaled.values()))["scaling"][0]
        keys = ["mc", *sorted(k for k in first if k.startswith("ipc") and not k.endswith("_sd")), "corr"]
        fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 3.2))
        for ax, key in zip(axes, keys, strict=True):
            for name, s in scaled.items():
                n = [r["n"] for r in s["scaling"]]
                ax.errorbar(n, [r[key] for r in s["scaling"]], yerr=[r.get(key + "_sd", 0.0) for r in s["scaling"]],
                            marker="o", ms=3, capsize=2, label=name)
            ax.set_xscale("log", base=2)
            ax.set(xlabel="readout size n", title={"mc": "memory capacity", "corr": "mean |corr|"}.get(
                key, f"capacity, degree {key[3:]}"))
        axes[0].legend(fontsize=6)
        fig.tight_layout()
        paths.append(_save(fig, out / FIGURES[2]))
    return paths


def _save(fig: Any, path: Path) -> Path:
    from ..figures import save_figure

    return save_figure(fig, path)


@app.command()
def dynamics(
    task: str = typer.Option("digits", "--task", help="task whose input size/classes shape the network and whose "
                             "examples, laid end to end, drive the Lyapunov spectrum"),
    cell: str = choice_option("gru", "--cell", CellKind, field_help(ModelConfig, "cell")),
    layers: int = typer.Option(2, "--layers", help=field_help(ModelConfig, "layers")),
    width: int = typer.Option(64, "--width", help=field_help(ModelConfig, "width")),
    run: Path | None = typer.Option(None, "--run", help="a run directory from `stablernn train` (config.json + "
                                    "best.pt/checkpoint.pt): measure the trained network instead of a fresh one"),
    lyapunov: int = typer.Option(_d("lyapunov"), "--lyapunov", help=_h("lyapunov")),
    lyapunov_steps: int = typer.Option(400, "--lyapunov-steps", help="input steps per stream for the spectrum"),
    transient: int | None = typer.Option(None, "--transient", help="steps dropped before counting (default: a "
                                         "quarter of --lyapunov-steps)"),
    memory: int = typer.Option(_d("memory"), "--memory", help=_h("memory")),
    ipc_degree: int = typer.Option(_d("ipc_degree"), "--ipc-degree", help=_h("ipc_degree")),
    ipc_window: int | None = typer.Option(None, "--ipc-window", help=_h("ipc_window")),
    steps: int = typer.Option(_d("n_steps"), "--steps", help=_h("n_steps")),
    streams: int = typer.Option(_d("streams"), "--streams", help=_h("streams") + " (the spectrum uses at most 4)"),
    draws: int = typer.Option(_d("draws"), "--draws", help=_h("draws")),
    features: str = choice_option(_d("features"), "--features", FeatureKind, _h("features")),
    ridge: float | None = typer.Option(None, "--ridge", help=_h("ridge")),
    lsc: list[float] = typer.Option([], "--lsc", help="also measure after LSC pre-training to this target; "
                                    "repeat for several (--lsc 0.5 --lsc 1.0), each from the same initial weights"),
    seed: int = typer.Option(0, "--seed", help="seeds the network, the drives and the readout subsets"),
    out: Path | None = typer.Option(None, "--out", help="where summary.json and the figures go (default: "
                                    "runs/dynamics/<task>-<cell>-<L>x<W>-s<seed>)"),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars with time estimates (LSC "
                                  "steps; one step per measured network)"),
) -> None:
    """Lyapunov spectrum, linear memory capacity, nonlinear (Legendre) capacity and how memory and capacity scale
    with the number of readout neurons, for a fresh or trained network and optionally after LSC pre-training.

    Prints a summary table (top exponent, mean of the k exponents, MC, capacity per degree, mean pairwise |corr| of
    all readout features) and the readout-size table; writes summary.json, spectrum.png, memory.png and
    readout.png. Definitions: docs/dynamics.md.
    """
    _check_sizes({"--layers": (layers, 1), "--width": (width, 1), "--threads": (threads, 1),
                  "--lyapunov-steps": (lyapunov_steps, 2), "--streams": (streams, 1), "--steps": (steps, 2),
                  "--lyapunov": (lyapunov, 0), "--memory": (memory, 0), "--ipc-degree": (ipc_degree, 0),
                  "--draws": (draws, 0)})
    if memory > 0 and steps <= memory + 20:
        raise ValueError(f"--steps ({steps}) must well exceed --memory ({memory}): the first k_max steps are a "
                         f"warmup and the rest is split into train and test")
    torch.set_num_threads(threads)
    model, data, label = _build(task, cell, layers, width, seed, run)
    cfg = DynamicsConfig(lyapunov=lyapunov, transient=transient, memory=memory, ipc_degree=ipc_degree,
                         ipc_window=ipc_window, n_steps=steps, streams=streams, draws=draws,
                         features=features, ridge=ridge, seed=seed)  # type: ignore[arg-type]
    x = task_stream(data.test, min(streams, 4), lyapunov_steps) if lyapunov > 0 else None
    rows, lsc_reports = _profiles(model, data, "init" if run is None else "trained", lsc, x, cfg, seed, progress)
    out = out or Path("runs") / "dynamics" / (run.name if run else f"{task}-{cell}-{layers}x{width}-s{seed}")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"network": label, "config": dict(cfg.__dict__.items()), "profiles": rows,
               "lsc": lsc_reports}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    typer.echo(f"network: {label}; features: {features}; exponents per step (natural log)")
    typer.echo(print_table(rows))
    if draws > 0:
        typer.echo(scaling_table(rows))
    for p in plot_profiles(rows, out):
        typer.echo(f"wrote {p}")
    typer.echo(f"wrote {out / 'summary.json'}")


def _check_sizes(values: dict[str, tuple[int, int]]) -> None:
    """One line for the first option below its smallest allowed value."""
    for name, (v, lo) in values.items():
        if v < lo:
            raise ValueError(f"{name} must be >= {lo}, got {v}")


def _profiles(model: nn.Module, data: Any, first: str, lsc: list[float], x: Any, cfg: DynamicsConfig, seed: int,
              progress: bool) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The dynamics profile of ``model`` and of an LSC-pre-trained copy per target: (summary rows, LSC reports)."""
    from tqdm.auto import tqdm

    from ..dynamics.memory import dynamics_profile

    variants: dict[str, nn.Module] = {first: model}
    lsc_reports = {}
    for target in lsc:
        name = f"LSC {target:g}"
        typer.echo(f"LSC pre-training to {target:g} ...")
        variants[name], lsc_reports[name] = _lsc_variant(model, data, target, seed, progress)
    rows = {name: dynamics_profile(net, x, cfg).summary()
            for name, net in tqdm(variants.items(), desc="dynamics", unit="network", disable=not progress,
                                  leave=False)}
    return rows, lsc_reports
