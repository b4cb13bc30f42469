"""Typed config fields: each field's one-line help text, and the construction-time checks every config runs.

The config dataclasses (``ModelConfig``, ``DataConfig``, ``TrainConfig``, ``LSCConfig``, ``DesignConfig``,
``DynamicsConfig``) declare their fields with :func:`option`, so the help lives next to the field and the command
line (``stablernn.cli.options``) shows the same words. Their ``__post_init__`` calls :func:`check_fields`, which
rejects a value outside a ``Literal``'s choices or of the wrong kind in one line naming the field and what is
allowed. Plain standard library only: every layer of the package imports this module.
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from typing import Any

HELP = "help"


def option(default: Any, help: str) -> Any:
    """A dataclass field with ``default`` and a one-line ``help`` (shown by ``--help`` and :func:`help_of`).

    Defaults must be immutable (numbers, strings, tuples, None), as for any dataclass field.
    """
    if not help or "\n" in help:
        raise ValueError(f"a field's help must be one non-empty line, got {help!r}")
    return dataclasses.field(default=default, metadata={HELP: help})


def help_of(f: dataclasses.Field) -> str:
    """The field's help text ('' when it was declared without :func:`option`)."""
    return str(f.metadata.get(HELP, ""))


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of every field of dataclass ``cls`` (string annotations evaluated)."""
    return _hints(cls)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _union_args(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def literal_choices(tp: Any) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` field, also through ``X | None`` and ``tuple[Literal[...], ...]``; None
    for any other type."""
    args = [a for a in _union_args(tp) if a is not type(None)]
    if len(args) != 1:
        return None
    tp = args[0]
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)
        if len(inner) == 2 and inner[1] is Ellipsis:
            return literal_choices(inner[0])
        return None
    if typing.get_origin(tp) is typing.Literal:
        return tuple(str(a) for a in typing.get_args(tp))
    return None


def allows_none(tp: Any) -> bool:
    """Whether the field's type is ``X | None``."""
    return type(None) in _union_args(tp)


def is_tuple_field(tp: Any) -> bool:
    """Whether the field holds a tuple (possibly ``| None``)."""
    return any(typing.get_origin(a) is tuple for a in _union_args(tp))


def _plural(name: str) -> str:
    return (name[:-3] + "y" if name.endswith("ies") else name[:-1] if name.endswith("s") else name) + "(s)"


def _kind_ok(tp: Any, value: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True  # other annotations (unions of several kinds, dicts, tensors): the config checks them itself


def _kind_name(tp: Any, plural: bool = False) -> str:
    if plural:
        return {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}.get(tp, str(tp))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def check_fields(obj: Any, error: type[ValueError] = ValueError, prefix: str = "") -> None:
    """Raise ``error`` (one line naming the field and the allowed values, the field's name after ``prefix``, e.g.
    ``"LSC "``) for a field of dataclass ``obj`` whose value is outside its ``Literal`` choices, or not of its plain
    kind (bool, int, float, str, each optionally ``| None``; tuples of them).
    """
    for f in dataclasses.fields(obj):
        tp = _hints(type(obj))[f.name]
        value = getattr(obj, f.name)
        args = _union_args(tp)
        if value is None:
            if type(None) not in args:
                raise error(f"{prefix}{f.name} must not be None")
            continue
        choices = literal_choices(tp)
        if choices is not None and is_tuple_field(tp):
            if isinstance(value, str) or not isinstance(value, (tuple, list)):
                raise error(f"{prefix}{f.name} must be a list of {', '.join(choices)}, got {value!r}")
            bad = sorted({str(v) for v in value} - set(choices))
            if bad:
                raise error(f"unknown {prefix}{_plural(f.name)} {bad}; choose from {', '.join(choices)}")
        elif choices is not None:
            if value not in choices:
                raise error(f"unknown {prefix}{f.name} {value!r}; choose one of {', '.join(choices)}")
        elif is_tuple_field(tp):
            inner = typing.get_args(next(a for a in args if typing.get_origin(a) is tuple))
            if not isinstance(value, (tuple, list)) or not all(_kind_ok(inner[0], v) for v in value):
                raise error(f"{prefix}{f.name} must be a list of {_kind_name(inner[0], plural=True)}, got {value!r}")
            if Ellipsis not in inner and len(value) != len(inner):
                raise error(f"{prefix}{f.name} must hold {len(inner)} values, got {value!r}")
        else:
            kinds = [a for a in args if a is not type(None)]
            if len(kinds) == 1 and not _kind_ok(kinds[0], value):
                raise error(f"{prefix}{f.name} must be {_kind_name(kinds[0])}, got {value!r}")


def require(ok: bool, message: str, error: type[ValueError] = ValueError) -> None:
    """Raise ``error(message)`` unless ``ok`` (the range checks of a config's ``__post_init__``)."""
    if not ok:
        raise error(message)


__all__ = ["allows_none", "check_fields", "field_types", "help_of", "is_tuple_field", "literal_choices", "option",
           "require"]
