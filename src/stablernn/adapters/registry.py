"""Finding the layers of a user's module and building its view (:func:`adapt`, :func:`can_adapt`).

A module is read as a sequence: the module itself when it is a registered layer (``nn.LSTM``, ``snntorch.RLeaky``,
...), else its children in registration order (``nn.Sequential`` / ``nn.ModuleList`` and parameter-free
containers are flattened), which must be the order its ``forward`` uses them:

- ``nn.Linear`` then a neuron that takes a current (snnTorch, Norse ``LIFCell``): the Linear is that layer's input
  weights;
- ``nn.Linear`` before the first layer that maps its input itself (``nn.LSTM``, Norse ``LIFRecurrentCell``): the
  view's encoder;
- a last ``nn.Linear`` after the layers: the view's readout; ``nn.Dropout``: dropout before the next layer;
  ``nn.Identity`` and parameter-free activations are skipped.

Anything else raises ``ValueError`` naming the child and pointing to the generic step protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..cells.base import CellProtocol
from ..models import FFN, DeepRNN
from .base import LayerAdapter, ModelView, find_layer, refusal

# modules with no parameters that a user's model may hold between layers without changing the sequence
_SKIP = (nn.Identity, nn.Flatten)


@dataclass
class Plan:
    """What :func:`adapt` will build: ``layers`` as (adapter, layer, input Linear or None), encoder, readout and the
    dropout before each layer."""

    layers: list[tuple[LayerAdapter, nn.Module, nn.Linear | None]] = field(default_factory=list)
    encoder: nn.Linear | None = None
    readout: nn.Linear | None = None
    dropout: list[float] = field(default_factory=list)


def _items(module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    """The layer sequence of ``module`` (name, module), containers flattened."""
    if find_layer(module) is not None or refusal(module) is not None or isinstance(module, (nn.Linear, nn.Dropout)):
        return [(path or type(module).__name__, module)]
    own = [n for n, _ in module.named_parameters(recurse=False)]
    if own:
        raise ValueError(f"{path or type(module).__name__} ({type(module).__name__}) holds its own parameters "
                         f"{own} and is not a layer stablernn knows; describe its step with the generic step "
                         f"protocol: adapt(model, StepSpec(...)) (docs/your-model.md)")
    out: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        if isinstance(child, _SKIP):
            continue
        out.extend(_items(child, f"{path}.{name}" if path else name))
    return out


def plan(module: nn.Module) -> Plan:
    """Read ``module``'s layer sequence; raises ``ValueError`` naming what is not supported."""
    items = _items(module, "")
    p = Plan()
    pending_fc: tuple[str, nn.Linear] | None = None
    pending_drop = 0.0
    for name, m in items:
        if isinstance(m, nn.Linear):
            if pending_fc is not None:
                raise ValueError(f"two nn.Linear in a row ({pending_fc[0]}, {name}): the adapter reads the children in "
                                 f"the order they were assigned in __init__, which must be the order forward uses "
                                 f"them (fc1, lif1, fc2, lif2, ...); reorder the assignments, or use the generic "
                                 f"step protocol (docs/your-model.md)")
            pending_fc = (name, m)
            continue
        if isinstance(m, nn.Dropout):
            pending_drop = float(m.p)
            continue
        ad = find_layer(m)
        if ad is None:
            why = refusal(m)
            if why is not None:
                raise ValueError(f"{name}: {why}")
            if not any(True for _ in m.parameters()):
                continue  # a parameter-free activation / pooling between layers: nothing to adapt
            raise ValueError(f"{name} ({type(m).__name__}) is not a layer stablernn knows (torch.nn RNNs, snnTorch "
                             f"Leaky/RLeaky/Synaptic/RSynaptic, Norse LIFRecurrentCell/LSNNRecurrentCell/LIFCell); "
                             f"describe its step with the generic step protocol: adapt(model, StepSpec(...)) "
                             f"(docs/your-model.md)")
        fc = None
        if pending_fc is not None:
            if ad.takes_current:
                fc = pending_fc[1]
            elif not p.layers and p.encoder is None:
                p.encoder = pending_fc[1]
            else:
                raise ValueError(f"{pending_fc[0]} (nn.Linear) sits between two recurrent layers before "
                                 f"{name} ({type(m).__name__}), which maps its input itself; the adapter does not "
                                 f"support that; use the generic step protocol (docs/your-model.md)")
            pending_fc = None
        p.layers.append((ad, m, fc))
        p.dropout.append(pending_drop)
        pending_drop = 0.0
    if not p.layers:
        raise ValueError(f"{type(module).__name__} has no recurrent or spiking layer stablernn knows; describe its "
                         f"step with the generic step protocol: adapt(model, StepSpec(...)) (docs/your-model.md)")
    if pending_fc is not None:
        p.readout = pending_fc[1]
    return p


def build(module: nn.Module, p: Plan) -> ModelView:
    """The view of ``module`` from its :class:`Plan`."""
    cells: list[nn.Module] = []
    dropout: list[float] = []
    for (ad, layer, fc), drop in zip(p.layers, p.dropout, strict=True):
        new = ad.build(layer, fc)
        per = ad.dropout(layer) if ad.dropout is not None else [0.0] * len(new)
        per[0] = max(per[0], drop)
        cells.extend(new)
        dropout.extend(per)
    seen: set[int] = set()
    for c in cells:
        if callable(getattr(c, "make_private", None)):
            c.make_private(seen)
    libraries = sorted({ad.library for ad, _, _ in p.layers})
    return ModelView(module, cells, encoder=p.encoder, readout=p.readout, layer_dropout=dropout,
                     library=", ".join(libraries))




def is_stablernn_model(module: Any) -> bool:
    """A stablernn stack, cell, ``FFN`` or a view already: nothing to adapt (what ``stablernn.models.as_stack``
    takes without an adapter)."""
    return isinstance(module, (ModelView, DeepRNN, FFN, CellProtocol))


__all__ = ["Plan", "build", "is_stablernn_model", "plan"]
