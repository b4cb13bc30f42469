"""Help texts and choices of the command line, and the configs' construction-time validation."""
from __future__ import annotations

import dataclasses
import typing

import pytest
import typer
from typer.testing import CliRunner

import stablernn
from stablernn.cells.rnn import ACTIVATIONS
from stablernn.cells.spiking import RESETS
from stablernn.cli import app
from stablernn.cli.options import choices_metavar, option_specs, parse_value
from stablernn.cli.train import TRAIN_SPECS, run_config_from_cli
from stablernn.data import DataConfig, DataError
from stablernn.dynamics.memory import DynamicsConfig
from stablernn.fields import allows_none, check_fields, help_of, literal_choices, option
from stablernn.lsc.config import FAMILIES, LSCConfig
from stablernn.models import CELL_KINDS, CONDITIONS, ModelConfig
from stablernn.snn import conditions as snn_conditions
from stablernn.snn import design as snn_design
from stablernn.snn.design import DesignConfig
from stablernn.surrogate import ALIASES, SHAPES, AliasName, ShapeName, names
from stablernn.train.config import RunConfig, TrainConfig

CONFIGS = [ModelConfig, DataConfig, TrainConfig, LSCConfig, DesignConfig, DynamicsConfig]
runner = CliRunner()


def _help(*argv: str) -> str:
    res = runner.invoke(app, [*argv, "-h"])
    assert res.exit_code == 0, res.output
    return res.output


def _commands(group, path: tuple[str, ...] = ()):
    """Every (path, command) of the CLI, groups included (Typer's click objects)."""
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))


ROOT = typer.main.get_command(app)
COMMANDS = list(_commands(ROOT))


# --- choices ------------------------------------------------------------------------------------------------------
def test_train_help_lists_the_choices_of_every_literal_option():
    out = _help("train")
    expected = {"--cell": CELL_KINDS, "--reset": RESETS, "--surrogate": tuple(names()),
                "--activation": (*ACTIVATIONS, "sin", "cos", "linear"), "--init": ("glorot", "he", "orthogonal"),
                "--encoder": ("auto", "identity", "linear", "embedding"), "--optimizer": None,
                "--lsc-measure": ("radius", "norm", "probe")}
    for flag, choices in expected.items():
        spec = next(s for s in TRAIN_SPECS if s.flag == flag)
        assert spec.choices is not None
        if choices is not None:
            assert set(spec.choices) == set(choices), flag
        assert f"{flag} {choices_metavar(spec.choices)}" in out, flag
    # a tuple of choices names them in its description
    cond = " ".join(out.split("--conditions", 1)[1].split("--r-min", 1)[0].split())
    assert "from " + ", ".join(CONDITIONS) in cond


def test_every_literal_field_of_every_config_lists_its_choices_in_train_help():
    out = _help("train")
    for s in TRAIN_SPECS:
        if s.choices is not None and not s.is_tuple:
            assert choices_metavar(s.choices) in out, s.flag


def test_cli_choices_come_from_the_config_literals():
    for s in option_specs({"model": ModelConfig, "train": TrainConfig}):
        hint = typing.get_type_hints(ModelConfig if s.section == "model" else TrainConfig)[s.field]
        assert s.choices == literal_choices(hint)


# --- descriptions -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_field_has_a_one_line_help(cls):
    for f in dataclasses.fields(cls):
        text = help_of(f)
        assert text.strip() and "\n" not in text, f"{cls.__name__}.{f.name} has no help"


def test_train_help_describes_every_option_with_its_field_help():
    out = "".join(_help("train").split())  # compared without whitespace: --help wraps lines (also at hyphens)
    for s in TRAIN_SPECS:
        f = next(f for f in dataclasses.fields({"model": ModelConfig, "data": DataConfig, "train": TrainConfig,
                                                "lsc": LSCConfig}[s.section]) if f.name == s.field)
        assert s.help.startswith(help_of(f))
        assert "".join(help_of(f).split()) in out, s.flag
    assert "[model;default:lstm]" in out and "[lsc;default:radius]" in out


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_every_option_of_every_command_has_a_description(path):
    cmd = dict(COMMANDS)[path]
    for p in cmd.params:
        if p.name == "help":
            continue
        assert (getattr(p, "help", None) or "").strip(), f"{' '.join(path)}: {p.name} has no description"


def test_every_train_option_is_a_config_field():
    flags = {p.opts[0] for p in dict(COMMANDS)[("train",)].params if p.param_type_name == "option"}
    assert {s.flag for s in TRAIN_SPECS} <= flags
    n_fields = sum(len(dataclasses.fields(c)) for c in (ModelConfig, DataConfig, TrainConfig, LSCConfig))
    assert len(TRAIN_SPECS) == n_fields - 1  # lsc.target is --lsc


# --- -h everywhere --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [(), *(p for p, _ in COMMANDS)], ids=lambda p: " ".join(p) or "top")
def test_dash_h_works_on_every_command(path):
    out = _help(*path)
    assert out.startswith("Usage: ") and "-h, --help" in out


# --- command-line values --------------------------------------------------------------------------------------------
def test_command_line_values_become_typed_config_values():
    run = run_config_from_cli({"cell": "alif", "conditions": "III,tail", "surrogate": "q_pseudospike",
                               "rate_ramp": "0.1:0.5", "lsc_families": "time,depth", "lsc": "0.5"})
    assert run.model.conditions == ("III", "tail") and run.train.rate_ramp == (0.1, 0.5)
    assert run.lsc is not None and run.lsc.families == ("time", "depth") and run.lsc.target == 0.5
    spec = next(s for s in TRAIN_SPECS if s.flag == "--rate-ramp")
    with pytest.raises(ValueError, match="--rate-ramp expects values separated by ':'"):
        parse_value(spec, "a:b")


@pytest.mark.parametrize(("argv", "msg"), [
    (["--cell", "lsmt"], "unknown cell 'lsmt'; choose one of " + ", ".join(CELL_KINDS)),
    (["--cell", "alif", "--conditions", "III,V"], "unknown condition(s) ['V']; choose from "
     + ", ".join(CONDITIONS)),
    (["--lsc-families", "time,width"], "unknown LSC families ['width']"),
    (["--surrogate", "gauss"], "unknown surrogate 'gauss'; choose one of rectangular"),
])
def test_bad_choices_on_the_command_line_are_one_line_errors(argv, msg, tmp_path):
    res = runner.invoke(app, ["train", *argv, "--out-dir", str(tmp_path)])
    assert res.exit_code != 0 and isinstance(res.exception, ValueError)
    assert msg in str(res.exception) and "\n" not in str(res.exception)
    assert not any(tmp_path.iterdir())  # nothing written


# --- config validation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "kwargs", "error", "words"), [
    (ModelConfig, {"cell": "transformer"}, ValueError, ["cell", "'transformer'", *CELL_KINDS]),
    (ModelConfig, {"reset": "zero"}, ValueError, ["reset", *RESETS]),
    (ModelConfig, {"surrogate": "gauss"}, ValueError, ["surrogate", *names()]),
    (ModelConfig, {"activation": "gelu", "cell": "ffn"}, ValueError, ["activation", "relu", "sin", "linear"]),
    (ModelConfig, {"init": "xavier"}, ValueError, ["init", "glorot", "he", "orthogonal"]),
    (ModelConfig, {"cell": "lif", "conditions": ("I", "V")}, ValueError, ["condition(s)", "'V'", *CONDITIONS]),
    (ModelConfig, {"cell": "lif", "conditions": "III"}, ValueError, ["conditions", "list"]),
    (ModelConfig, {"width": 2.5}, ValueError, ["width", "integer"]),
    (ModelConfig, {"tail": 1.0}, ValueError, ["tail", "> 1"]),
    (DataConfig, {"layout": "cols"}, DataError, ["layout", "rows", "pixels"]),
    (DataConfig, {"batch_size": 0}, DataError, ["batch_size", ">= 1"]),
    (TrainConfig, {"optimizer": "lion"}, ValueError, ["optimizer", "adamw", "sgd"]),
    (TrainConfig, {"loss": "sum"}, ValueError, ["loss", "mean_logits", "last", "per_step"]),
    (TrainConfig, {"device": "gpu 0"}, ValueError, ["device", "cuda:N"]),
    (TrainConfig, {"rate_ramp": (0.6, 0.2)}, ValueError, ["rate-ramp", "START <= END"]),
    (TrainConfig, {"rate_ramp": ("a", "b")}, ValueError, ["rate-ramp", "START:END"]),
    (TrainConfig, {"rate_ramp": (0.2,)}, ValueError, ["rate-ramp", "START:END"]),
    (TrainConfig, {"lr": 0.0}, ValueError, ["lr", "positive"]),
    (LSCConfig, {"measure": "trace"}, ValueError, ["measure", "radius", "norm", "probe"]),
    (LSCConfig, {"rectangular": "crop"}, ValueError, ["rectangular", "subsample", "norm"]),
    (LSCConfig, {"target": "half"}, ValueError, ["target", "number", "auto", "unbalanced"]),
    (LSCConfig, {"target": -1.0}, ValueError, ["target", "positive"]),
    (LSCConfig, {"target": {"spatial": 1.0}}, ValueError, ["families", "'spatial'", *FAMILIES]),
    (DesignConfig, {"on_no_root": "ignore"}, ValueError, ["on_no_root", "raise", "clip"]),
    (DesignConfig, {"rate": 1.5}, ValueError, ["rate", "(0, 1)"]),
    (DynamicsConfig, {"features": "spikes"}, ValueError, ["features", "state", "output"]),
    (DynamicsConfig, {"memory": -1}, ValueError, ["memory", ">= 0"]),
    (RunConfig, {"model": {"cell": "gru"}}, ValueError, ["model", "ModelConfig"]),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_configs_validate_on_construction(cls, kwargs, error, words):
    with pytest.raises(error) as e:
        cls(**kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("cls", [*CONFIGS, RunConfig], ids=lambda c: c.__name__)
def test_defaults_are_valid_and_checked_again_after_replace(cls):
    cfg = cls()
    check_fields(cfg)
    field = {"ModelConfig": ("cell", "nope"), "DataConfig": ("layout", "nope"),
             "TrainConfig": ("schedule", "nope"), "LSCConfig": ("engine", "nope"),
             "DesignConfig": ("on_no_root", "nope"), "DynamicsConfig": ("features", "nope"),
             "RunConfig": ("name", "")}[cls.__name__]
    with pytest.raises(ValueError, match=field[0]):
        dataclasses.replace(cfg, **dict([field]))


def test_lsc_number_strings_and_dicts_stay_valid_targets():
    assert LSCConfig(target="0.8").target == "0.8"
    assert LSCConfig(target={"time": 0.7}).target == {"time": 0.7}
    assert LSCConfig(target="unbalanced").target == "unbalanced"


# --- one definition per set of choices ------------------------------------------------------------------------------
def test_each_set_of_choices_is_defined_once():
    assert snn_conditions.RESETS is RESETS
    assert snn_design.CONDITIONS is CONDITIONS
    assert tuple(SHAPES) == typing.get_args(ShapeName) and tuple(ALIASES) == typing.get_args(AliasName)
    assert literal_choices(typing.get_type_hints(ModelConfig)["surrogate"]) == tuple(names())
    assert literal_choices(typing.get_type_hints(DesignConfig)["shape"]) == tuple(names())


def test_allows_none_reads_optional_fields():
    hints = typing.get_type_hints(ModelConfig)
    assert allows_none(float | None) and allows_none(typing.Optional[int])  # noqa: UP045
    assert not allows_none(float) and not allows_none(hints["surrogate"])


def test_option_needs_a_one_line_help():
    with pytest.raises(ValueError, match="one non-empty line"):
        option(1, "")
    with pytest.raises(ValueError, match="one non-empty line"):
        option(1, "two\nlines")
    f = dataclasses.make_dataclass("C", [("x", int, option(3, "a count"))])
    assert help_of(dataclasses.fields(f)[0]) == "a count" and f().x == 3


def test_fields_module_is_public():
    assert stablernn.fields.option is option and "fields" in stablernn.__all__
