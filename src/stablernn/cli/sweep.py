"""``stablernn sweep SPEC.toml`` (a grid of runs: serial, local processes or Ray) and ``stablernn report DIR``
(tables and figures from run directories)."""
from __future__ import annotations

import os
import shlex
import sys
import typing
from pathlib import Path
from typing import Literal

import typer

from .app import app
from .options import choice_option

FigureFormat = Literal["png", "svg"]


@app.command()
def sweep(
    spec: Path = typer.Argument(..., help="sweep spec (TOML or JSON): [base.*] run config, [grid] axes "
                                "(\"section.field\" = [values]), [[zip]] groups, seeds, out_dir; see "
                                "experiments/*.toml"),
    workers: int = typer.Option(1, "--workers", "-j", help="local worker processes (spawn, 1 torch thread each); "
                                "1 = serial in this process"),
    ray: bool = typer.Option(False, "--ray", help="run each run as a Ray task with the spec's [resources] "
                             "(automatic when RAY_ADDRESS is set); needs pip install 'stablernn[ray]'"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster to join (default: "
                                           "$RAY_ADDRESS, else a local Ray is started)"),
    ray_cpus: int | None = typer.Option(None, "--ray-cpus", help="CPUs of a local Ray started here (default: "
                                        "all)"),
    out_dir: str | None = typer.Option(None, "--out-dir", help="write the runs here instead of the spec's "
                                       "out_dir"),
    seeds: str | None = typer.Option(None, "--seeds", help="comma-separated seeds replacing the spec's, e.g. "
                                     "0,1,2"),
    set_: list[str] = typer.Option([], "--set", help="override a base value: section.field=value (repeatable), "
                                   "e.g. --set train.epochs=1 --set model.width=16"),
    only: str | None = typer.Option(None, "--only", help="train only runs whose name matches this regex"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="retrain runs recorded as failed (default: "
                                      "keep their failure)"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads per run (default: 1 with --workers "
                                       "or --ray, torch's default when serial)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the runs with their status and exit"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="summary progress bar"),
    report: bool = typer.Option(False, "--report", help="write the report (stablernn report OUT_DIR) at the end"),
) -> None:
    """Train every run of a sweep spec not yet done; finished runs are skipped, interrupted runs resume from their
    checkpoint, failed runs are recorded (status.json, traceback.txt) without stopping the sweep.

    Example: stablernn sweep experiments/sg_lr_quick.toml --workers 2 && stablernn report runs/sg_lr_quick
    """
    from ..sweep.runner import describe_runs, plan, run_sweep
    from ..sweep.spec import load_spec

    seed_list = _parse_seeds(seeds) if seeds else None
    sp = load_spec(spec, out_dir=out_dir, seeds=seed_list, overrides=set_)
    if dry_run:
        runs, todo, _ = plan(sp, retry_failed=retry_failed, only=only)
        typer.echo(describe_runs(runs))
        typer.echo(f"\n{len(runs)} runs in {sp.out_dir}; {len(todo)} to train")
        return
    use_ray = ray or bool(ray_address) or bool(os.environ.get("RAY_ADDRESS"))
    result = run_sweep(sp, workers=workers, use_ray=use_ray, ray_address=ray_address,
                       ray_init={"num_cpus": ray_cpus} if ray_cpus else None, threads=threads,
                       retry_failed=retry_failed, only=only, progress=progress)
    typer.echo(result.summary())
    failed = [n for n, s in result.statuses.items() if s == "failed"]
    if failed:
        typer.echo(f"failed runs ({len(failed)}), see <run>/status.json and traceback.txt: "
                   + ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""))
    if report:
        from ..sweep.report import write_report

        rep = write_report(sp.out_dir, command=_command_line())
        typer.echo(f"report written to {rep.markdown}")
    else:
        typer.echo(f"tables and figures: stablernn report {sp.out_dir}")


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers like 0,1,2, got {text!r}") from None


def _command_line() -> str:
    return "stablernn " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a sweep's out_dir (one folder per run, sweep.json if written by "
                                   "stablernn sweep) or any folder of run directories"),
    out: Path | None = typer.Option(None, "--out", help="where report.md, runs.csv, summary.csv and the figures "
                                    "go (default: RUN_DIR/report)"),
    metric: str | None = typer.Option(None, "--metric", help="metric of the figures (default: the spec's "
                                      "[report] metric, else test_acc, or test_ppl for language models)"),
    prefix: str = typer.Option("", "--prefix", help="prefix of every figure file name, e.g. results_lsc_"),
    fmt: str = choice_option("png", "--format", FigureFormat, "figure format"),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="draw figures (else tables only)"),
    spec: Path | None = typer.Option(None, "--spec", help="take the [report] table (figures, metric, pivot) from "
                                     "this sweep spec instead of the one stored in RUN_DIR/sweep.json"),
) -> None:
    """Tables (mean ± sd over seeds per configuration; markdown and CSV) and figures from run directories: metric
    vs a swept value per SG shape (with the stability prediction dashed), LSC vs baseline bars, radii before and
    after LSC. Figures follow the sweep spec's [report] table, or a default chosen from the varied keys.

    Example: stablernn report runs/lsc_quick --out docs/figures --prefix results_lsc_
    """
    from ..sweep.report import write_report

    if fmt not in typing.get_args(FigureFormat):
        raise ValueError(f"--format must be one of {', '.join(typing.get_args(FigureFormat))}, got {fmt!r}")
    options = None
    if spec is not None:
        from ..sweep.spec import load_spec

        options = load_spec(spec).report
    rep = write_report(run_dir, out, metric=metric, prefix=prefix, fmt=fmt, make_figures=figures,
                       command=_command_line(), options=options)
    typer.echo(rep.text)
    typer.echo(f"written: {rep.markdown}, {rep.runs_csv}, {rep.summary_csv}"
               + "".join(f", {p}" for p in rep.figures))
