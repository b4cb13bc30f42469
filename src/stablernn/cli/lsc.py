"""``stablernn pretrain`` (LSC pre-training, weights saved for ``train --init-from``) and ``stablernn diagnose``
(radii per transition family and layer, the gradient-norm grid over depth x time, firing rates)."""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any

import typer

from ..data.config import DataConfig
from ..lsc.config import LSCConfig
from ..models import ModelConfig
from ..train.config import RunConfig, TrainConfig, load_config_file
from .app import app
from .options import option_specs, section_from, with_options

SECTIONS = {"model": ModelConfig, "data": DataConfig, "lsc": LSCConfig}
PRETRAIN_SPECS = option_specs(SECTIONS, owners={"seed": "lsc", "batch_size": "data"})
DIAGNOSE_SPECS = option_specs({"model": ModelConfig, "data": DataConfig}, owners={"seed": "data"})


def _param(name: str, annotation: Any, option: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=option)


_OPT_PATH = typing.Optional[Path]  # noqa: UP045
_PRETRAIN_EXTRA = [
    _param("out", Path, typer.Option(..., "--out", help="output directory: pretrained.pt (a state dict), "
                                     "lsc_report.json, config.json (a run config that trains from the weights), "
                                     "lsc_config.json")),
    _param("config", _OPT_PATH, typer.Option(None, "--config", help="TOML/JSON run config whose [model], [data] "
                                             "and [lsc] tables are the starting point; options override it")),
]
# --- bring your own model (docs/your-model.md): --model module.path:factory -------------------------------------
_OPT_STR = typing.Optional[str]  # noqa: UP045
_USER_MODEL = _param("user_model", _OPT_STR, typer.Option(
    None, "--model", help="your own model: module.path:factory, a function returning an nn.Module (torch.nn RNNs, "
    "snnTorch, Norse; docs/your-model.md); the model options are then ignored"))
_PRETRAIN_EXTRA.append(_USER_MODEL)


def _user_view(spec: str, info: Any) -> tuple[Any, Any]:
    """The user's module from ``spec`` and its stablernn view; the view's input width must be the task's."""
    from ..adapters import adapt
    from ..adapters.factory import load_factory_model

    user = load_factory_model(spec)
    view = adapt(user)
    if view.input_size != info.input_size:
        raise ValueError(f"--model {spec}: the model takes {view.input_size} features per step but the task gives "
                         f"{info.input_size}; build it for the task's input size")
    return user, view


def _pretrain_user_model(spec: str, data_cfg: DataConfig, lsc_cfg: LSCConfig, out: Path) -> None:
    """``pretrain --model``: LSC on the view, the *user's* state dict to OUT/pretrained.pt (plus the leak constants
    outside it, e.g. Norse's ``p.tau_mem_inv``, to OUT/leak_constants.pt)."""
    import torch

    from ..adapters import leak_constants
    from ..data import load_task
    from ..io import atomic_torch_save, atomic_write_json
    from ..lsc.pretrain import lsc_pretrain

    data = load_task(data_cfg)
    torch.manual_seed(lsc_cfg.seed)
    user, view = _user_view(spec, data.info)
    report = lsc_pretrain(view, data.train, lsc_cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(user.state_dict(), out / "pretrained.pt")
    extra = leak_constants(view)
    if extra:
        atomic_torch_save(extra, out / "leak_constants.pt")
    report.save(out / "lsc_report.json")
    atomic_write_json(out / "lsc_config.json", dataclasses.asdict(lsc_cfg))
    atomic_write_json(out / "model.json", {"factory": spec, "library": view.library, "layers": len(view.cells),
                                           "leak_constants": sorted(extra)})
    typer.echo(report.table())
    typer.echo(f"your model's state dict written to {out / 'pretrained.pt'} (load it with "
               f"{spec.split(':')[1]}().load_state_dict(torch.load(...)))"
               + (f"; leak constants outside it to {out / 'leak_constants.pt'}" if extra else ""))


def _sections(specs: list[Any], values: dict[str, Any], config: Path | None) -> dict[str, Any]:
    base = load_config_file(config).to_dict() if config else RunConfig().to_dict()
    out = {}
    for section, cls in SECTIONS.items():
        if not any(s.section == section for s in specs):
            continue
        start = base.get(section) or {}
        out[section] = section_from(specs, values, section, cls, start)
    return out


def _build(model_cfg: ModelConfig, data_cfg: DataConfig, seed: int) -> tuple[Any, Any]:
    import torch

    from ..data import load_task
    from ..models import build_model

    data = load_task(data_cfg)
    info = data.info
    torch.manual_seed(seed)
    model = build_model(model_cfg, info, seed=seed)
    return model, data


@app.command()
@with_options(PRETRAIN_SPECS, _PRETRAIN_EXTRA)
def pretrain(**values: Any) -> None:
    """LSC pre-training: bring every one-step transition Jacobian (time, depth, encoder, decoder) of a fresh network
    to a target radius, then save the weights.

    Writes OUT/pretrained.pt (load with `stablernn train --init-from OUT/pretrained.pt`, or train directly with
    `stablernn train --config OUT/config.json`), OUT/lsc_report.json (radii before/after per family and layer) and
    OUT/lsc_config.json. --seed seeds both the network's initialisation and LSC.

    Example: stablernn pretrain --task digits --cell gru --layers 5 --width 64 --target 0.5 --out runs/lsc-gru
    """
    from ..io import atomic_torch_save, atomic_write_json
    from ..lsc.pretrain import lsc_pretrain

    sec = _sections(PRETRAIN_SPECS, values, values.get("config"))
    model_cfg, data_cfg, lsc_cfg = sec["model"], sec["data"], sec["lsc"]
    out = Path(values["out"])
    if values.get("user_model"):
        return _pretrain_user_model(values["user_model"], data_cfg, lsc_cfg, out)
    model, data = _build(model_cfg, data_cfg, lsc_cfg.seed)
    report = lsc_pretrain(model, data.train, lsc_cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(model.state_dict(), out / "pretrained.pt")
    report.save(out / "lsc_report.json")
    run = RunConfig(name=f"{data_cfg.task}-{model_cfg.cell}-{model_cfg.layers}x{model_cfg.width}-lsc",
                    model=model_cfg, data=data_cfg,
                    train=TrainConfig(seed=lsc_cfg.seed, init_from=str((out / "pretrained.pt").resolve())))
    atomic_write_json(out / "config.json", run.to_dict())
    atomic_write_json(out / "lsc_config.json", dataclasses.asdict(lsc_cfg))
    typer.echo(report.table())
    typer.echo(f"weights written to {out / 'pretrained.pt'}; report to {out / 'lsc_report.json'}")


_DIAGNOSE_EXTRA = [
    _param("out", Path, typer.Option(Path("diagnostics"), "--out", help="where the figures and diagnostics.json "
                                     "are written")),
    _param("config", _OPT_PATH, typer.Option(None, "--config", help="TOML/JSON run config ([model], [data]); a run "
                                             "directory's config.json works")),
    _param("run", _OPT_PATH, typer.Option(None, "--run", help="a run directory from `stablernn train`: diagnose "
                                          "exactly the network it trained (load_run: config, conditions, weights); "
                                          "model and data options are then taken from the run")),
    _param("weights", _OPT_PATH, typer.Option(None, "--weights", help="weights to load (pretrained.pt, best.pt, "
                                              "checkpoint.pt); default: a fresh initialisation")),
    _param("before_after_lsc", bool, typer.Option(False, "--before-after-lsc", help="also run LSC pre-training "
                                                  "(target --target) and show both")),
    _param("target", str, typer.Option("auto", "--target", help="LSC target for --before-after-lsc: a number, auto "
                                       "or unbalanced")),
    _param("lsc_steps", int, typer.Option(400, "--lsc-steps", help="LSC step budget for --before-after-lsc")),
    _param("steps", typing.Optional[int], typer.Option(16, "--steps", help="time steps at which radii are "  # noqa: UP045
                                                       "measured (evenly spread)")),
    _param("samples", int, typer.Option(16, "--samples", help="examples of the first training batch used")),
    _USER_MODEL,
]


@app.command()
@with_options(DIAGNOSE_SPECS, _DIAGNOSE_EXTRA)
def diagnose(**values: Any) -> None:
    """Why a network is (un)stable: per-transition radii per family and layer (mean over time, and over time in
    OUT/radii.png), the measured gradient-norm grid |dL/ds[t, l]| over depth x time for a batch (heat-map
    OUT/gradient_grid.png), and firing rates of spiking layers; everything also in OUT/diagnostics.json.

    Example: stablernn diagnose --task digits --layout pixels --cell gru --layers 5 --width 64 --before-after-lsc
    """
    from ..diagnostics import plot_gradient_grid, plot_radii_over_time
    from ..io import atomic_write_json, load_state_dict_from

    base = load_config_file(values["config"]).to_dict() if values.get("config") else RunConfig().to_dict()
    model_cfg = section_from(DIAGNOSE_SPECS, values, "model", ModelConfig, base.get("model") or {})
    data_cfg = section_from(DIAGNOSE_SPECS, values, "data", DataConfig, base.get("data") or {})
    if values["samples"] < 1:
        raise ValueError(f"--samples must be >= 1, got {values['samples']}")
    if values.get("user_model"):  # --model: the view of the user's module (weights load into the user's module)
        from ..data import load_task

        data = load_task(data_cfg)
        user, model = _user_view(values["user_model"], data.info)
        if values.get("weights"):
            user.load_state_dict(load_state_dict_from(values["weights"]))
    elif values.get("run"):  # --run: exactly the network a run trained
        from ..data import load_task
        from ..train.runs import load_run

        loaded = load_run(values["run"])
        model, model_cfg, data_cfg = loaded.model, loaded.config.model, loaded.config.data
        data = load_task(data_cfg)
    else:
        model, data = _build(model_cfg, data_cfg, data_cfg.seed)
        if values.get("weights"):
            model.load_state_dict(load_state_dict_from(values["weights"]))
    x, y = next(iter(data.train))
    x, y = x[: values["samples"]], y[: values["samples"]]
    out = Path(values["out"])
    results = {"before": _diagnose_one(model, x, y, values["steps"])}
    report = None
    if values["before_after_lsc"]:
        from ..lsc.pretrain import lsc_pretrain

        target: Any = values["target"]
        with contextlib.suppress(ValueError):
            target = float(target)
        report = lsc_pretrain(model, data.train, LSCConfig(target=target, max_steps=values["lsc_steps"]))
        results["after_lsc"] = _diagnose_one(model, x, y, values["steps"])
    loaded_weights = values.get("weights") or values.get("run")
    names = {"before": "initial" if not loaded_weights else "loaded", "after_lsc": "after LSC"}
    for key, res in results.items():
        typer.echo(f"== {names[key]} weights: loss {res['grid'].loss:.4f}")
        typer.echo(radii_table(res["trace"].mean()))
        rates = res["rates"]
        if any(r is not None for r in rates):
            typer.echo("firing rates per layer: " + ", ".join("-" if r is None else f"{r:.3f}" for r in rates))
        if res["dynamics"] is not None:
            typer.echo(f"dynamics: top Lyapunov exponent {res['dynamics']['top_lyapunov']:.3f}, memory capacity "
                       f"{res['dynamics']['mc']:.2f} (lags 1..30)")
    grids = {names[k]: r["grid"] for k, r in results.items()}
    plot_gradient_grid(grids, out / "gradient_grid.png")
    plot_radii_over_time(results["before"]["trace"], out / "radii.png",
                         targets=report.target if report is not None else None)
    if "after_lsc" in results:
        plot_radii_over_time(results["after_lsc"]["trace"], out / "radii_after_lsc.png", targets=report.target)
    payload = {k: {"radii_mean": r["trace"].mean(), "radii_times": r["trace"].times,
                   "radii": {f: v.tolist() for f, v in r["trace"].radii.items()},
                   "gradient_grid": r["grid"].norms.tolist(), "grid_node": r["grid"].node, "loss": r["grid"].loss,
                   "firing_rates": r["rates"], "dynamics": r["dynamics"]} for k, r in results.items()}
    if report is not None:
        payload["lsc_report"] = report.to_json()
    payload["model"], payload["data"] = dataclasses.asdict(model_cfg), dataclasses.asdict(data_cfg)
    atomic_write_json(out / "diagnostics.json", payload)
    typer.echo(f"figures and diagnostics.json written to {out}/")


def _diagnose_one(model: Any, x: Any, y: Any, steps: int | None) -> dict[str, Any]:
    from ..diagnostics import firing_rates, gradient_grid
    from ..lsc.radii import radii_over_time
    from ..lsc.transitions import is_ffn

    trace = radii_over_time(model, x, steps=steps, rectangular="norm")
    grid = gradient_grid(model, x, y)
    rates = [] if is_ffn(model) else firing_rates(model, x)
    return {"trace": trace, "grid": grid, "rates": rates, "dynamics": None if is_ffn(model) else _dynamics(model, x)}


def _dynamics(model: Any, x: Any) -> dict[str, float] | None:
    """Top Lyapunov exponent (on the batch's inputs) and linear memory capacity (uniform drive), kept small so
    diagnose stays quick; ``stablernn dynamics`` measures the full profile. None where they do not apply (token
    inputs)."""
    from ..dynamics.memory import DynamicsConfig, dynamics_profile

    try:
        prof = dynamics_profile(model, x, DynamicsConfig(lyapunov=1, memory=30, ipc_degree=0, draws=0,
                                                         n_steps=1000, streams=4)).summary()
    except ValueError:
        return None
    return {"top_lyapunov": prof["top_lyapunov"], "mc": prof["mc"]}


def radii_table(means: dict[str, list[float]]) -> str:
    """One line per family: mean radius and the per-layer values."""
    lines = [f"{'family':<8} {'mean':>6}  per layer"]
    for fam, vals in means.items():
        finite = [v for v in vals if v == v]
        mean = sum(finite) / len(finite) if finite else float("nan")
        lines.append(f"{fam:<8} {mean:>6.3f}  [" + " ".join(f"{v:.3f}" for v in vals) + "]")
    return "\n".join(lines)


__all__ = ["diagnose", "pretrain", "radii_table"]
