"""snnTorch ``Leaky``, ``RLeaky``, ``Synaptic``, ``RSynaptic`` (each fed by the ``nn.Linear`` before it), computed
from snnTorch 1.0's update equations (snntorch/_neurons/*.py, ``reset_delay=True``, the default) on the module's
own tensors:

    reset = H(mem - ϑ) (detached)                       (from the previous membrane, as snnTorch's ``mem_reset``)
    syn'  = α syn + I [+ rec(spk)]                      (Synaptic / RSynaptic)
    mem'  = β mem + (syn' | I [+ rec(spk)]) - reset ϑ    reset_mechanism="subtract"
    spk'  = H(mem' - ϑ) with the surrogate gradient

α, β are clamped to [0, 1] as snnTorch does. The state snnTorch keeps on the module (``mem``, ``spk``, ``syn``) is
never read or written. β (and α) are the time constants LSC rescales: τ → m·τ is β → β^(1/m), in place on the
module's own buffer (or Parameter), so the user's model sees it and LSC's snapshot (the view's ``state_dict``, in
which the neuron module is a child) includes it.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells.base import MIN_TIME_CONSTANT, check_input
from ..surrogate import SpikeFunction, check_vmappable, get
from .base import LayerAdapter, private_tensor, register_layer, zeros

SNNTORCH_NEURONS = ("Leaky", "RLeaky", "Synaptic", "RSynaptic")
_RESETS = {0: "subtract", 1: "zero", 2: "none"}
# δ at the shortest time constant a rescaling leaves (stablernn.cells.base.MIN_TIME_CONSTANT)
_MIN_DECAY = math.exp(-1.0 / MIN_TIME_CONSTANT)


class SnnState(NamedTuple):
    mem: Tensor  # membrane [B, n]
    syn: Tensor  # synaptic current [B, n] (zeros and unused for Leaky / RLeaky)
    spk: Tensor  # spikes of the last step [B, n]


def spike_alias(fn: Any) -> Any:
    """The stablernn spike function that computes snnTorch's ``spike_grad`` exactly (forward ``H(x) = 1[x > 0]``,
    same backward): ``surrogate.atan(alpha)`` -> ``snntorch_atan``, ``fast_sigmoid(slope)`` ->
    ``snntorch_fast_sigmoid``, ``sigmoid(slope)`` -> ``snntorch_sigmoid``; a function that already runs under
    ``vmap`` is kept; anything else raises ``TypeError`` naming the aliases."""
    if isinstance(fn, SpikeFunction):
        return fn
    if isinstance(fn, DesignedSpike):
        return fn.spike
    qual = getattr(fn, "__qualname__", "")
    if getattr(fn, "__module__", "").startswith("snntorch") and qual.endswith("<locals>.inner"):
        maker = qual.split(".")[0]
        params = inspect.getclosurevars(fn).nonlocals
        table = {"atan": ("snntorch_atan", "alpha"), "fast_sigmoid": ("snntorch_fast_sigmoid", "slope"),
                 "sigmoid": ("snntorch_sigmoid", "slope")}
        if maker in table and table[maker][1] in params:
            name, param = table[maker]
            return get(name, alpha=float(params[param]))
    check_vmappable(fn, "snnTorch spike_grad")
    return fn


class DesignedSpike:
    """A stablernn spike function handed to snnTorch as its ``spike_grad`` (a plain callable, so snnTorch does not
    register it as a submodule). Forward ``H(x)``, backward the designed surrogate."""

    def __init__(self, spike: Any):
        self.spike = spike

    def __call__(self, x: Tensor) -> Tensor:
        return self.spike(x)

    def __repr__(self) -> str:
        return f"DesignedSpike({self.spike!r})"


class SnnTorchCell(nn.Module):
    """A ``Linear -> snnTorch neuron`` pair as a stablernn cell; ``fc`` and ``neuron`` are the user's modules.

    Stability state: ``mem`` (``[syn, mem]`` for Synaptic kinds); output: the spikes.
    """

    adaptive = False  # snnTorch's neurons have no threshold adaptation (what the conditions read)

    def __init__(self, neuron: nn.Module, fc: nn.Linear | None, hidden_size: int):
        super().__init__()
        self.kind = next(k for k in SNNTORCH_NEURONS if k in {c.__name__ for c in type(neuron).__mro__})
        self.fc, self.neuron = fc, neuron
        self.input_size = fc.in_features if fc is not None else int(hidden_size)
        self.hidden_size = int(hidden_size)
        self.synaptic = self.kind in ("Synaptic", "RSynaptic")
        self.recurrent = self.kind in ("RLeaky", "RSynaptic")
        self.reset = _RESETS[int(neuron.reset_mechanism_val)]
        self.spike = spike_alias(neuron.spike_grad)
        self._built = True

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "spike" and self.__dict__.get("_built", False):
            # a spiking design replaced the spike function (stablernn.snn.design.Design.apply_): the user's neuron
            # uses it too. A plain wrapper, not a submodule: the user's state_dict keys stay as they were.
            self.neuron.spike_grad = DesignedSpike(value)

    # the LIF view the stability conditions read (stablernn.snn.design.is_spiking); weights are the user's
    @property
    def weight_ih(self) -> Tensor:
        if self.fc is None:
            return torch.eye(self.hidden_size, dtype=self.neuron.threshold.dtype)
        return self.fc.weight

    @property
    def weight_hh(self) -> Tensor:
        rec = getattr(self.neuron, "recurrent", None)
        if isinstance(rec, nn.Linear):
            return rec.weight
        return torch.diag(torch.as_tensor(self.neuron.V).expand(self.hidden_size))

    @property
    def bias(self) -> Tensor:
        """The input Linear's bias (the recurrent Linear's bias, a constant current too, is not included)."""
        return self.fc.bias if self.fc is not None and self.fc.bias is not None else torch.zeros(self.hidden_size)

    @property
    def threshold(self) -> Tensor:
        return self.neuron.threshold.expand(self.hidden_size)

    detach_reset = True  # snnTorch's mem_reset detaches the reset

    @property
    def decay(self) -> Tensor:
        return self.neuron.beta.clamp(0, 1).expand(self.hidden_size)

    @property
    def rec_mask(self) -> Tensor:
        return torch.ones(self.hidden_size, self.hidden_size)

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> SnnState:
        ref = self.fc.weight if self.fc is not None else self.neuron.threshold
        z = zeros(ref, batch_size, self.hidden_size, device, dtype)
        return SnnState(z, z, z)

    def _rec(self, spk: Tensor) -> Tensor:
        rec = self.neuron.recurrent
        if isinstance(rec, nn.Linear):
            return F.linear(spk, rec.weight, rec.bias)
        return spk * rec.V  # RecurrentOneToOne

    def forward(self, x: Tensor, state: SnnState) -> tuple[Tensor, SnnState]:
        check_input(self, x)
        n = self.neuron
        thr = n.threshold
        cur = self.fc(x) if self.fc is not None else x
        if self.recurrent:
            cur = cur + self._rec(state.spk)
        reset = (state.mem - thr > 0).to(state.mem.dtype)  # snnTorch's mem_reset: H of the old membrane, detached
        mem, syn = state.mem, state.syn
        if self.reset == "zero" and self.kind == "Leaky":
            mem = (1.0 - reset) * mem  # Leaky._base_zero resets before the update
        if self.synaptic:
            syn = n.alpha.clamp(0, 1) * syn + cur
            cur = syn
        mem = n.beta.clamp(0, 1) * mem + cur
        if self.reset == "subtract":
            mem = mem - reset * thr
        elif self.reset == "zero" and self.kind != "Leaky":
            mem = mem - reset * mem
        spk = self.spike(mem - thr)
        return spk, SnnState(mem, syn, spk)

    def output(self, state: SnnState) -> Tensor:
        return state.spk

    def stability_state(self, state: SnnState) -> Tensor:
        return torch.cat([state.syn, state.mem], -1) if self.synaptic else state.mem

    def with_stability_state(self, state: SnnState, s: Tensor) -> SnnState:
        if self.synaptic:
            syn, mem = s.split(self.hidden_size, -1)
        else:
            syn, mem = state.syn, s
        return SnnState(mem, syn, self.spike(mem - self.neuron.threshold))

    def make_private(self, seen: set[int]) -> None:
        """Give this neuron its own β (α) buffer when another layer shares the same tensor object, so rescaling
        one layer's time constants leaves the others alone (called once by :func:`~stablernn.adapters.adapt`)."""
        for name in ("beta", "alpha") if self.synaptic else ("beta",):
            t = getattr(self.neuron, name)
            if name in self.neuron._buffers:
                self.neuron._buffers[name] = private_tensor(t, seen)
            else:
                seen.add(t.data_ptr())

    @torch.no_grad()
    def scale_time_constants(self, m: float, target: float | None = None) -> None:
        """τ → m·τ: β → β^(1/m) (and α for Synaptic kinds), in place on the user's tensors; β stays within
        [0, 1] and no shorter than ``MIN_TIME_CONSTANT`` steps allows."""
        if not m > 0:
            raise ValueError(f"time-constant scale must be > 0, got {m}")
        for name in ("beta", "alpha") if self.synaptic else ("beta",):
            t = getattr(self.neuron, name)
            t.copy_(t.clamp(_MIN_DECAY, 1.0).pow(1.0 / m))

    def extra_repr(self) -> str:
        return f"snnTorch {self.kind}, {self.input_size}, {self.hidden_size}, reset={self.reset}"


def build_neuron(neuron: nn.Module, fc: nn.Linear | None) -> list[nn.Module]:
    name = type(neuron).__name__
    for attr, bad, why in (("reset_delay", False, "reset_delay=False (an immediate second reset)"),
                           ("inhibition", True, "inhibition=True"), ("init_hidden", True, "init_hidden=True")):
        if bool(getattr(neuron, attr, not bad)) == bad:
            raise ValueError(f"snnTorch {name}({why}) is not supported by the adapter; build it with the default "
                             f"or write a step function (docs/your-model.md, generic step protocol)")
    if getattr(neuron, "state_quant", False):
        raise ValueError(f"snnTorch {name}(state_quant=...) is not supported by the adapter (a quantised state "
                         f"has no useful Jacobian)")
    if float(torch.as_tensor(getattr(neuron, "graded_spikes_factor", 1.0)).max()) != 1.0:
        raise ValueError(f"snnTorch {name}(graded_spikes_factor != 1) is not supported by the adapter")
    if getattr(neuron, "surrogate_disable", False) or neuron.spike_grad == getattr(neuron, "_surrogate_bypass", None):
        raise ValueError(f"snnTorch {name}(surrogate_disable=True) has no surrogate gradient: LSC needs one")
    rec = getattr(neuron, "recurrent", None)
    if rec is not None and not isinstance(rec, nn.Linear) and not hasattr(rec, "V"):
        raise ValueError(f"snnTorch {name} with a {type(rec).__name__} recurrence is not supported (only "
                         f"all_to_all with linear_features, or one-to-one V)")
    if fc is not None:
        n = fc.out_features
    elif isinstance(rec, nn.Linear):
        n = rec.out_features
    else:
        raise ValueError(f"snnTorch {name} needs an nn.Linear before it (its input current) for the adapter to "
                         f"know its width")
    if isinstance(rec, nn.Linear) and rec.in_features != n:
        raise ValueError(f"snnTorch {name} has linear_features={rec.in_features} but its input Linear gives {n}")
    return [SnnTorchCell(neuron, fc, n)]


for _name in SNNTORCH_NEURONS:
    register_layer(LayerAdapter(f"snntorch.{_name}", build_neuron, takes_current=True, library="snntorch"))

__all__ = ["SnnTorchCell", "build_neuron", "spike_alias"]
