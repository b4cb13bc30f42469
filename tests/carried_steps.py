"""Transitions of a 2-layer net over a few time steps, states carried: how LSC's warm engine sees them (its bases
kept from one step to the next). Shared by the warm-engine accuracy tests."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from stablernn.lsc.config import FAMILIES
from stablernn.lsc.measures import Transition
from stablernn.lsc.transitions import rnn_transitions
from stablernn.models import ModelConfig, build_model, detach_states


def carried_transitions(kind: str, width: int, B: int = 4, steps: int = 4, families: Sequence[str] = FAMILIES
                        ) -> Iterator[tuple[int, list[Transition]]]:
    """``(t, transitions)`` for ``t < steps`` of a 2-layer ``kind`` net (seed 0, 8 inputs, 10 classes) on uniform
    inputs ``[B, steps, 8]``, built without gradient, each step from the detached states of the one before."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell=kind, layers=2, width=width), input_size=8, output_size=10,
                        seq_len=8).eval()
    x = torch.rand(B, steps, 8)
    states = model.initial_states(B)
    for t in range(steps):
        with torch.no_grad():
            res = rnn_transitions(model, x[:, t], states, families=families)
        yield t, list(res.transitions)
        states = detach_states(res.states)
