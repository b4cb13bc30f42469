"""Every field of the config dataclasses as a command-line option, generated from the dataclasses themselves so
the CLI never drifts from the configs: the field's help text (``stablernn.fields.option``) is the option's
description, and a ``Literal`` field's choices are the option's choices (listed by ``--help``, checked on parsing).

Options default to "not given" (None); given ones override a ``--config`` file, which overrides the dataclass
defaults. A field whose name appears in several sections gets the section as prefix (``--data-seed``), except where
a section is listed as the owner of the short name.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import typer

from ..fields import allows_none, field_types, help_of, is_tuple_field, literal_choices
from ..train.config import RunConfig, dataclass_from_dict, load_config_file


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One command-line option made from one config field."""

    section: str  # model | data | train | lsc
    field: str
    param: str  # python identifier of the option
    flag: str  # --kebab-name
    kind: type  # what the command line parses: str | int | float | bool
    default: Any
    choices: tuple[str, ...] | None  # a Literal's values (each element's, for a tuple of Literal)
    help: str
    is_tuple: bool = False  # given as "a:b" or "a,b"
    element: type = str  # type of a tuple's elements
    number_or_name: bool = False  # a ``float | str`` field such as an LSC target ("auto" or 0.5)
    number_or_none: type | None = None  # int / float of an ``int | None`` / ``float | None`` field ("none": None)


def _kind(tp: Any) -> type:
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) is not None else [tp]
    if _number_or_none(tp) is not None:
        return str  # "none" or a number, parsed by parse_value
    if len(args) == 1 and args[0] in (int, float, bool, str):
        return args[0]
    return str  # Literals, tuples ("a:b" or "a,b") and unions such as float | str (parsed by parse_value)


def _number_or_none(tp: Any) -> type | None:
    """``int`` / ``float`` for an ``int | None`` / ``float | None`` field, else None."""
    args = typing.get_args(tp)
    rest = [a for a in args if a is not type(None)]
    return rest[0] if allows_none(tp) and len(rest) == 1 and rest[0] in (int, float) else None


def _element(tp: Any) -> type:
    for a in (tp, *typing.get_args(tp)):
        if typing.get_origin(a) is tuple:
            inner = typing.get_args(a)
            if inner and inner[0] in (int, float):
                return inner[0]
    return str


def _show(value: Any, sep: str = ":") -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return sep.join(map(str, value)) if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe(section: str, f: dataclasses.Field, tp: Any) -> str:
    """The option's help: the field's own help text, how to give a list, and the default (and the config-file
    section it belongs to)."""
    text = help_of(f)
    choices = literal_choices(tp)
    if is_tuple_field(tp):
        text += f" (comma-separated; from {', '.join(choices)})" if choices else " (values separated by ':' or ',')"
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    shown = "" if default is None else f"; default: {_show(default, ',' if choices else ':')}"
    return f"{text} [{section}{shown}]"


def option_specs(sections: dict[str, type], prefixed: dict[str, str] | None = None,
                 owners: dict[str, str] | None = None, skip: set[str] | None = None) -> list[OptionSpec]:
    """Options for the given ``{section: dataclass}``.

    ``prefixed``: ``{section: prefix}`` for sections whose fields always carry a prefix (e.g. ``lsc``).
    ``owners``: ``{field: section}`` that keeps the short name when several sections have the field.
    ``skip``: ``"section.field"`` entries that get no option.
    """
    prefixed, owners, skip = prefixed or {}, owners or {}, skip or set()
    counts: dict[str, int] = {}
    for section, cls in sections.items():
        if section in prefixed:
            continue
        for f in dataclasses.fields(cls):
            counts[f.name] = counts.get(f.name, 0) + 1
    specs = []
    for section, cls in sections.items():
        hints = field_types(cls)
        for f in dataclasses.fields(cls):
            if f"{section}.{f.name}" in skip:
                continue
            name = f.name
            if section in prefixed:
                name = f"{prefixed[section]}_{f.name}"
            elif counts.get(f.name, 0) > 1 and owners.get(f.name) != section:
                name = f"{section}_{f.name}"
            tp = hints[f.name]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
            args = typing.get_args(tp)
            specs.append(OptionSpec(section, f.name, name, "--" + name.replace("_", "-"), _kind(tp), default,
                                    literal_choices(tp), describe(section, f, tp), is_tuple=is_tuple_field(tp),
                                    element=_element(tp), number_or_name=float in args and str in args,
                                    number_or_none=_number_or_none(tp)))
    return specs


def choices_metavar(choices: typing.Iterable[str]) -> str:
    """How ``--help`` lists an option's choices: ``<a|b|c>``."""
    return "<" + "|".join(choices) + ">"


def choice_option(default: Any, flag: str, choices: Any, help: str) -> Any:
    """A hand-declared option whose value is one of the ``Literal`` ``choices`` (listed by ``--help``); the value
    is checked where it is used (by the config it goes into), so a wrong one is a one-line error."""
    return typer.Option(default, flag, help=help, metavar=choices_metavar(typing.get_args(choices)))


def with_options(specs: list[OptionSpec], extra: list[inspect.Parameter]) -> Callable[[Callable], Callable]:
    """Decorate a command ``fn(**kwargs)`` so Typer sees ``extra`` parameters plus one option per spec (a
    ``Literal`` field's choices are listed by ``--help`` and checked by :func:`parse_value`, so a wrong value is a
    one-line error; a bool field is a ``--x/--no-x`` flag)."""

    def deco(fn: Callable) -> Callable:
        params = list(extra)
        for s in specs:
            decls = [f"{s.flag}/--no-{s.flag[2:]}"] if s.kind is bool else [s.flag]
            metavar = choices_metavar(s.choices) if s.choices and not s.is_tuple else None
            if s.number_or_none is not None:
                metavar = f"<{'int' if s.number_or_none is int else 'number'}|none>"
            opt = typer.Option(None, *decls, help=s.help, show_default=False, metavar=metavar)
            params.append(inspect.Parameter(s.param, inspect.Parameter.KEYWORD_ONLY, default=opt,
                                            annotation=typing.Optional[s.kind]))  # noqa: UP045
        fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return fn

    return deco


def parse_value(spec: OptionSpec, value: Any) -> Any:
    """Turn a command-line value into the field's type (tuples from ``a:b`` or ``a,b``, numbers where the field
    allows). Choices are checked by the config the value goes into, in the same words as for a config file."""
    if spec.is_tuple and isinstance(value, str):
        parts = [p.strip() for p in value.replace(",", ":").split(":") if p.strip()]
        try:
            return tuple(spec.element(p) for p in parts)
        except ValueError:
            example = ":".join(map(str, spec.default)) if spec.default else "1:2"
            raise ValueError(f"{spec.flag} expects values separated by ':' like {example}, got {value!r}") from None
    if spec.number_or_none is not None and isinstance(value, str) and value.strip().lower() != "none":
        try:
            return spec.number_or_none(value)
        except ValueError:
            kind = "an integer" if spec.number_or_none is int else "a number"
            raise ValueError(f"{spec.flag} expects {kind} or none, got {value!r}") from None
    if spec.number_or_name and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def build_run_config(specs: list[OptionSpec], values: dict[str, Any], config_file: str | None,
                     name: str | None = None, out_dir: str | None = None) -> RunConfig:
    """A RunConfig from an optional file plus the options that were given."""
    run = load_config_file(config_file) if config_file else RunConfig()
    d = run.to_dict()
    for s in specs:
        v = values.get(s.param)
        if v is None:
            continue
        if s.section == "lsc" and d.get("lsc") is None:
            d["lsc"] = {}
        d[s.section][s.field] = parse_value(s, v)
    if name:
        d["name"] = name
    if out_dir:
        d["out_dir"] = out_dir
    return RunConfig.from_dict({k: v for k, v in d.items() if v is not None})


def section_from(specs: list[OptionSpec], values: dict[str, Any], section: str, cls: type,
                 base: dict[str, Any] | None = None) -> Any:
    """One config dataclass of ``section`` from given options (on top of ``base``)."""
    d = dict(base or {})
    for s in specs:
        if s.section == section and values.get(s.param) is not None:
            d[s.field] = parse_value(s, values[s.param])
    return dataclass_from_dict(cls, d, section)


def field_help(cls: type, name: str) -> str:
    """The help text of field ``name`` of config ``cls`` (for hand-declared options that mirror a config field)."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise KeyError(f"{cls.__name__} has no field {name!r}")
    return help_of(f)


def field_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of config ``cls``."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
