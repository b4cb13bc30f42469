"""Export a stablernn LIF network to NIR (Pedersen et al. 2024, "Neuromorphic intermediate representation",
Nat. Commun. 15:8122, arXiv:2311.14641), the graph format snnTorch, Norse, SpikingJelly and neuromorphic tool-chains
read.

NIR's ``LIF`` is continuous: ``τ dv/dt = (v_leak − v) + R I``, spike when ``v > v_threshold``, then ``v = v_reset``
(0). With one Euler step of length ``dt`` and ``R = τ/dt`` this is ``v ← (1 − dt/τ) v + I`` and a reset to zero in
the same step, which is stablernn's ``LIFCell(reset="mult_leak")`` exactly (``v[t] = δ v[t−1] (1 − z[t−1]) + i[t]``
keeps the membrane before the reset and zeroes it in the next step's leak term: the same spikes). So a layer exports
as ``Affine(W_ih, b) → LIF(τ = dt/(1 − δ), R = τ/dt, v_leak = 0, v_threshold = ϑ)`` with a ``Linear(W_hh)`` loop
for the recurrence, and the readout as a last ``Affine``. Layers with another reset, ALIF (NIR has no adaptive
threshold) and residual stacks are refused with the reason.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..cells.spiking import ALIFCell, LIFCell
from ..models import DeepRNN

# snnTorch's NIR import (snntorch/import_nir.py) and export assume this step length
DEFAULT_DT = 1e-4


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


def _check(model: Any) -> None:
    if not isinstance(model, DeepRNN):
        raise TypeError(f"export_nir needs a stablernn DeepRNN of LIFCell layers, got {type(model).__name__}")
    if model.residual:
        raise ValueError("export_nir: residual stacks are not supported (NIR edges would need a sum node)")
    for l, cell in enumerate(model.cells):
        if isinstance(cell, ALIFCell) or not isinstance(cell, LIFCell):
            raise ValueError(f"export_nir: layer {l} is {type(cell).__name__}; NIR has a LIF node but no adaptive "
                             f"threshold, so only LIFCell layers export")
        if cell.reset != "mult_leak":
            raise ValueError(f"export_nir: layer {l} has reset={cell.reset!r}; NIR's LIF resets the membrane to "
                             f"zero in the step it spikes, which is LIFCell(reset='mult_leak'); build with that")
    if not isinstance(model.encoder, (nn.Identity, nn.Linear)):
        raise ValueError(f"export_nir: the encoder must be identity or linear, got {type(model.encoder).__name__}")


def export_nir(model: DeepRNN, *, dt: float = DEFAULT_DT, resistance: str = "tau_over_dt") -> Any:
    """The NIR graph of a ``DeepRNN`` of ``LIFCell(reset="mult_leak")`` layers: ``input → [encoder] → per layer
    Affine(W_ih, b) → LIF ⟲ Linear(W_hh) → readout Affine → output``. Needs the ``nir`` package; returns a
    ``nir.NIRGraph`` (``nir.write(path, graph)`` saves it).

    ``dt``: the Euler step the time constants are expressed in (snnTorch's importer assumes 1e-4; pass the same to
    Norse's ``from_nir(graph, dt=...)``). ``resistance``: ``"tau_over_dt"`` writes ``R = τ/dt`` (what snnTorch's
    importer requires); ``"one"`` writes ``R = 1`` and folds ``τ/dt`` into the weights and bias feeding each LIF (the
    same system; Norse's importer ignores ``R``, so use this for Norse)."""
    if resistance not in ("tau_over_dt", "one"):
        raise ValueError(f"resistance must be 'tau_over_dt' or 'one', got {resistance!r}")
    import nir

    _check(model)
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array([model.input_size]))}
    edges: list[tuple[str, str]] = []
    prev = "input"
    if isinstance(model.encoder, nn.Linear):
        enc = model.encoder
        bias = _np(enc.bias) if enc.bias is not None else np.zeros(enc.out_features)
        nodes["encoder"] = nir.Affine(weight=_np(enc.weight), bias=bias)
        edges.append((prev, "encoder"))
        prev = "encoder"
    for l, cell in enumerate(model.cells):
        n = cell.hidden_size
        decay = _np(cell.decay)
        if np.any(decay >= 1.0):
            raise ValueError(f"export_nir: layer {l} has a decay of 1 (no leak); NIR's LIF needs a finite τ")
        tau = dt / (1.0 - decay)
        gain = np.ones(n) if resistance == "tau_over_dt" else tau / dt  # R I = (τ/dt) I either way
        r = tau / dt if resistance == "tau_over_dt" else np.ones(n)
        nodes[f"fc{l}"] = nir.Affine(weight=_np(cell.weight_ih) * gain[:, None], bias=_np(cell.bias) * gain)
        nodes[f"lif{l}.lif"] = nir.LIF(tau=tau, r=r, v_leak=np.zeros(n), v_threshold=_np(cell.threshold))
        edges += [(prev, f"fc{l}"), (f"fc{l}", f"lif{l}.lif")]
        if cell.recurrent:
            nodes[f"lif{l}.w_rec"] = nir.Linear(weight=_np(cell.recurrent_weight()) * gain[:, None])
            edges += [(f"lif{l}.lif", f"lif{l}.w_rec"), (f"lif{l}.w_rec", f"lif{l}.lif")]
        prev = f"lif{l}.lif"
    if model.readout is not None:
        r = model.readout
        nodes["readout"] = nir.Affine(weight=_np(r.weight), bias=_np(r.bias) if r.bias is not None
                                      else np.zeros(r.out_features))
        edges.append((prev, "readout"))
        prev = "readout"
        out_size = r.out_features
    else:
        raise ValueError("export_nir: a tied readout is not supported; use readout='linear'")
    nodes["output"] = nir.Output(output_type=np.array([out_size]))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges)


__all__ = ["DEFAULT_DT", "export_nir"]
