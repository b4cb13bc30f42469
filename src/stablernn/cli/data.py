"""``stablernn data list`` and ``stablernn data check TASK``."""
from __future__ import annotations

import inspect
from typing import Any

import typer

from ..data.config import DataConfig
from .app import app
from .options import option_specs, section_from, with_options

data_app = typer.Typer(help="Which tasks can be loaded here, and what a task's data looks like.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

DATA_SPECS = option_specs({"data": DataConfig}, skip={"data.task"})


@data_app.command("list")
@with_options(DATA_SPECS, [])
def list_tasks(**values: Any) -> None:
    """Every task, and whether its data is available on this machine (and if not, why and how to fix it)."""
    from ..data import availability, describe

    cfg = section_from(DATA_SPECS, values, "data", DataConfig)
    for name, reason in availability(cfg).items():
        status = "available" if reason is None else f"unavailable: {reason}"
        typer.echo(f"{name:16s} {describe(name)}\n{'':16s} {status}")


@data_app.command("check")
@with_options(DATA_SPECS, [inspect.Parameter("task", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                                             default=typer.Argument(..., help="task name (stablernn data list)"))])
def check(**values: Any) -> None:
    """Load TASK and print its shapes, counts, class balance and input statistics (spike rate for spike data)."""
    from ..data import check_task

    cfg = section_from(DATA_SPECS, values, "data", DataConfig, {"task": values["task"]})
    for key, value in check_task(cfg).items():
        typer.echo(f"{key:14s} {value:.4g}" if isinstance(value, float) else f"{key:14s} {value}")
