"""``--model module.path:factory``: the user's model from a Python callable (``stablernn pretrain / diagnose``)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from torch import nn


def load_factory_model(spec: str) -> nn.Module:
    """Import ``module.path`` and call ``factory()`` (no arguments); the current directory is importable, as for
    ``python -m``. Raises ``ValueError`` naming what is wrong (format, import, attribute, return type)."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"--model expects module.path:factory (a function returning your nn.Module), got {spec!r}")
    mod_name, fn_name = spec.split(":")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"--model {spec}: cannot import {mod_name!r} ({e}); run from the folder that holds it or "
                         f"add it to PYTHONPATH") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ValueError(f"--model {spec}: {mod_name} has no callable {fn_name!r}")
    model = fn()
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec}: {fn_name}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


__all__ = ["load_factory_model"]
