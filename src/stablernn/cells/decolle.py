"""DECOLLE-style layers (Kaiser, Mostafa & Neftci 2020, "Synaptic plasticity dynamics for deep continuous local
learning (DECOLLE)", arXiv:1811.10766, §2): LIF layers that learn from a local loss only.

A :class:`DecolleCell` is a :class:`~stablernn.cells.spiking.LIFCell` whose *input* carries no gradient in training
mode, so no error travels from one layer down to the one below: each layer's weights learn from what reaches its own
output, i.e. from its local loss through a fixed random readout (``TrainConfig.local_loss``,
:func:`stablernn.train.losses.local_losses`) and, for the top layer, from the task loss. In eval mode (where LSC, the
diagnostics and the stability conditions take their Jacobians) it is exactly an LIF layer, so the depth transitions
they measure are the ones the forward pass has.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ..surrogate import SpikeFunction
from .spiking import LIFCell, LIFState, spiking_cell_sequence


class DecolleCell(LIFCell):
    """LIF layer with local learning (input detached in training mode); every LIF option applies."""

    local = True

    def forward(self, x: Tensor, state: LIFState) -> tuple[Tensor, LIFState]:
        return super().forward(x.detach() if self.training else x, state)

    def forward_sequence(self, x: Tensor, state: LIFState) -> tuple[Tensor, LIFState]:
        """All steps, ``x [B, T, input_size] -> (z [B, T, n], final state)``: LIF's fused path on the detached input
        (when the spike function allows it), else the step loop."""
        x = x.detach() if self.training else x
        if self.fast and isinstance(self.spike, SpikeFunction) and type(self)._step is LIFCell._step:
            return spiking_cell_sequence(self, x, state)
        return super().forward_sequence(x, state)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", local learning"


def is_local(cell: Any) -> bool:
    """Whether ``cell`` learns from a local loss only (its input is detached in training mode)."""
    return isinstance(cell, DecolleCell)


__all__ = ["DecolleCell", "is_local"]
