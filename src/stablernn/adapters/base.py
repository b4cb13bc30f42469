"""The view an adapter returns, and the registry that finds an adapter by a module's type (docs/your-model.md).

A view is a :class:`~stablernn.models.DeepRNN` whose cells, encoder and readout hold the *user's own* ``Parameter``
objects (and leak-constant tensors), so everything stablernn does to the view (LSC, training, a design) happens to
the user's module. View cells compute the library's step functionally from those tensors: the user's stateful
``forward`` is never called, so no state a library keeps on its modules is touched, and the library's spike
function (no vmap rule) is replaced by the stablernn alias of the same function.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells.base import output_size
from ..models import DeepRNN

# a layer builder: (the user's layer, the nn.Linear feeding it or None) -> list of view cells
LayerBuilder = Callable[[nn.Module, nn.Linear | None], list[nn.Module]]


@dataclass(frozen=True)
class LayerAdapter:
    """How to view one kind of library layer.

    ``key``: ``"package.ClassName"`` matched against the layer's type and its bases (``"torch.LSTM"``,
    ``"snntorch.RLeaky"``); ``takes_current``: the layer has no input weights of its own (a spiking neuron fed by
    the ``nn.Linear`` before it), else it maps inputs itself (``nn.LSTM``, Norse's ``LIFRecurrentCell``);
    ``library``: the pip name, for messages; ``dropout``: the dropout the layer applies before each of its view
    cells in training mode (``nn.LSTM(dropout=p)``), or None.
    """

    key: str
    build: LayerBuilder
    takes_current: bool
    library: str
    dropout: Callable[[nn.Module], list[float]] | None = None


_LAYERS: dict[str, LayerAdapter] = {}
_REFUSED: dict[str, str] = {}  # key -> why it is not supported and what to do


def register_layer(adapter: LayerAdapter) -> LayerAdapter:
    """Add (or replace) the adapter of one layer type."""
    _LAYERS[adapter.key] = adapter
    return adapter


def refuse_layer(key: str, reason: str) -> None:
    """Name a layer type that is recognised but not supported, with the reason (shown by :func:`adapt`)."""
    _REFUSED[key] = reason


def type_keys(module: Any) -> list[str]:
    """``"package.ClassName"`` of the module's type and of each base class."""
    return [f"{c.__module__.split('.')[0]}.{c.__name__}" for c in type(module).__mro__]


def find_layer(module: Any) -> LayerAdapter | None:
    for key in type_keys(module):
        if key in _LAYERS:
            return _LAYERS[key]
    return None


def refusal(module: Any) -> str | None:
    for key in type_keys(module):
        if key in _REFUSED:
            return _REFUSED[key]
    return None


# --- the view -----------------------------------------------------------------------------------------------------
class ModelView(DeepRNN):
    """A ``DeepRNN`` over a user's module: ``cells`` share its parameters, ``encoder`` / ``readout`` are its own
    ``nn.Linear`` s (or identity). ``layer_dropout[l]``: the dropout the user's model applies before layer ``l`` in
    training mode (``nn.LSTM(dropout=p)`` applies it between layers only). The user's module is ``view.source``
    (not a submodule, so the view's ``state_dict`` lists every shared tensor once)."""

    def __init__(self, source: nn.Module, cells: list[nn.Module], *, encoder: nn.Module | None = None,
                 readout: nn.Module | None = None, layer_dropout: list[float] | None = None, library: str = ""):
        in_size = encoder.in_features if isinstance(encoder, nn.Linear) else cells[0].input_size
        last = output_size(cells[-1])
        out_size = readout.out_features if isinstance(readout, nn.Linear) else last
        if isinstance(readout, nn.Linear) and readout.in_features != last:
            raise ValueError(f"the readout {readout} takes {readout.in_features} features but the last recurrent "
                             f"layer outputs {last}")
        with torch.random.fork_rng(devices=[]):  # DeepRNN draws a readout we replace: leave the user's RNG alone
            super().__init__(cells, input_size=in_size, output_size=out_size,
                             encoder=encoder if encoder is not None else "identity")
        self.readout = readout if readout is not None else nn.Identity()
        self.layer_dropout = [float(p) for p in (layer_dropout or [0.0] * len(cells))]
        self.library = library
        self.__dict__["source"] = source

    def layer_input(self, l: int, inp: Tensor) -> Tensor:
        p = self.layer_dropout[l]
        return F.dropout(inp, p, self.training) if p > 0 else inp

    def extra_repr(self) -> str:
        return f"view of {type(self.source).__name__} ({self.library})"


def leak_constants(view: nn.Module) -> dict[str, Tensor]:
    """Tensors of the view's ``state_dict`` that are *not* in its source module's ``state_dict`` (e.g. Norse's
    ``p.tau_mem_inv``, which LSC rescales): save them next to the user's state dict to keep a pre-training whole.
    Keys are the view's names; values are detached clones."""
    source = getattr(view, "source", None)
    if source is None:
        return {}
    known = {t.data_ptr() for t in source.state_dict().values()}
    return {k: v.detach().clone() for k, v in view.state_dict().items()
            if v.data_ptr() not in known and k.split(".")[-1] in LEAK_NAMES}


# the leak tensors the adapters register on view cells (``leak_constants`` reports those outside the source)
LEAK_NAMES = ("tau_mem_inv", "tau_syn_inv")


def private_tensor(t: Any, seen: set[int]) -> Tensor:
    """``t`` as a tensor no other layer of this adaptation uses: ``t`` itself the first time, a clone when another
    layer already holds the same tensor object (rescaling one layer's time constant in place must not move
    another's). Records it in ``seen``."""
    out = t if isinstance(t, Tensor) and t.data_ptr() not in seen else torch.as_tensor(t).detach().clone()
    seen.add(out.data_ptr())
    return out


def owned_tensor(module: nn.Module, name: str, t: Any) -> Tensor:
    """A tensor for ``module``'s constant ``name`` that this module alone holds: ``t`` if an earlier adaptation of
    the same module already made it, else a clone (library defaults such as Norse's ``LIFParameters()`` fields are
    one tensor object shared by every instance, so they must never be changed in place)."""
    owned = module.__dict__.setdefault("_stablernn_owned", {})
    if isinstance(t, Tensor) and owned.get(name) is t:
        return t
    owned[name] = torch.as_tensor(t).detach().clone()
    return owned[name]


def zeros(ref: Tensor, batch_size: int, width: int, device: Any, dtype: Any) -> Tensor:
    """``[batch, width]`` zeros on the device / dtype given, else those of ``ref``."""
    return torch.zeros(batch_size, width, device=device if device is not None else ref.device,
                       dtype=dtype if dtype is not None else ref.dtype)


__all__ = ["LEAK_NAMES", "LayerAdapter", "ModelView", "find_layer", "leak_constants", "owned_tensor", "private_tensor",
           "refusal", "refuse_layer", "register_layer", "type_keys"]
