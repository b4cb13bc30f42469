"""Reports: reading run directories, mean ± sd over seeds against hand-computed values, markdown/CSV, figures,
stability predictions."""
from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import torch

from stablernn.data import DataConfig, load_task
from stablernn.lsc.config import LSCConfig
from stablernn.models import ModelConfig
from stablernn.sweep import aggregate, load_sweep, markdown_table, mean_sd, predict, write_report
from stablernn.sweep.report import (
    auto_figures,
    combine_keys,
    format_mean_sd,
    infer_axes,
    pivot_table,
    plot_bars,
    plot_lines,
    plot_radii,
    predict_with_status,
    radii_rows,
    resolve_predictions,
    to_csv,
)
from stablernn.train import RunConfig, TrainConfig

torch.set_num_threads(1)

# test accuracies by (cell, lr) and seed: hand-chosen so means and sds are easy to check
ACC = {("gru", 0.01): [0.80, 0.84, 0.90], ("gru", 0.001): [0.50, 0.60, 0.55],
       ("lstm", 0.01): [0.70, 0.72, 0.71], ("lstm", 0.001): [0.40, 0.44, 0.48]}


def fake_run(root: Path, name: str, run: RunConfig, final: dict | None, status: str = "done", error: str | None = None,
             lsc: dict | None = None) -> None:
    d = root / name
    d.mkdir(parents=True)
    run.name, run.out_dir = name, str(root)
    (d / "config.json").write_text(json.dumps(run.to_dict()))
    if final is not None:
        (d / "final.json").write_text(json.dumps({"name": name, **final}))
    (d / "status.json").write_text(json.dumps({"status": status, "error": error}))
    if lsc is not None:
        (d / "lsc_report.json").write_text(json.dumps(lsc))


@pytest.fixture
def fake_sweep(tmp_path) -> Path:
    """12 finished runs (2 cells x 2 lrs x 3 seeds) plus one failed extra seed, without a sweep.json."""
    for (cell, lr), accs in ACC.items():
        for seed, acc in enumerate(accs):
            run = RunConfig(model=ModelConfig(cell=cell, width=8), train=TrainConfig(lr=lr, seed=seed))
            fake_run(tmp_path, f"{cell}-{lr}-{seed}", run, {"test_acc": acc, "test_loss": 1 - acc, "epochs": 3})
    run = RunConfig(model=ModelConfig(cell="gru", width=8), train=TrainConfig(lr=0.01, seed=3))
    fake_run(tmp_path, "gru-0.01-3", run, None, status="failed", error="NonFiniteError: non-finite loss\nmore")
    return tmp_path


def test_load_sweep_infers_the_varied_keys_without_an_index(fake_sweep):
    table = load_sweep(fake_sweep)
    assert table.axes == ["model.cell", "train.lr"]
    assert len(table.rows) == 13 and len(table.done()) == 12
    failed = next(r for r in table.rows if r["status"] == "failed")
    assert failed["error"].startswith("NonFiniteError") and failed["seed"] == 3
    row = next(r for r in table.rows if r["name"] == "lstm-0.001-2")
    assert row["model.cell"] == "lstm" and row["train.lr"] == 0.001 and row["test_acc"] == 0.48


def test_aggregates_equal_hand_computed_means_and_sds(fake_sweep):
    table = load_sweep(fake_sweep)
    groups = aggregate(table.rows, ["model.cell", "train.lr"], ["test_acc", "test_loss"])
    assert len(groups) == 4
    for g in groups:
        accs = ACC[(g["model.cell"], g["train.lr"])]
        assert g["test_acc_mean"] == pytest.approx(sum(accs) / 3, abs=1e-12)
        assert g["test_acc_sd"] == pytest.approx(math.sqrt(sum((a - sum(accs) / 3) ** 2 for a in accs) / 2),
                                                 abs=1e-12)
        assert g["test_loss_mean"] == pytest.approx(1 - sum(accs) / 3, abs=1e-12)
        assert g["n"] == 3
    gru = next(g for g in groups if g["model.cell"] == "gru" and g["train.lr"] == 0.01)
    assert gru["n_failed"] == 1 and gru["n_runs"] == 4  # the failed seed is counted, not averaged


def test_mean_sd_edge_cases():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    m, sd, n = mean_sd([0.5])
    assert m == 0.5 and math.isnan(sd) and n == 1
    m, sd, n = mean_sd([float("nan"), None])
    assert math.isnan(m) and n == 0
    assert mean_sd([2.0, float("inf"), 4.0])[0] == 3.0  # non-finite values are not averaged


def test_markdown_and_csv(fake_sweep, tmp_path):
    table = load_sweep(fake_sweep)
    groups = aggregate(table.rows, table.axes, ["test_acc", "test_loss"])
    md = markdown_table(groups, table.axes, ["test_acc", "test_loss"])
    lines = md.splitlines()
    assert lines[0] == "| network | learning rate | n (failed) | test accuracy (%) | test loss |"
    assert len(lines) == 6 and "| gru | 0.01 | 3 (1) | 84.7 ± 5.0 | 0.153 ± 0.050 |" in lines
    assert format_mean_sd(float("nan"), float("nan"), "test_acc") == "–"
    assert format_mean_sd(105.26, float("nan"), "test_ppl") == "105.3"
    text = to_csv([{"a": 1, "b": None}, {"a": "x,y"}], ["a", "b"])
    assert list(csv.reader(text.splitlines())) == [["a", "b"], ["1", ""], ["x,y", ""]]


def test_pivot_table(fake_sweep):
    table = load_sweep(fake_sweep)
    groups = aggregate(table.rows, table.axes, ["test_acc"])
    lines = pivot_table(groups, table.axes, "train.lr", "test_acc").splitlines()
    assert lines[0] == "test accuracy (%), mean ± sd over seeds; columns: learning rate"
    assert lines[2] == "| network | 0.001 | 0.01 |"
    assert lines[4] == "| gru | 55.0 ± 5.0 | 84.7 ± 5.0 (3/4 ran) |"
    assert lines[5] == "| lstm | 44.0 ± 4.0 | 71.0 ± 1.0 |"
    with pytest.raises(ValueError, match="pivot key"):
        pivot_table(groups, table.axes, "model.width", "test_acc")


def test_write_report_outputs(fake_sweep, tmp_path):
    rep = write_report(fake_sweep, tmp_path / "out", prefix="results_t_")
    assert rep.markdown.read_text() == rep.text
    assert "## Failed runs" in rep.text and "| gru-0.01-3 | NonFiniteError: non-finite loss |" in rep.text
    summary = list(csv.DictReader(rep.summary_csv.open()))
    lstm = next(r for r in summary if r["model.cell"] == "lstm" and r["train.lr"] == "0.001")
    assert float(lstm["test_acc_mean"]) == pytest.approx(statistics.fmean(ACC[("lstm", 0.001)]))
    runs = list(csv.DictReader(rep.runs_csv.open()))
    assert len(runs) == 13 and {r["status"] for r in runs} == {"done", "failed"}
    # default figure: accuracy vs lr (log x), one line per cell
    assert [p.name for p in rep.figures] == ["results_t_lines_lr_cell.png"]
    img = mpimg.imread(rep.figures[0])
    assert img.shape[0] > 200 and img.shape[1] > 300
    assert "![results_t_lines_lr_cell](results_t_lines_lr_cell.png)" in rep.text


def test_figure_options_are_checked(fake_sweep, tmp_path):
    with pytest.raises(ValueError, match="must be one of the sweep's varied keys"):
        write_report(fake_sweep, tmp_path, figures=[{"kind": "lines", "x": "train.epochs"}])
    with pytest.raises(ValueError, match="unknown figure kind"):
        write_report(fake_sweep, tmp_path, figures=[{"kind": "pie", "x": "train.lr"}])
    with pytest.raises(ValueError, match="unknown figure option"):
        write_report(fake_sweep, tmp_path, figures=[{"kind": "lines", "x": "train.lr", "colour": "red"}])
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "empty", tmp_path)


def test_plots_draw_failures_predictions_and_bars(fake_sweep, tmp_path):
    table = load_sweep(fake_sweep)
    rows = [*table.rows, {"name": "x", "status": "failed", "seed": 0, "model.cell": "gru", "train.lr": 1.0}]
    preds = resolve_predictions(table, {"value": 0.003, "label": "predicted lr"}, [], "model.cell")
    assert preds == {(None,): (0.003, "predicted lr")}
    p = plot_lines(rows, tmp_path / "l.png", x="train.lr", metric="test_acc", hue="model.cell", logx=True,
                   predictions=preds)
    b = plot_bars(rows, tmp_path / "b.svg", x="model.cell", hue="train.lr", metric="test_acc")
    assert p.stat().st_size > 10_000 and b.read_text().startswith("<?xml")
    assert "every seed failed" in b.read_text()  # the all-failed configuration is marked, not dropped


def test_bars_legend_names_a_hue_missing_at_the_first_x(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    rows = [{"name": f"r{i}", "status": "done", "seed": 0, "cond": c, "fb": f, "test_acc": 0.5 + 0.1 * i}
            for i, (c, f) in enumerate([("none", "clip"), ("IV", "clip"), ("IV", "match")])]
    b = plot_bars(rows, tmp_path / "b.svg", x="cond", hue="fb", metric="test_acc")
    text = b.read_text()
    assert "clip" in text and "match" in text  # "match" has no bar at the first x value ("none")


def test_lsc_rows_infer_none_and_radii(tmp_path):
    for seed in (0, 1):
        for target in (None, 0.5):
            run = RunConfig(model=ModelConfig(cell="gru", width=8), train=TrainConfig(seed=seed),
                            lsc=LSCConfig(target=target) if target else None)
            rep = None if target is None else {
                "target": {"time": 0.5, "depth": 0.5}, "before": {"time": [0.9, 0.7], "depth": [0.3]},
                "after": {"time": [0.5 + seed * 0.1, 0.5], "depth": [0.45]}, "steps": 10, "seconds": 1.0,
                "stop_reason": "x"}
            fake_run(tmp_path, f"r{seed}{target}", run, {"test_acc": 0.5}, lsc=rep)
    configs = [json.loads(p.read_text()) for p in tmp_path.glob("*/config.json")]
    assert infer_axes(configs) == ["lsc.target"]
    table = load_sweep(tmp_path)
    assert sorted(str(r["lsc.target"]) for r in table.rows) == ["0.5", "0.5", "none", "none"]
    rr = {r["family"]: r for r in radii_rows(table, ["lsc.target"])}
    assert rr["time"]["before"] == pytest.approx(0.8) and rr["time"]["after"] == pytest.approx(0.525)
    assert rr["time"]["after_sd"] == pytest.approx(statistics.stdev([0.55, 0.5]))
    assert rr["depth"]["target"] == 0.5 and rr["depth"]["n"] == 2
    assert [f["kind"] for f in auto_figures(table)] == ["bars", "radii"]
    assert plot_radii(table, tmp_path / "r.png").exists()


def test_predict_condition_iii_matches_the_design_of_the_same_network(tmp_path):
    from stablernn.snn.conditions import TaskStats
    from stablernn.snn.design import DesignConfig, design_model
    from stablernn.train.loop import build_for_task

    run = RunConfig(model=ModelConfig(cell="lif", width=12, layers=1), data=DataConfig(task="digits"),
                    train=TrainConfig(seed=4))
    got = predict(run.to_dict(), "III")
    torch.manual_seed(4)
    data = load_task(run.data)
    model = build_for_task(run, data.info)
    xs = [x for _, (x, _) in zip(range(4), data.train, strict=False)]
    design = design_model(model, TaskStats.from_batches(xs), DesignConfig(conditions=("III",)), seed=4)[0]
    assert got == pytest.approx(float(design.dampening.mean()), rel=1e-6)
    assert math.isfinite(got) and got > 0
    with pytest.raises(ValueError, match="unknown prediction"):
        predict(run.to_dict(), "V")
    value, solved = predict_with_status(run.to_dict(), "IV")
    assert solved or value in (pytest.approx(0.1), pytest.approx(10.0))  # unsolved -> a search bound


def test_computed_predictions_collapse_when_the_hue_does_not_change_the_network(tmp_path):
    for shape in ("exponential", "gaussian"):
        for width in (6, 10):
            for damp in (0.5, 1.0):
                run = RunConfig(model=ModelConfig(cell="lif", layers=1, width=width, surrogate=shape, dampening=damp),
                                data=DataConfig(task="digits"))
                fake_run(tmp_path, f"{shape}-{width}-{damp}", run, {"test_acc": 0.5})
    table = load_sweep(tmp_path)
    assert table.axes == ["model.width", "model.surrogate", "model.dampening"]
    preds = resolve_predictions(table, {"compute": "III"}, ["model.width"], "model.surrogate", "model.dampening")
    # Condition III does not read the SG shape: one line per panel; the width changes the network: two panels
    assert set(preds) == {(6, None), (10, None)}
    assert preds[(6, None)][0] != preds[(10, None)][0]
    assert preds[(6, None)][0] == pytest.approx(predict(table.configs["gaussian-6-1.0"], "III"))
    assert preds[(6, None)][1].startswith("predicted (Condition III) = ")


def test_combined_hue_and_unnamed_axes_become_panels(fake_sweep, tmp_path, monkeypatch):
    import stablernn.sweep.report as report

    rows, key = combine_keys([{"a": 1, "b": None}, {"a": 2.5, "b": "x"}], ["a", "b"])
    assert key == "a & b" and [r[key] for r in rows] == ["1 / none", "2.5 / x"]
    assert combine_keys(rows, ["a"])[1] == "a" and combine_keys(rows, [])[1] is None
    assert report.label("model.init & lsc.target") == "init / LSC target"
    seen = {}

    def fake_plot(rows, path, **kw):
        seen.update(kw)
        return Path(path)

    monkeypatch.setattr(report, "plot_lines", fake_plot)
    # the figure names only x: the cell axis must become panels instead of being averaged over
    write_report(fake_sweep, tmp_path, figures=[{"kind": "lines", "x": "train.lr"}])
    assert seen["facet"] == ["model.cell"] and seen["hue"] is None
    write_report(fake_sweep, tmp_path, figures=[{"kind": "lines", "x": "train.lr", "hue": ["model.cell"]}])
    assert seen["facet"] == [] and seen["hue"] == "model.cell"

