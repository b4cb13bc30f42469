"""``stablernn sg plot`` (figure of the surrogate-gradient family) and ``stablernn snn-design`` (SG and init of a
LIF/ALIF network from the stability conditions, optionally followed by training with them)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..cells.spiking import Reset
from ..io import atomic_savefig, atomic_torch_save, atomic_write_text
from ..models import CONDITIONS, SPIKING_CELLS, ModelConfig, SpikingCellKind
from ..snn.conditions import NoRoot
from ..snn.design import DesignConfig
from ..surrogate import SurrogateName
from .app import app
from .options import choice_option, field_help

sg_app = typer.Typer(help="Surrogate gradients: the shapes, their dampening, sharpness and tail.", no_args_is_help=True)
app.add_typer(sg_app, name="sg")

FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def sg_figure(dampening: float = 1.0, sharpness: float = 1.0, tail: float = 1.56, shapes: list[str] | None = None,
              span: float = 3.0):
    """A matplotlib figure of the SG shapes at the given γ, s, q: the derivatives ``f(v)`` (left), their tails on a
    log scale (middle), and the q-PseudoSpike family over q (right). Returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..surrogate import SHAPES, get, names

    shapes = list(SHAPES) if shapes is None else shapes
    for s in shapes:
        if s not in names():
            raise ValueError(f"unknown surrogate {s!r}; choose from {', '.join(names())}")
    if span <= 0:
        raise ValueError(f"--span must be > 0, got {span}")
    v = torch.linspace(-span, span, 2001, dtype=torch.float64)
    vt = torch.logspace(-2, 3, 400, dtype=torch.float64)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in shapes:
        if name in SHAPES:
            spike = get(name, dampening, sharpness, tail if SHAPES[name].uses_tail else None)
        else:  # an alias keeps its own parametrisation
            spike = get(name)
        spike = spike.double()
        label = name + (f" (q={tail:g})" if name in SHAPES and SHAPES[name].uses_tail else "")
        axes[0].plot(v.numpy(), spike.derivative(v).numpy(), label=label)
        axes[1].loglog(vt.numpy(), spike.derivative(vt).clamp(min=1e-300).numpy(), label=label)
    axes[0].set(xlabel="v − ϑ", ylabel="f(v) = ∂z/∂v",
                title=f"SG shapes: f(0) = γ = {dampening:g}, ∫f = γ/s = {dampening / sharpness:.3g}")
    axes[1].set(xlabel="|v − ϑ|", ylabel="f(v)", title="tails (log-log)", ylim=(1e-8, 2 * max(dampening, 1.0)))
    for q in (1.01, 1.05, 1.2, 1.56, 2.36, 4.08, 16.8):
        spike = get("q_pseudospike", dampening, sharpness, q).double()
        axes[2].semilogy(v.numpy(), spike.derivative(v).numpy(), label=f"q = {q:g}")
    spike = get("exponential", dampening, sharpness).double()
    axes[2].semilogy(v.numpy(), spike.derivative(v).numpy(), "k--", label="exponential (q → ∞)")
    axes[2].set(xlabel="v − ϑ", title="q-PseudoSpike: tail fatness", ylim=(1e-4, 2 * dampening))
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


@sg_app.command("plot")
def sg_plot(
    out: Path = typer.Option(..., "--out", help="figure file (.png, .svg or .pdf)"),
    dampening: float = typer.Option(1.0, "--dampening", help="γ = f(0), the SG's peak"),
    sharpness: float = typer.Option(1.0, "--sharpness", help="s: the SG's area is γ/s"),
    tail: float = typer.Option(1.56, "--tail", help="q of q_pseudospike (> 1; heavier tails as q -> 1)"),
    shapes: str = typer.Option("", "--shapes", help="comma-separated shapes/aliases to draw (default: the 8 shapes)"),
    span: float = typer.Option(3.0, "--span", help="plot v − ϑ over [-span, span]"),
) -> None:
    """Plot every surrogate-gradient shape at the given dampening, sharpness and tail (PNG/SVG/PDF)."""
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"--out must end in one of {', '.join(FIGURE_SUFFIXES)}, got {out.name!r}")
    if not out.parent.exists():
        raise FileNotFoundError(f"directory {out.parent} does not exist")
    names_ = [s.strip() for s in shapes.split(",") if s.strip()] or None
    fig = sg_figure(dampening, sharpness, tail, names_, span)
    atomic_savefig(fig, out, dpi=130)
    typer.echo(f"wrote {out}")


def design_for_task(task: str, cell: str, layers: int, width: int, *, tau: float, threshold: float, reset: str,
                    shape: str, conditions: tuple[str, ...], rate: float, seed: int, data_seed: int = 0,
                    on_no_root: str = "clip"):
    """Build the network for ``task`` and design its spiking layers. Returns ``(run pieces, designs, stats)``:
    ``(data config, model config, model, task info)``, the designs, and the first layer's input statistics."""
    import torch

    from ..data import DataConfig, load_task
    from ..models import ModelConfig, build_model
    from ..snn.design import DesignConfig, design_model
    from ..snn.stats import task_stats

    if cell not in SPIKING_CELLS:
        raise ValueError(f"snn-design designs spiking networks: --cell must be {' or '.join(SPIKING_CELLS)}, got "
                         f"{cell!r}")
    data_cfg = DataConfig(task=task, seed=data_seed)
    data = load_task(data_cfg)
    info = data.info
    if info.input_kind == "tokens":
        raise ValueError(f"task {task!r} has token inputs; snn-design needs dense or spike inputs")
    model_cfg = ModelConfig(cell=cell, layers=layers, width=width, tau=tau, threshold=threshold, reset=reset,
                            surrogate=shape)
    torch.manual_seed(seed)
    model = build_model(model_cfg, info, seed=seed)
    stats = task_stats(info)
    design = DesignConfig(shape=shape, conditions=conditions, rate=rate, on_no_root=on_no_root)  # type: ignore[arg-type]
    designs = design_model(model, stats, design, seed=seed, seq_len=info.seq_len)
    return (data_cfg, model_cfg, model, info), designs, stats


@app.command("snn-design")
def snn_design(
    task: str = typer.Option("digits", "--task", help="task name (stablernn data list)"),
    cell: str = choice_option("alif", "--cell", SpikingCellKind, "spiking layer kind"),
    layers: int = typer.Option(2, "--layers", help="number of spiking layers"),
    width: int = typer.Option(64, "--width", help="neurons per layer"),
    tau: float = typer.Option(20.0, "--tau", help=field_help(ModelConfig, "tau")),
    threshold: float = typer.Option(1.0, "--threshold", help=field_help(ModelConfig, "threshold")),
    reset: str = choice_option("subtract", "--reset", Reset, field_help(ModelConfig, "reset")),
    shape: str = choice_option("fast_sigmoid", "--shape", SurrogateName, field_help(DesignConfig, "shape")),
    conditions: str = typer.Option("I,II,III,IV", "--conditions", help="conditions to apply, comma-separated "
                                   f"subset of {','.join(CONDITIONS)}"),
    rate: float = typer.Option(0.5, "--rate", help=field_help(DesignConfig, "rate")),
    fallback: str = choice_option("clip", "--fallback", NoRoot, field_help(DesignConfig, "on_no_root")),
    seed: int = typer.Option(0, "--seed", help="seed of the network's init and the condition draws"),
    train: bool = typer.Option(False, "--train/--no-train", help="then train the designed network through fit"),
    epochs: int = typer.Option(10, "--epochs", help="[--train] epochs"),
    lr: float = typer.Option(1e-3, "--lr", help="[--train] learning rate"),
    init_rate: float | None = typer.Option(None, "--init-rate", help="[--train] fit the initial firing rate"),
    final_rate: float | None = typer.Option(None, "--final-rate", help="[--train] sparsity-loss target rate"),
    rate_ramp: str = typer.Option("0.2:0.6", "--rate-ramp", help="[--train] START:END of the sparsity-loss ramp"),
    out_dir: str = typer.Option("runs", "--out-dir", help="[--train] parent directory of the run"),
    name: str | None = typer.Option(None, "--name", help="[--train] run name (default: task-cell-design-sSEED)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the design as JSON to this file"),
) -> None:
    """Predict the SG (shape, dampening γ, sharpness s, tail q) and the recurrent init of a LIF/ALIF network from
    the stability Conditions I-IV (paper B, arXiv:2202.00282), print them, and optionally train with them.

    Example: stablernn snn-design --task digits --cell alif --layers 2 --width 64 --train --epochs 20
    """
    conds = tuple(c.strip() for c in conditions.split(",") if c.strip())
    (data_cfg, model_cfg, model, info), designs, stats = design_for_task(
        task, cell, layers, width, tau=tau, threshold=threshold, reset=reset, shape=shape, conditions=conds,
        rate=rate, seed=seed, on_no_root=fallback)
    typer.echo(f"task {task}: first-layer input mean {stats.mean:.4g}, variance {stats.var:.4g}; "
               f"{cell} {layers}x{width}, tau {tau:g}, threshold {threshold:g}, reset {reset}")
    for l, d in enumerate(designs):
        if d is None:
            continue
        typer.echo(f"\nlayer {l}: " + d.summary().replace("\n", "\n  "))
    summary = {"task": task, "cell": cell, "layers": layers, "width": width, "tau": tau, "threshold": threshold,
               "reset": reset, "input_mean": stats.mean, "input_var": stats.var,
               "layers_design": [d.to_dict() if d is not None else None for d in designs]}
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(summary, indent=2))
        typer.echo(f"\nwrote {json_out}")
    if train:
        result = train_designed(model, designs, data_cfg, model_cfg, info, epochs=epochs, lr=lr, seed=seed,
                                init_rate=init_rate, final_rate=final_rate, rate_ramp=rate_ramp, out_dir=out_dir,
                                name=name or f"{task}-{cell}-design-s{seed}")
        from .train import print_result

        print_result(result)


def train_designed(model, designs, data_cfg, model_cfg, info, *, epochs: int, lr: float, seed: int,
                   init_rate: float | None, final_rate: float | None, rate_ramp: str, out_dir: str,
                   name: str, progress: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Write the designed weights and SG into the model, save them as the run's starting point (``init_from``),
    and train through ``fit``. The SG shape and tail go into the model config; per-neuron γ/s travel in the
    weights file."""
    import dataclasses

    from ..snn.design import apply_design_
    from ..snn.rates import parse_ramp
    from ..train import fit
    from ..train.config import RunConfig, TrainConfig

    apply_design_(model, designs)
    first = next(d for d in designs if d is not None)
    model_cfg = dataclasses.replace(model_cfg, surrogate=first.shape, tail=first.tail)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    init_path = out / f"{name}.design_init.pt"
    atomic_torch_save(model.state_dict(), init_path)
    run = RunConfig(name=name, out_dir=out_dir, model=model_cfg, data=data_cfg,
                    train=TrainConfig(epochs=epochs, lr=lr, seed=seed, init_from=str(init_path),
                                      init_rate=init_rate, final_rate=final_rate, rate_ramp=parse_ramp(rate_ramp),
                                      progress=progress, threads=threads))
    return fit(run)


__all__ = ["design_for_task", "sg_figure", "train_designed"]
