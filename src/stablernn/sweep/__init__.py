"""Grids of runs (locally, in worker processes or on a Ray cluster) and reports with tables and figures."""
from .report import (
    SweepTable,
    aggregate,
    load_sweep,
    markdown_table,
    mean_sd,
    plot_bars,
    plot_lines,
    plot_radii,
    predict,
    write_report,
)
from .runner import SweepResult, execute_run, plan, run_status, run_sweep
from .spec import SweepRun, SweepSpec, expand, load_spec, parse_spec

__all__ = [
    "SweepResult",
    "SweepRun",
    "SweepSpec",
    "SweepTable",
    "aggregate",
    "execute_run",
    "expand",
    "load_spec",
    "load_sweep",
    "markdown_table",
    "mean_sd",
    "parse_spec",
    "plan",
    "plot_bars",
    "plot_lines",
    "plot_radii",
    "predict",
    "run_status",
    "run_sweep",
    "write_report",
]
