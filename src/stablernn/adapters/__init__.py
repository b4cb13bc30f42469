"""Bring your own model: views of ``torch.nn``, snnTorch and Norse networks (and, through the generic step
protocol, of any module) that LSC, the diagnostics and the spiking design accept (docs/your-model.md).

- :func:`adapt` (module) -> a :class:`ModelView` (a ``DeepRNN``) whose cells share the module's own parameters;
- :func:`can_adapt` (module) -> whether :func:`adapt` recognises it (without building anything);
- :class:`StepSpec`: the generic step protocol, for layers no adapter knows;
- :func:`leak_constants`: the view's time constants that are not in the module's ``state_dict`` (Norse ``p``).

Adapters for snnTorch and Norse read the libraries' modules by type name; neither library is imported here.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..models import register_stack_adapter
from . import norse as _norse  # noqa: F401  (registers the adapters)
from . import snntorch as _snntorch  # noqa: F401
from . import spikingjelly as _spikingjelly  # noqa: F401
from . import torch_nn as _torch_nn  # noqa: F401
from .base import LayerAdapter, ModelView, leak_constants, refuse_layer, register_layer
from .generic import StepCell, StepSpec
from .registry import build, is_stablernn_model, plan


def adapt(module: nn.Module, spec: StepSpec | None = None) -> nn.Module:
    """The stablernn view of a user's ``module``: a ``DeepRNN`` whose cells compute the module's step from its own
    ``Parameter`` objects (no copies), so LSC / training on the view changes the module in place and the module's
    own ``forward`` keeps working and agrees with the view.

    ``spec``: a :class:`StepSpec` for a module no adapter knows (also read from a ``stablernn_step`` attribute of
    the module). A stablernn model (``DeepRNN``, a cell, an ``FFN``, a view) is returned as is. Raises
    ``ValueError`` / ``TypeError`` naming what is not supported and what to do.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"adapt needs a torch.nn.Module, got {type(module).__name__}")
    spec = spec if spec is not None else getattr(module, "stablernn_step", None)
    if spec is not None:
        if not isinstance(spec, StepSpec):
            raise TypeError(f"the step spec must be a stablernn.adapters.StepSpec, got {type(spec).__name__}")
        readout = getattr(module, spec.readout) if spec.readout else None
        if readout is not None and not isinstance(readout, nn.Linear):
            raise TypeError(f"StepSpec.readout {spec.readout!r} must name an nn.Linear of the module, got "
                            f"{type(readout).__name__}")
        return ModelView(module, [StepCell(module, spec)], readout=readout, library="step protocol")
    if is_stablernn_model(module):
        return module
    return build(module, plan(module))


def can_adapt(module: Any) -> bool:
    """Whether :func:`adapt` would build a view of ``module`` (a known layer sequence or a ``stablernn_step``);
    False for stablernn's own models (they need no view) and for anything else. Builds nothing."""
    if not isinstance(module, nn.Module) or is_stablernn_model(module):
        return False
    if isinstance(getattr(module, "stablernn_step", None), StepSpec):
        return True
    try:
        plan(module)
    except ValueError:
        return False
    return True


__all__ = ["LayerAdapter", "ModelView", "StepSpec", "adapt", "can_adapt", "leak_constants", "refuse_layer",
           "register_layer"]

# as_stack (models.py, a lower layer) takes users' models through this, so LSC, the diagnostics and the dynamics
# accept them directly
register_stack_adapter(can_adapt, adapt)
