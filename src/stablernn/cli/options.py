"""Every field of the config dataclasses as a command-line option, generated from the dataclasses themselves so
the CLI never drifts from the configs.

Options default to "not given" (None); given ones override a ``--config`` file, which overrides the dataclass
defaults. A field whose name appears in several sections gets the section as prefix (``--data-seed``), except where
a section is listed as the owner of the short name.
"""
from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import typer

from ..train.config import RunConfig, dataclass_from_dict, load_config_file


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    section: str  # model | data | train | lsc
    field: str
    param: str  # python identifier of the option
    flag: str  # --kebab-name
    kind: type  # str | int | float | bool
    default: Any
    choices: tuple[str, ...] | None
    help: str
    number_or_name: bool = False  # a ``float | str`` field such as an LSC target ("auto" or 0.5)


def _field_kind(tp: Any) -> tuple[type, tuple[str, ...] | None]:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return str, tuple(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _field_kind(args[0])
        return str, None  # e.g. float | str: parsed later
    if origin is tuple:
        return str, None  # "a:b" or "a,b"
    if tp in (int, float, bool, str):
        return tp, None
    return str, None


def option_specs(sections: dict[str, type], prefixed: dict[str, str] | None = None,
                 owners: dict[str, str] | None = None, skip: set[str] | None = None) -> list[OptionSpec]:
    """Options for the given ``{section: dataclass}``.

    ``prefixed``: ``{section: prefix}`` for sections whose fields always carry a prefix (e.g. ``lsc``).
    ``owners``: ``{field: section}`` that keeps the short name when several sections have the field.
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
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f"{section}.{f.name}" in skip:
                continue
            name = f.name
            if section in prefixed:
                name = f"{prefixed[section]}_{f.name}"
            elif counts.get(f.name, 0) > 1 and owners.get(f.name) != section:
                name = f"{section}_{f.name}"
            kind, choices = _field_kind(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
            help_text = f"[{section}] default: {default!r}" + (f"; one of {', '.join(choices)}" if choices else "")
            args = typing.get_args(hints[f.name])
            specs.append(OptionSpec(section, f.name, name, "--" + name.replace("_", "-"), kind, default, choices,
                                    help_text, number_or_name=float in args and str in args))
    return specs


def with_options(specs: list[OptionSpec], extra: list[inspect.Parameter]) -> Callable[[Callable], Callable]:
    """Decorate a command ``fn(**kwargs)`` so Typer sees ``extra`` parameters plus one option per spec."""

    def deco(fn: Callable) -> Callable:
        params = list(extra)
        for s in specs:
            opt = typer.Option(None, s.flag, help=s.help, show_default=False,
                               rich_help_panel=f"{s.section} options")
            if s.kind is bool:
                opt = typer.Option(None, f"{s.flag}/--no-{s.flag[2:]}", help=s.help, show_default=False,
                                   rich_help_panel=f"{s.section} options")
            params.append(inspect.Parameter(s.param, inspect.Parameter.KEYWORD_ONLY, default=opt,
                                            annotation=typing.Optional[s.kind]))  # noqa: UP045
        fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return fn

    return deco


def parse_value(spec: OptionSpec, value: Any) -> Any:
    """Turn a command-line value into the field's type (tuples from ``a:b``, numbers where the field allows)."""
    if spec.choices is not None and str(value) not in spec.choices:
        raise ValueError(f"{spec.flag} must be one of {', '.join(spec.choices)}, got {value!r}")
    if isinstance(spec.default, tuple) and isinstance(value, str):
        parts = [p for p in value.replace(",", ":").split(":") if p]
        try:
            return tuple(type(spec.default[0])(p) if spec.default else p for p in parts)
        except ValueError:
            raise ValueError(f"{spec.flag} expects values separated by ':' like "
                             f"{':'.join(map(str, spec.default))}, got {value!r}") from None
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
    out = RunConfig.from_dict({k: v for k, v in d.items() if v is not None})
    return out


def section_from(specs: list[OptionSpec], values: dict[str, Any], section: str, cls: type,
                 base: dict[str, Any] | None = None) -> Any:
    """One config dataclass of ``section`` from given options (on top of ``base``)."""
    d = dict(base or {})
    for s in specs:
        if s.section == section and values.get(s.param) is not None:
            d[s.field] = parse_value(s, values[s.param])
    return dataclass_from_dict(cls, d, section)
